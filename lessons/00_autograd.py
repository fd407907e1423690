"""Lesson 00: reverse-mode automatic differentiation, the engine under every model in this course.

Run:  python lessons/00_autograd.py            (full: seconds on 2 CPU cores)
      python lessons/00_autograd.py --quick    (CI: seconds)     options: --seed N  --out DIR

Motivation
    Training a network means nudging millions of weights downhill on one number, the loss L. For that
    we need dL/dw for every weight w, at a cost close to one evaluation of L. Finite differences cost
    one evaluation per weight; writing derivatives out by hand does not survive the first change to
    the model. Reverse-mode autodiff (backpropagation; Rumelhart, Hinton & Williams 1986; Griewank &
    Walther 2008, ch. 3) gets all of them in one backward sweep costing a small multiple of the forward
    pass. PyTorch, JAX and tinyvision (tinyvision/tensor.py, ~250 lines) are all built on it.

The idea
    1. Record the computation as a graph while it runs. Each node is a Tensor holding its value, its
       parents, and a `backward` function with the op's LOCAL derivative:
           z = w * x      dz/dw = x,  dz/dx = w
           y = tanh(z)    dy/dz = 1 - y^2
    2. Seed dL/dL = 1 at the output. Visit the nodes in reverse topological order (every node after
       all the nodes that use it) and apply the chain rule: a node that knows g = dL/dnode passes
       g * dnode/dparent to each parent.
    3. A node used more than once receives one gradient per use, and its gradient is their SUM
       (multivariate chain rule: dL/da = sum over the uses u of a of dL/du * du/da). For
           b = a + a,   c = b * b = 4 a^2,   dc/da = 8a:
       dc/db = 2b = 4a arrives at `a` along each of the two edges of b = a + a; 4a + 4a = 8a is right,
       keeping only the last arrival gives 4a. The reverse topological order is what makes the sum
       safe: a node runs its backward only after every one of its users has reported.

What to look at
    Every sentence the lesson prints about a result is computed from that run's numbers.
    Section 1: the two gradient columns agree digit for digit; autodiff is the chain rule, mechanised.
    Section 2: the engine's 8a, and the 4a that "overwrite instead of add" would give. Calling
               backward() twice doubles .grad: leaves accumulate, so training loops zero them.
    Section 3: a correct backward agrees with finite differences to about 1e-10 or better in
               float64; a backward with one wrong symbol is off by O(1), and the checker names input,
               index, values.
    Section 4: the loss should start near ln 2 = 0.693 (a coin flip between two classes) and fall;
               on the curve look for shoulders where the network works out the next turn of the
               spiral. Figures in
               lessons/out/: 00_loss_curve.png (log scale) and 00_decision_boundary.png, where the
               ReLU network's piecewise-linear boundary winds between the two spiral arms.

Exercises
    1. Write softplus(x) = log(1 + e^x) as a custom op with Tensor.from_op (its derivative is
       sigmoid(x)), as `broken_tanh` is built in section 3, and gradcheck it. Then make it stable for
       x = 1000.
    2. In Tensor.backward (tinyvision/tensor.py) replace the sum `grads[key] + pg` by `pg`. Predict,
       then run: which sections notice, and by what factor is a.grad off in section 2? (Undo it.)
    3. Delete `model.zero_grad()` from the training loop. The loss curve changes; explain it with
       what section 2 showed about calling backward() twice.
    4. Set momentum to 0 (plain SGD). How many more steps reach the same accuracy? What learning rate
       makes plain SGD about as fast, and what happens at twice that?
"""
# %% Imports and the command line
from __future__ import annotations

import json
import textwrap

import numpy as np

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import nn

from _common import parse_args, pyplot, save_figure

args = parse_args(__doc__)


def rng_for(section: int) -> np.random.Generator:
    """One random stream per section, so editing one section never changes another's numbers."""
    return np.random.default_rng((args.seed, section))


def scalar(value: float) -> tv.Tensor:
    """A float64 leaf that wants a gradient (float64, so hand-computed values match to the last digit)."""
    return tv.Tensor(value, requires_grad=True, dtype=np.float64)


def show_graph(out: tv.Tensor, names: dict) -> None:
    """Print every node that leads to `out`, parents first: the order the forward pass ran in.

    The graph is nothing but each Tensor's `parents` and `op`. A recursive walk is fine for these
    few nodes; Tensor.backward uses an explicit stack so that a 10,000-op chain does not overflow.
    """
    seen = set()

    def visit(node):
        if id(node) in seen:
            return
        seen.add(id(node))
        for parent in node.parents:
            visit(parent)
        how = f"{node.op}({', '.join(names[id(p)] for p in node.parents)})" if node.op else "leaf"
        print(f"    {names[id(node)]:>3} = {node.item():+.4f}   {how}")

    visit(out)


# %% 1. One neuron by hand: y = tanh(w x + b)
print("== 1. one neuron, y = tanh(w*x + b): backward() against the chain rule by hand")
w, x, b = scalar(2.0), scalar(0.5), scalar(-0.3)
wx = w * x
z = wx + b
y = F.tanh(z)
print("  the graph the forward pass recorded:")
show_graph(y, {id(w): "w", id(x): "x", id(b): "b", id(wx): "wx", id(z): "z", id(y): "y"})

y.backward()  # dy/dy = 1, then each node's local derivative, in reverse order

# The same sweep written out: start at y, walk back, multiply local derivatives (chain rule).
dy_dz = 1 - y.item() ** 2          # tanh'(z) = 1 - tanh(z)^2
dy_dwx = dy_dz * 1.0               # z = wx + b: dz/dwx = 1
dy_db = dy_dz * 1.0                #             dz/db  = 1
dy_dw = dy_dwx * x.item()          # wx = w * x: dwx/dw = x
dy_dx = dy_dwx * w.item()          #             dwx/dx = w
print("  leaf   backward()     chain rule by hand")
hand_diff = 0.0
for name, leaf, by_hand in [("w", w, dy_dw), ("x", x, dy_dx), ("b", b, dy_db)]:
    print(f"  dy/d{name}  {leaf.grad.item():+.10f}  {by_hand:+.10f}")
    assert np.isclose(leaf.grad.item(), by_hand, rtol=1e-12), (name, leaf.grad, by_hand)
    hand_diff = max(hand_diff, abs(leaf.grad.item() - by_hand))
print(f"  they agree (largest difference {hand_diff:.1e}): autodiff is the chain rule, applied mechanically")


# %% 2. The reused-node trap: b = a + a, c = b * b
print("\n== 2. a node used twice: b = a + a, c = b * b = 4a^2, so dc/da = 8a")
a = scalar(3.0)
b = a + a        # a is used twice by this node...
c = b * b        # ...and b twice by this one (mul's backward returns one gradient per input)
c.backward()
dc_db = 2 * b.item()                      # = 4a, what reaches a along EACH edge of a + a
print(f"  a = {a.item()}:  engine dc/da = {a.grad.item()},  by hand 8a = {8 * a.item()}")
print(f"  dc/db = 2b = {dc_db} arrives twice at a; summed {dc_db} + {dc_db} = {2 * dc_db} (right),"
      f" overwritten {dc_db} (wrong by 2x)")
assert a.grad.item() == 8 * a.item()
first_grad = a.grad.item()
c.backward()     # same graph, second sweep: leaves ADD into .grad (like PyTorch)
if a.grad.item() == 2 * first_grad:
    print(f"  backward() again without zeroing: a.grad = {a.grad.item()} = {first_grad} + {first_grad} (accumulated);"
          " training loops call zero_grad() every step")
else:
    print(f"  backward() again without zeroing: a.grad = {a.grad.item()}, not {first_grad} + {first_grad}: this engine"
          " does not accumulate")


# %% 3. Gradient checking: trust, but verify every backward
print("\n== 3. gradcheck: backward() against central finite differences (float64)")
rng = rng_for(3)
n_points, n_in, n_hidden, n_classes = 4, 3, 5, 3
targets = rng.integers(0, n_classes, n_points)


def two_layer_loss(X, W1, b1, W2, b2):
    """Softmax cross-entropy of a 2-layer tanh network. X: (N, D_in) -> scalar loss."""
    h = F.tanh(X @ W1 + b1)                       # (N, hidden)
    return F.cross_entropy(h @ W2 + b2, targets)  # logits (N, classes)


inputs = [rng.standard_normal(shape) for shape in
          [(n_points, n_in), (n_in, n_hidden), (n_hidden,), (n_hidden, n_classes), (n_classes,)]]
gradcheck_error = tv.gradcheck(two_layer_loss, inputs, name="two_layer_loss")
n_numbers = sum(x.size for x in inputs)
print(f"  2-layer net, {n_numbers} input numbers, each nudged by +-1e-6: "
      f"largest |backward - finite difference| = {gradcheck_error:.1e}")


def broken_tanh(x):
    """tanh with a classic bug: its backward uses the INPUT where the formula needs the OUTPUT.

    Right: dy/dx = 1 - y^2 with y = tanh(x).   Written here: 1 - x^2.
    """
    y = np.tanh(x.data)
    return tv.Tensor.from_op(y, (x,), lambda g: (g * (1 - x.data ** 2),), "broken_tanh")


probe = np.array([[-2.0, -0.5, 0.1], [0.7, 1.5, 3.0]])  # away from 0, where 1 - x^2 ~ 1 - tanh(x)^2
print(f"  the real F.tanh passes: error {tv.gradcheck(F.tanh, [probe], name='tanh'):.1e}")
try:
    tv.gradcheck(broken_tanh, [probe], name="broken_tanh")
    broken_caught = False
    print("  broken_tanh PASSED gradcheck: this should not happen")
except tv.GradcheckError as error:
    broken_caught = True
    print("  broken_tanh is caught (values are d/dx of sum(c * f(x)), c a fixed random projection):")
    print(textwrap.fill(str(error), width=100, initial_indent="    ", subsequent_indent="    "))
assert broken_caught, "gradcheck missed a wrong backward"


# %% 4. Training: two interleaved spirals, a small MLP, SGD with momentum written by hand
def two_spirals(n: int, seed, turns: float = 1.5, noise: float = 0.05):
    """n points on two interleaved spiral arms in the unit disc; class k is arm k (alternating).

    Radius r ~ sqrt(U(0.02, 1)) so points spread evenly over the area; angle = 2 pi turns r + pi k,
    so the arms are 0.5/turns apart along a ray; plus N(0, noise^2) jitter in x and y.
    Returns X: (n, 2) float32, y: (n,) int64 labels in {0, 1}.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    r = np.sqrt(rng.uniform(0.02, 1.0, n))
    angle = 2 * np.pi * turns * r + np.pi * labels
    X = r[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1) + rng.normal(0, noise, (n, 2))
    return X.astype(np.float32), labels


n_train, steps, hidden = (200, 600, 64) if args.quick else (1000, 2000, 64)
lr, momentum = 0.05, 0.9
log_every = steps // 10

X_np, y_np = two_spirals(n_train, rng_for(4))
X = tv.Tensor(X_np)                    # (N, 2)
assert X.shape == (n_train, 2), f"expected X of shape (N, 2) = ({n_train}, 2), got {X.shape}"

model_rng = rng_for(5)
model = nn.Sequential(
    nn.Linear(2, hidden, seed=model_rng), nn.ReLU(),
    nn.Linear(hidden, hidden, seed=model_rng), nn.ReLU(),
    nn.Linear(hidden, 2, seed=model_rng),                 # logits, (N, 2)
)
params = model.parameters()
print(f"\n== 4. training: {n_train} spiral points, MLP 2 -> {hidden} -> {hidden} -> 2 "
      f"({model.num_parameters()} parameters), full batch, lr {lr}, momentum {momentum}, {steps} steps")


# The optimizer, by hand. This loop IS stochastic gradient descent with (heavy-ball) momentum,
#     v <- momentum * v + dL/dp,      p <- p - lr * v          (PyTorch's form; momentum 0 is plain SGD)
# tinyvision.optim.SGD(params, lr, momentum) packages exactly this, and AdamW a fancier v.
velocity = [np.zeros_like(p.data) for p in params]


def sgd_step():
    with tv.no_grad():  # an update is not part of the model: record no graph for it
        for p, v in zip(params, velocity):
            v *= momentum
            v += p.grad
            p.data -= lr * v


losses = []
print("   step   loss     accuracy")
for step in range(steps + 1):
    logits = model(X)
    loss = F.cross_entropy(logits, y_np)
    losses.append(loss.item())
    if step % log_every == 0:
        accuracy = float((logits.numpy().argmax(axis=1) == y_np).mean())
        print(f"  {step:5d}   {loss.item():.4f}   {accuracy:.3f}")
    if step == steps:
        break                          # the last forward pass only measures
    model.zero_grad()                  # .grad accumulates (section 2): clear last step's
    loss.backward()
    sgd_step()

with tv.no_grad():
    train_accuracy = float((model(X).numpy().argmax(axis=1) == y_np).mean())
print(f"  final train accuracy {train_accuracy:.3f}, loss {losses[-1]:.4f}")
coin_flip = np.log(2)   # the loss of p = 1/2 for both classes
start = (f"starts at {losses[0]:.4f}, "
         + (f"about ln 2 = {coin_flip:.4f} (a coin flip)" if abs(losses[0] - coin_flip) < 0.05
            else f"not near ln 2 = {coin_flip:.4f} (a coin flip)"))
end = f"falls to {losses[-1]:.4f}" if losses[-1] < losses[0] else f"does not fall: it ends at {losses[-1]:.4f}"
print(f"  the loss {start}, and {end} after {steps} steps")


# %% 5. Figures: decision boundary and loss curve
def plot_decision_boundary(path_name: str) -> None:
    plt = pyplot()
    lo, hi = X_np.min(axis=0) - 0.2, X_np.max(axis=0) + 0.2
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 250), np.linspace(lo[1], hi[1], 250))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)   # (250*250, 2)
    with tv.no_grad():
        p1 = F.softmax(model(tv.Tensor(grid)), axis=-1).numpy()[:, 1].reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.contourf(gx, gy, p1, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.6)
    ax.contour(gx, gy, p1, levels=[0.5], colors="k", linewidths=1.2)
    for k, color in [(0, "tab:blue"), (1, "tab:red")]:
        pts = X_np[y_np == k]
        ax.scatter(pts[:, 0], pts[:, 1], s=10, c=color, edgecolors="white", linewidths=0.3, label=f"class {k}")
    ax.set_title(f"p(class 1) and the 0.5 boundary after {steps} steps\ntrain accuracy {train_accuracy:.3f}")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    save_figure(fig, args.out, path_name)


def plot_loss_curve(path_name: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(losses, lw=1.2, label="train loss (full batch)")
    ax.axhline(np.log(2), color="gray", ls="--", lw=1, label="ln 2: guessing between 2 classes")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (log scale)")
    ax.set_title(f"SGD, lr {lr}, momentum {momentum}")
    ax.legend()
    save_figure(fig, args.out, path_name)


plot_decision_boundary("00_decision_boundary.png")
plot_loss_curve("00_loss_curve.png")


# %% Result
print("result: " + json.dumps({
    "lesson": "00_autograd",
    "quick": args.quick,
    "seed": args.seed,
    "train_accuracy": round(train_accuracy, 4),
    "final_loss": float(f"{losses[-1]:.4g}"),
    "steps": steps,
    "points": n_train,
    "parameters": model.num_parameters(),
    "gradcheck_max_error": float(f"{gradcheck_error:.3g}"),
    "broken_backward_caught": broken_caught,
}))
