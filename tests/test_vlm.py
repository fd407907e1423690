"""The vision-language model's parts against float64 formulas and the invariants a decoder must keep.

Cross-attention equals its NumPy formula; the language model is causal (no position's logits depend on
a later token); the loss sees only answer tokens; decoding with the KV cache gives the logits and the
tokens of a full recompute; every connector states its token count and produces it; the eye is read at
its second-to-last block, stays frozen through training, and the resamplers are gradient-checked.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyvision as tv
from tinyvision.gradcheck import gradcheck_module
from tinyvision.models.vit import ViT
from tinyvision.models.vlm import IGNORE, CausalLM, Connector, VisionLanguageModel, answer_targets
from tinyvision.nn import CrossAttention, KVCache


def f64(x):
    return tv.Tensor(np.asarray(x, dtype=np.float64), dtype=np.float64)


def lm(seed=0, **kw):
    kw = {"vocab_size": 11, "context_length": 16, "dim": 8, "depth": 2, "heads": 2, **kw}
    return CausalLM(seed=seed, **kw).astype(np.float64)


# --- cross-attention --------------------------------------------------------------------------------------
def cross_attention_formula(m, x, ctx):
    """softmax(q k^T / sqrt(d)) v per head, in float64 NumPy, from the module's weights."""
    W = {n: p.numpy().astype(np.float64) for n, p in m.named_parameters()}
    q = x @ W["q.weight"] + W["q.bias"]
    kv = ctx @ W["kv.weight"] + W["kv.bias"]
    k, v = kv[..., :m.dim], kv[..., m.dim:]
    b, nq, nk, h, d = x.shape[0], x.shape[1], ctx.shape[1], m.num_heads, m.head_dim
    q, k, v = (a.reshape(b, n, h, d).transpose(0, 2, 1, 3) for a, n in ((q, nq), (k, nk), (v, nk)))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = (p @ v).transpose(0, 2, 1, 3).reshape(b, nq, h * d)
    return o @ W["proj.weight"] + W["proj.bias"]


@settings(max_examples=15, deadline=None)
@given(nq=st.integers(1, 5), nk=st.integers(1, 7), heads=st.sampled_from([1, 2]), seed=st.integers(0, 99))
def test_cross_attention_equals_the_formula_in_float64(nq, nk, heads, seed):
    rng = np.random.default_rng(seed)
    m = CrossAttention(4, heads, context_dim=3, seed=seed).astype(np.float64)
    for p in m.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5
    x, ctx = rng.standard_normal((2, nq, 4)), rng.standard_normal((2, nk, 3))[:, ::-1]    # non-contiguous context
    with tv.no_grad():
        got = m(f64(x), f64(ctx)).numpy()
    np.testing.assert_allclose(got, cross_attention_formula(m, x, ctx), rtol=1e-10, atol=1e-12)


def test_cross_attention_gradients_check_and_bad_shapes_are_named():
    rng = np.random.default_rng(0)
    m = CrossAttention(4, 2, context_dim=3, seed=0).astype(np.float64)
    gradcheck_module(m, [rng.standard_normal((1, 2, 4)), rng.standard_normal((1, 3, 3))])
    with pytest.raises(ValueError, match=r"CrossAttention\(dim=4, context_dim=3\): context has shape \(1, 3, 4\), "
                                         r"expected \(1, Nk, 3\)"):
        m(f64(np.zeros((1, 2, 4))), f64(np.zeros((1, 3, 4))))


# --- the causal language model ------------------------------------------------------------------------------
@settings(max_examples=10, deadline=None)
@given(length=st.integers(2, 9), j=st.data(), seed=st.integers(0, 99))
def test_no_position_sees_a_later_token(length, j, seed):
    m, rng = lm(seed), np.random.default_rng(seed)
    ids = rng.integers(0, 11, (2, length))
    j = j.draw(st.integers(0, length - 1))
    changed = ids.copy()
    changed[:, j] = (changed[:, j] + 1) % 11
    with tv.no_grad():
        a, b = m(ids).numpy(), m(changed).numpy()
    np.testing.assert_array_equal(a[:, :j], b[:, :j])               # before j: bit for bit the same
    assert np.abs(a[:, j:] - b[:, j:]).max() > 1e-6                  # from j on: it matters


def test_a_prefix_is_seen_by_every_text_position():
    m, rng = lm(), np.random.default_rng(1)
    ids, prefix = rng.integers(0, 11, (1, 4)), rng.standard_normal((1, 3, 8))
    with tv.no_grad():
        a = m(ids, prefix=f64(prefix)).numpy()
        b = m(ids, prefix=f64(prefix + rng.standard_normal(prefix.shape))).numpy()   # random: a constant shift the LayerNorm removes
    assert a.shape == (1, 7, 11) and (np.abs(a - b).max(axis=-1) > 1e-6).all()


def test_answer_targets_shift_by_one_and_ignore_the_prompt_and_padding():
    ids = np.array([[5, 6, 7, 8, 9, 0],
                    [5, 6, 7, 8, 9, 4]])
    t = answer_targets(ids, np.array([3, 4]))
    assert t.tolist() == [[IGNORE, IGNORE, 8, 9, IGNORE, IGNORE],
                          [IGNORE, IGNORE, IGNORE, 9, 4, IGNORE]]
    with pytest.raises(ValueError, match=r"answer_targets: answer_start must be one int or one per row \(2,\)"):
        answer_targets(ids, np.array([3, 4, 5]))
    with pytest.raises(ValueError, match=r"answer_targets: ids must be a \(B, L\) integer array"):
        answer_targets(ids[0], 3)


def test_the_loss_sees_only_answer_tokens():
    # the loss equals the mean -log p of the answer tokens computed in float64 NumPy; and the logits of
    # every ignored position get exactly zero gradient (so changing an ignored target changes nothing)
    m, rng = lm(), np.random.default_rng(2)
    ids = rng.integers(1, 11, (2, 7))
    start = np.array([3, 5])
    targets = answer_targets(ids, start)
    logits = tv.Tensor(m(ids).numpy(), dtype=np.float64, requires_grad=True)
    loss = tv.ops.cross_entropy(logits, targets, ignore_index=IGNORE)
    loss.backward()
    z = logits.numpy()
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    keep = targets != IGNORE
    expected = -np.mean(logp[keep, targets[keep]])
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-12)
    assert not logits.grad[~keep].any() and np.abs(logits.grad[keep]).sum() > 0


@settings(max_examples=8, deadline=None)
@given(prompt=st.integers(1, 5), prefix=st.integers(0, 3), seed=st.integers(0, 99))
def test_the_kv_cache_gives_the_logits_of_a_full_recompute(prompt, prefix, seed):
    m, rng = lm(seed), np.random.default_rng(seed)
    ids = rng.integers(0, 11, (2, prompt + 4))
    pre = f64(rng.standard_normal((2, prefix, 8))) if prefix else None
    with tv.no_grad():
        full = m(ids, prefix=pre).numpy()
        cache = KVCache(2)
        parts = [m(ids[:, :prompt], prefix=pre, cache=cache).numpy()]
        for i in range(prompt, prompt + 4):                          # then one token at a time
            parts.append(m(ids[:, i:i + 1], cache=cache).numpy())
    assert cache.length == prefix + prompt + 4
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-10, atol=1e-12)


def test_greedy_decoding_with_and_without_the_cache_agree_and_stop():
    m, rng = lm(3, vocab_size=11), np.random.default_rng(3)
    for p in m.parameters():                                         # sharper logits: a meaningful argmax
        p.data[...] = p.data * 20
    ids = rng.integers(0, 11, (3, 3))
    fast = m.generate(ids, max_new=6)
    slow = m.generate(ids, max_new=6, use_cache=False)
    np.testing.assert_array_equal(fast, slow)
    stop = int(fast[0, 1])
    stopped = m.generate(ids, max_new=6, stop_id=stop)
    assert (stopped[0, 1:] == stop).all() and (stopped[:, :2] == fast[:, :2]).all()
    for row in range(3):                                             # rows that never produce it are untouched
        if stop not in fast[row]:
            np.testing.assert_array_equal(stopped[row], fast[row])
    sampled = m.generate(ids, max_new=4, temperature=1.0, rng=np.random.default_rng(0))
    again = m.generate(ids, max_new=4, temperature=1.0, rng=np.random.default_rng(0), use_cache=False)
    np.testing.assert_array_equal(sampled, again)


def test_bad_ids_prefixes_and_lengths_are_named():
    m = lm()
    with pytest.raises(ValueError, match=r"CausalLM: token ids must be in \[0, 11\), got 0..11"):
        m(np.array([[0, 11]]))
    with pytest.raises(ValueError, match=r"CausalLM: ids must be a \(B, L\) integer array"):
        m(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"CausalLM: prefix must be \(1, P, 8\), got shape \(1, 2, 5\)"):
        m(np.array([[1]]), prefix=f64(np.zeros((1, 2, 5))))
    with pytest.raises(ValueError, match="CausalLM: 0 cached \\+ 17 new positions exceed the context length 16"):
        m(np.zeros((1, 17), dtype=np.int64))
    with pytest.raises(ValueError, match="CausalLM.generate: sampling .* pass one"):
        m.generate(np.array([[1]]), temperature=1.0)


# --- connectors and the whole model ------------------------------------------------------------------------
@pytest.mark.parametrize("kind, k", [("linear", None), ("mlp", None), ("perceiver", 3), ("qformer", 2)])
def test_each_connector_states_its_token_count_and_produces_it(kind, k):
    c = Connector(kind, 6, 8, num_tokens=k, depth=2, heads=2, seed=0)
    for n in (1, 5, 9):
        out = c(tv.Tensor(np.random.default_rng(n).standard_normal((2, n, 6)).astype(np.float32)))
        assert out.shape == (2, c.num_tokens(n), 8) and c.num_tokens(n) == (n if k is None else k)


def test_the_mlp_connector_is_linear_gelu_linear():
    c = Connector("mlp", 3, 4, seed=0).astype(np.float64)
    x = np.random.default_rng(0).standard_normal((1, 2, 3))
    W = {n: p.numpy() for n, p in c.named_parameters()}
    h = x @ W["net.fc1.weight"] + W["net.fc1.bias"]
    from math import erf
    h = h * 0.5 * (1 + np.vectorize(erf)(h / np.sqrt(2)))
    with tv.no_grad():
        np.testing.assert_allclose(c(f64(x)).numpy(), h @ W["net.fc2.weight"] + W["net.fc2.bias"], rtol=1e-10)


def test_perceiver_latents_attend_to_themselves_and_qformer_queries_do_not_see_them_as_keys():
    # With a single patch token, a Q-Former's cross-attention has one key: its output is the same for
    # any query (softmax over one key is 1). A Perceiver's keys are [patch | latents], so moving one
    # latent changes the cross-attention output of the others.
    rng = np.random.default_rng(4)
    feats = f64(rng.standard_normal((1, 1, 6)))
    outs = {}
    for kind in ("perceiver", "qformer"):
        c = Connector(kind, 6, 8, num_tokens=3, depth=1, heads=2, seed=0).astype(np.float64)
        layer = c.layers[0]
        with tv.no_grad():
            def cross_out(latents):
                h = layer.norm_q(f64(latents))
                ctx = layer.norm_ctx(c.inp(feats) if kind == "perceiver" else feats)
                if kind == "perceiver":
                    ctx = tv.ops.concatenate([ctx, h], axis=1)
                return layer.cross(h, ctx).numpy()
            lat = c.latents.numpy()[None].astype(np.float64)
            moved = lat.copy()
            moved[0, 2] += rng.standard_normal(moved.shape[-1])         # not a constant: LayerNorm removes those
            outs[kind] = np.abs(cross_out(lat)[0, :2] - cross_out(moved)[0, :2]).max()
    assert outs["qformer"] < 1e-12 and outs["perceiver"] > 1e-6


@pytest.mark.parametrize("kind", ["perceiver", "qformer"])
def test_resamplers_gradient_check_on_tiny_sizes(kind):
    c = Connector(kind, 3, 4, num_tokens=2, depth=1, heads=2, seed=0).astype(np.float64)
    names = ["latents", "layers.0.cross.q.weight", "layers.0.cross.kv.weight", "out.weight"]
    if kind == "qformer":
        names.append("layers.0.attn_self.qkv.weight")
    gradcheck_module(c, [np.random.default_rng(0).standard_normal((1, 3, 3))], names=names)


def test_connector_settings_are_checked():
    with pytest.raises(ValueError, match="Connector: kind='perceiver' compresses the patches .* give num_tokens"):
        Connector("perceiver", 4, 4, seed=0)
    with pytest.raises(ValueError, match="Connector: kind='linear' keeps every patch token"):
        Connector("linear", 4, 4, num_tokens=3, seed=0)
    with pytest.raises(ValueError, match="Connector: kind must be one of"):
        Connector("bridge", 4, 4, seed=0)


def vlm(keep_cls=False, layer=-2, kind="mlp"):
    eye = ViT(img_size=8, patch_size=4, in_chans=3, embed_dim=6, depth=3, num_heads=2, num_classes=2,
              class_token=True, seed=0).astype(np.float64)
    return VisionLanguageModel(eye, Connector(kind, 6, 8, num_tokens=2 if kind == "qformer" else None, seed=1)
                               .astype(np.float64), lm(), layer=layer, keep_cls=keep_cls)


def test_the_eye_is_read_at_its_second_to_last_block_without_its_class_token():
    m = vlm()
    images = np.random.default_rng(0).random((2, 3, 8, 8))
    with tv.no_grad():
        every = m.eye(f64(images), return_all=True).tokens
    np.testing.assert_allclose(m.eye_features(f64(images)).numpy(), every[-2].numpy()[:, 1:], rtol=1e-12)
    np.testing.assert_allclose(vlm(keep_cls=True, layer=-1).eye_features(f64(images)).numpy(), every[-1].numpy(),
                               rtol=1e-12)


def test_the_eye_stays_frozen_while_the_rest_trains():
    m = vlm(kind="qformer")
    eye_before = {n: p.numpy().copy() for n, p in m.eye.named_parameters()}
    rest_before = {n: p.numpy().copy() for n, p in m.named_parameters()}
    assert not any(n.startswith("_eye") or n.startswith("eye") for n in rest_before)
    opt = tv.optim.AdamW(m.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    for _ in range(2):
        opt.zero_grad()
        loss = m.loss(rng.random((2, 3, 8, 8)), rng.integers(1, 11, (2, 6)), answer_start=3)
        loss.backward()
        opt.step()
    assert all(np.array_equal(p.numpy(), eye_before[n]) for n, p in m.eye.named_parameters())
    assert all(p.grad is None for p in m.eye.parameters())
    assert any(not np.array_equal(p.numpy(), rest_before[n]) for n, p in m.named_parameters())


def test_blank_images_and_answers_run_and_mismatched_parts_are_named():
    m = vlm()
    images = np.random.default_rng(0).random((2, 3, 8, 8))
    ids = np.array([[1, 2, 3], [1, 4, 3]])
    assert m.answer(images, ids, max_new=3).shape == (2, 3)
    np.testing.assert_array_equal(m.answer(images, ids, max_new=3), m.answer(images, ids, max_new=3, use_cache=False))
    with tv.no_grad():
        assert m(images, ids, blank=True).shape == (2, 3, 11)
    eye = ViT(img_size=8, patch_size=4, in_chans=3, embed_dim=6, depth=2, num_heads=2, class_token=False,
              global_pool="avg", seed=0)
    with pytest.raises(ValueError, match="VisionLanguageModel: the connector maps 5 -> 8, but the eye is 6 wide"):
        VisionLanguageModel(eye, Connector("linear", 5, 8, seed=0), lm())
    with pytest.raises(ValueError, match="VisionLanguageModel: keep_cls=True, but the eye has no class token"):
        VisionLanguageModel(eye, Connector("linear", 6, 8, seed=0), lm(), keep_cls=True)


# --- the question-answer data --------------------------------------------------------------------------
def test_every_answer_is_read_off_the_scene_it_asks_about():
    # the answers are checked against the pixels with read_object where one object is isolated,
    # and against the question's own words; held-out pairs never appear in a training scene
    from tinyvision.data import COLORS, read_object
    from tinyvision.data.vqa import QUESTION_KINDS, answer_vocabulary, vqa_pairs
    images, questions, answers, kinds = vqa_pairs(400, seed=0, held_out=[("green", "circle")])
    assert images.shape == (400, 3, 32, 32) and images.dtype == np.float32
    assert set(kinds) == set(QUESTION_KINDS)
    for image, q, a, k in zip(images, questions, answers, kinds):
        assert a in answer_vocabulary(k)
        if k == "tiny":                      # the tiny object's colour is one of the two colours in the picture
            colours = {tuple(image[:, i, j]) for i, j in zip(*np.nonzero(image.max(0)))}
            assert COLORS[a] in colours and len(colours) == 2
        if k == "shape":
            color = q.split()[4]
            mask = np.all(np.isclose(image.transpose(1, 2, 0), np.array(COLORS[color])), -1)
            solo = np.zeros_like(image)
            solo[:, mask] = image[:, mask]
            assert read_object(solo)["shape"] == a
    assert not any(q.startswith("is there a green circle") and a == "yes" for q, a in zip(questions, answers))
    _, q_test, a_test, _ = vqa_pairs(600, seed=1, split="test", held_out=[("green", "circle")], kinds=("presence",))
    assert ("is there a green circle ?", "yes") in set(zip(q_test, a_test))


def test_presence_negatives_follow_the_share_asked_for_and_bad_settings_are_named():
    from tinyvision.data.vqa import vqa_pairs
    for share in (0.2, 0.8):
        _, _, answers, _ = vqa_pairs(500, seed=2, kinds=("presence",), negatives=share)
        assert abs(np.mean([a == "no" for a in answers]) - share) < 0.07
    with pytest.raises(ValueError, match="vqa_pairs: kinds must be one of"):
        vqa_pairs(2, seed=0, kinds=("colour",))
    with pytest.raises(ValueError, match=r"vqa_pairs: held_out pairs must be \(colour in"):
        vqa_pairs(2, seed=0, held_out=[("mauve", "circle")])
    with pytest.raises(ValueError, match=r"vqa_pairs: held_out must be \(colour, shape\) pairs"):
        vqa_pairs(2, seed=0, held_out=("green", "circle"))
    with pytest.raises(ValueError, match="vqa_pairs: a digit .* needs canvas_size >= 32, got 24"):
        vqa_pairs(2, 24, seed=0, kinds=("digit",))
    with pytest.raises(TypeError, match="vqa_pairs: kinds must be a sequence"):
        vqa_pairs(2, seed=0, kinds="color")


def test_scene_captions_name_every_object_left_to_right_and_leave_held_out_pairs_out():
    from tinyvision.data import COLORS, read_object
    from tinyvision.data.vqa import scene_captions
    images, captions = scene_captions(150, seed=3, held_out=[("green", "circle")])
    assert images.shape == (150, 3, 32, 32) and len(captions) == 150
    for image, text in zip(images, captions):
        objects = [o.split() for o in text.split(" and ")]
        assert all(len(o) == 3 and o[0] == "a" for o in objects), text
        colours = [o[1] for o in objects]
        drawn = {tuple(image[:, i, j]) for i, j in zip(*np.nonzero(image.max(0)))}
        assert {tuple(np.float32(COLORS[c])) for c in colours} == drawn, text
        if len(set(colours)) == len(colours):        # each object alone: its shape, and the order by x
            xs = []
            for _, colour, shape in objects:
                mask = np.all(np.isclose(image.transpose(1, 2, 0), np.array(COLORS[colour])), -1)
                solo = np.zeros_like(image)
                solo[:, mask] = image[:, mask]
                assert read_object(solo)["shape"] == shape, text
                xs.append(np.nonzero(mask)[1].mean())
            assert xs == sorted(xs), text
    assert not any("green circle" in t for t in captions)
    _, test_captions = scene_captions(300, seed=4, held_out=[("green", "circle")], split="test")
    assert any("green circle" in t for t in test_captions)
    with pytest.raises(ValueError, match=r"scene_captions: held_out pairs must be \(colour in"):
        scene_captions(2, seed=0, held_out=[("mauve", "circle")])
    with pytest.raises(ValueError, match="scene_captions: n must be"):
        scene_captions(-1, seed=0)


def test_a_blank_loss_is_the_language_model_alone_and_leaves_the_connector_without_gradient():
    # blank=True zeroes the visual tokens: the loss is the LM's with a zero prefix of the same length, and
    # no gradient reaches the connector (the text stage of lesson 05b trains the LM on words alone)
    m = vlm()
    rng = np.random.default_rng(1)
    images, ids = rng.random((3, 3, 8, 8)), rng.integers(1, 11, (3, 6))
    loss = m.loss(images, ids, answer_start=2, blank=True)
    loss.backward()
    k = m.visual_tokens(images).shape[1]
    logits = m.lm(ids, prefix=f64(np.zeros((3, k, 8))))[:, k:].numpy()
    targets = answer_targets(ids, 2)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    keep = targets != IGNORE
    want = -np.mean(np.take_along_axis(logp, np.where(keep, targets, 0)[..., None], -1)[..., 0][keep])
    np.testing.assert_allclose(loss.item(), want, rtol=1e-12)
    assert all(p.grad is None or not np.any(p.grad) for p in m.connector.parameters())
    assert any(p.grad is not None and np.any(p.grad) for p in m.lm.parameters())
