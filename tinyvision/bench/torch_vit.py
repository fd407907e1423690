"""The ViT of the bench in PyTorch (timm's block structure), for the CPU comparison rows."""
from __future__ import annotations


def torch_vit(cfg):
    """The same ViT in PyTorch; None without torch."""
    try:
        import torch
        from torch import nn as tnn
    except ImportError:
        return None

    class Block(tnn.Module):
        def __init__(self, d, h):
            super().__init__()
            self.norm1, self.norm2 = tnn.LayerNorm(d, eps=1e-6), tnn.LayerNorm(d, eps=1e-6)
            self.qkv, self.proj, self.h = tnn.Linear(d, 3 * d), tnn.Linear(d, d), h
            self.fc1, self.fc2 = tnn.Linear(d, 4 * d), tnn.Linear(4 * d, d)

        def forward(self, x):
            b, n, d = x.shape
            q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
            return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))

    class ViT(tnn.Module):
        def __init__(self):
            super().__init__()
            d, p = cfg["embed_dim"], cfg["patch_size"]
            n = (cfg["img_size"] // p) ** 2
            self.patch = tnn.Conv2d(cfg["in_chans"], d, p, stride=p)
            self.cls = tnn.Parameter(torch.zeros(1, 1, d))
            self.pos = tnn.Parameter(torch.zeros(1, n + 1, d))
            self.blocks = tnn.Sequential(*[Block(d, cfg["num_heads"]) for _ in range(cfg["depth"])])
            self.norm, self.head = tnn.LayerNorm(d, eps=1e-6), tnn.Linear(d, cfg["num_classes"])

        def forward(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls.expand(len(x), -1, -1), t], 1) + self.pos
            return self.head(self.norm(self.blocks(t))[:, 0])
    return ViT()
