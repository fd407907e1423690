"""Using a joint image-text space: zero-shot classification and retrieval (no gradients needed).

Zero-shot classification (Radford et al. 2021, sec. 3.1.4; open_clip zero_shot_classifier): for each
class c, embed a few prompts ("a photo of a {c}", ...), L2-normalise each, average, re-normalise;
stack the class vectors as columns W (E, C). An image embedding x (unit length) is classified by
argmax_c x . W[:, c]: the nearest class description. Averaging prompts (prompt ensembling) cancels
what the templates add and keeps what the class word adds.

Retrieval recall@k: the fraction of queries with at least one relevant item among the k most
similar gallery items, image -> text (rows of the similarity matrix) and text -> image (columns).

All functions take NumPy arrays (or Tensors, read as arrays) and return NumPy arrays.
"""
from __future__ import annotations

import numpy as np

from ..checks import check_bool, check_int, check_number
from ..tensor import Tensor

__all__ = ["recall_at_k", "retrieval_report", "similarity_matrix", "zero_shot_predict", "zero_shot_weights"]


def _as_array(where: str, name: str, x, ndim: int) -> np.ndarray:
    a = x.numpy() if isinstance(x, Tensor) else np.asarray(x)
    if a.ndim != ndim:
        raise ValueError(f"{where}: {name} has shape {a.shape}; expected {ndim} axes")
    return a.astype(np.result_type(a.dtype, np.float32), copy=False)


def _normalize_rows(a: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """The NumPy twin of l2_normalize along the last axis."""
    return a / np.sqrt((a * a).sum(axis=-1, keepdims=True) + eps)


def zero_shot_weights(class_text_embeddings) -> np.ndarray:
    """(E, C) classifier from prompt templates ("a photo of a {}.", ...), as open_clip builds it.

    class_text_embeddings: a list of C arrays (or Tensors), class c's of shape (n_templates_c, E).
    Per class: normalise each template's embedding, average them, re-normalise (the mean of unit
    vectors is shorter than 1). Column c is class c's unit-length prototype.
    """
    if len(class_text_embeddings) == 0:
        raise ValueError("zero_shot_weights: got no classes; expected a list of (n_templates, E) arrays")
    columns, width = [], None
    for c, emb in enumerate(class_text_embeddings):
        a = _as_array("zero_shot_weights", f"class {c}'s embeddings", emb, 2)
        width = a.shape[1] if width is None else width
        if a.shape[0] == 0 or a.shape[1] != width:
            raise ValueError(f"zero_shot_weights: class {c}'s embeddings have shape {a.shape}; expected "
                             f"(n_templates >= 1, E = {width}), the width of class 0")
        columns.append(_normalize_rows(_normalize_rows(a).mean(axis=0)))   # (E,)
    return np.stack(columns, axis=1)


def zero_shot_predict(image_emb, weights, scale: float = 100.0, normalize: bool = True):
    """logits = scale * normalise(I) W, (N, C), and predictions argmax_c, (N,) (ties: lowest c).

    The scale (CLIP's fixed 100) does not change the predictions; it turns the cosines into
    logits whose softmax is a usable probability. It must be > 0: a negative scale would rank
    the classes backwards, and 0 would make every class tie.
    """
    scale = check_number("zero_shot_predict", "scale", scale, low=0.0, low_open=True)
    normalize = check_bool("zero_shot_predict", "normalize", normalize)
    image_emb = _as_array("zero_shot_predict", "image_emb", image_emb, 2)
    weights = _as_array("zero_shot_predict", "weights", weights, 2)
    if image_emb.shape[1] != weights.shape[0]:
        raise ValueError(f"zero_shot_predict: image_emb has shape {image_emb.shape} (N, E) and weights have shape "
                         f"{weights.shape}; expected weights (E, C) with E = {image_emb.shape[1]}")
    if normalize:
        image_emb = _normalize_rows(image_emb)
    logits = scale * (image_emb @ weights)
    return logits, logits.argmax(axis=1)


def similarity_matrix(image_emb, text_emb) -> np.ndarray:
    """Cosine similarities (N_image, N_text): both sides normalised, then I T^T."""
    image_emb = _as_array("similarity_matrix", "image_emb", image_emb, 2)
    text_emb = _as_array("similarity_matrix", "text_emb", text_emb, 2)
    if image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"similarity_matrix: image_emb has shape {image_emb.shape} and text_emb has shape "
                         f"{text_emb.shape}; expected the same width E")
    return _normalize_rows(image_emb) @ _normalize_rows(text_emb).T


def recall_at_k(similarity, relevant=None, ks=(1, 5, 10)) -> dict:
    """{k: fraction of queries with at least one relevant gallery item among their top k}.

    similarity: (Nq, Ng), row q scores every gallery item for query q. relevant: (Nq, Ng) bool, or
    None for the diagonal (query i matches gallery item i; needs Nq = Ng). Every query needs at
    least one relevant item.
    Ties are broken against the query: a relevant item ranks BEHIND every irrelevant item with an
    equal score (a stable sort on -similarity in which irrelevant items come first among equals).
    So the rank of the best relevant item is the number of irrelevant items scoring >= it, and a
    hit at k means that rank < k. A model that scores everything equal gets no credit, and the
    result does not depend on the gallery's order.
    """
    ks = _check_ks("recall_at_k", ks)
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2:
        raise ValueError(f"recall_at_k: similarity has shape {sim.shape}; expected (Nq, Ng)")
    if np.isnan(sim).any():
        raise ValueError("recall_at_k: similarity contains NaN, which has no rank")
    if relevant is None:
        if sim.shape[0] != sim.shape[1]:
            raise ValueError(f"recall_at_k: relevant=None means query i matches item i, which needs a square "
                             f"similarity; got shape {sim.shape}. Pass a (Nq, Ng) bool matrix instead")
        relevant = np.eye(sim.shape[0], dtype=bool)
    relevant = np.asarray(relevant)
    if relevant.shape != sim.shape or relevant.dtype != bool:
        raise ValueError(f"recall_at_k: relevant has shape {relevant.shape} and dtype {relevant.dtype}; expected "
                         f"bool of the similarity's shape {sim.shape}")
    missing = ~relevant.any(axis=1)
    if missing.any():
        raise ValueError(f"recall_at_k: {int(missing.sum())} queries (first: {int(np.argmax(missing))}) have no "
                         "relevant item, so their recall is undefined")
    best = np.where(relevant, sim, -np.inf).max(axis=1, keepdims=True)     # best relevant score per query
    rank = ((sim >= best) & ~relevant).sum(axis=1)                         # 0-based rank of that item
    return {k: float((rank < k).mean()) for k in ks}


def _check_ks(where: str, ks) -> list:
    """The cut-offs k as a list of ints >= 1."""
    if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__"):
        hint = f"; for one cut-off pass ({ks!r},)" if isinstance(ks, (int, np.integer)) else ""
        raise TypeError(f"{where}: ks must be a sequence of ints >= 1 such as (1, 5, 10), got {ks!r}{hint}")
    return [check_int(where, f"ks[{i}]", k, low=1) for i, k in enumerate(ks)]


def retrieval_report(similarity, relevant_i2t=None, ks=(1, 5, 10)) -> dict:
    """Recall@k both ways: {"image_to_text": {k: r}, "text_to_image": {k: r}}.

    similarity: (N_image, N_text); relevant_i2t: (N_image, N_text) bool (e.g. 5 captions per image),
    or None for one caption per image on the diagonal. Text->image queries are the columns, so it
    uses the transposes of both.
    """
    _check_ks("retrieval_report", ks)
    sim = np.asarray(similarity)
    rel = None if relevant_i2t is None else np.asarray(relevant_i2t)
    return {"image_to_text": recall_at_k(sim, rel, ks),
            "text_to_image": recall_at_k(sim.T, None if rel is None else rel.T, ks)}
