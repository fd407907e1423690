"""A word-level tokenizer, trained on the captions it will encode: text -> ids (B, L) for a text encoder.

A text encoder reads integers, not letters. The tokenizer cuts a caption into tokens, looks each
up in a vocabulary, and brackets the ids with a start and an end token, the way CLIP does
(Radford et al. 2021, sec. 2.4: "the text sequence is bracketed with [SOS] and [EOS] tokens and
the activations of the highest layer of the transformer at the [EOS] token are treated as the
feature representation of the text"):

    "A small red circle."  ->  <sot> a small red circle . <eot> <pad> <pad>  ->  1 5 9 4 8 17 2 0 0
                                                                       (the word ids depend on the vocabulary)

Why words and not byte pairs. Our captions come from a generator with a closed vocabulary of a
few dozen words ("a", "small", "red", "circle", "on", "the", "left", ...), so one id per word
covers every caption, and every id means something a learner can read. Byte-pair encoding
(Sennrich et al. 2016; CLIP's has 49,152 entries) starts from bytes and merges the most frequent
adjacent pairs into new tokens; it is what open text needs: any string encodes (no <unk>, since
every byte is a token), rare and new words split into known pieces ("circles" = "circle" + "s"),
and the vocabulary size is a choice rather than the number of distinct words. None of that is
needed when the words are known in advance.

Normalisation, applied before splitting (and the only text the round trip promises to give back):

    1. lowercase (str.lower);
    2. every whitespace character (space, tab, newline, no-break space, ...) separates words;
    3. invisible characters, the ones str.isprintable() rejects (control characters such as
       "\\x00", zero-width spaces, byte-order marks), are dropped;
    4. a word is a run of letters and digits, `[^\\W_]+` (Unicode-aware: "café" is one word);
       every other visible character ("." "," "!" "<" emoji) is a token on its own.

Visible non-ASCII characters are kept, not dropped: dropping the "é" would turn "café" into the
different word "caf"; kept, the word is simply not in a vocabulary trained on ASCII captions and
encodes as <unk>, so the loss is visible. Splitting "<" off as punctuation also means no text can
produce a special id: the text "<eot>" is the three tokens "<", "eot", ">".

Special tokens have fixed ids, the same in every vocabulary:

    PAD = 0 "<pad>"   fills a row after its end token; the text encoder never reads it
    SOT = 1 "<sot>"   start of text, first in every row
    EOT = 2 "<eot>"   end of text: the text encoder pools its output here
    UNK = 3 "<unk>"   any word the vocabulary lacks

Truncation keeps the end token. A caption longer than the context of L tokens loses words from
its end, never its EOT: `[SOT] + words[:L - 2] + [EOT]`. The encoder reads the caption out at the
EOT position; if truncation cut it, finding it with argmax(ids == EOT) would silently return 0,
the SOT position, and the model would train on a constant (open_clip issue #1151). `eot_index`
raises instead. (OpenAI's CLIP pools at ids.argmax(), which works because its EOT has the
highest id; here EOT = 2, so pooling must compare with eot_id.)
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np

from ..checks import check_choice, check_int, is_int

__all__ = ["EOT", "PAD", "SOT", "SPECIAL_TOKENS", "UNK", "Tokenizer", "eot_index", "normalize", "split_words"]

PAD, SOT, EOT, UNK = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<sot>", "<eot>", "<unk>")   # SPECIAL_TOKENS[PAD] == "<pad>", ...

_TOKEN = re.compile(r"[^\W_]+|\S")   # a run of letters / digits, or any one other visible character
_WORD = re.compile(r"[^\W_]+")


# --- normalisation -----------------------------------------------------------------------------
def _clean(text: str, who: str) -> str:
    """Steps 1-3 of the module docstring: lowercase, whitespace -> " ", invisible characters dropped."""
    if not isinstance(text, str):
        hint = " (decode bytes to str first)" if isinstance(text, (bytes, bytearray)) else ""
        raise TypeError(f"{who}: text must be a str, got {type(text).__name__}{hint}")
    return "".join(" " if ch.isspace() else ch if ch.isprintable() else "" for ch in text.lower())


def split_words(text: str) -> list[str]:
    """The tokens of a text: split_words("A red, RED circle!") == ["a", "red", ",", "red", "circle", "!"]."""
    return _TOKEN.findall(_clean(text, "split_words"))


def _join(words) -> str:
    """Words separated by spaces, punctuation attached to the word before it: ["a", "b", ".", "c"] -> "a b. c".

    Punctuation is a one-character token that is not a letter or digit; "<unk>" counts as a word.
    """
    out = []
    for w in words:
        if out and (len(w) > 1 or _WORD.fullmatch(w)):
            out.append(" ")
        out.append(w)
    return "".join(out)


def normalize(text: str) -> str:
    """The canonical form of a text: what decode(encode(text)) gives back when every word is known.

    normalize("  A small RED circle , on the\\tleft!") == "a small red circle, on the left!"
    """
    return _join(split_words(text))


# --- pooling position --------------------------------------------------------------------------
def eot_index(ids, eot_id: int = EOT) -> np.ndarray:
    """(B,) int64: the position of the first end token in each row of ids (B, L).

    Raises ValueError when a row has none, rather than returning 0 the way argmax of an
    all-False row does (open_clip #1151: the model would pool at the start token, silently).
    """
    eot_id = check_int("eot_index", "eot_id", eot_id)
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"eot_index: ids must be an integer array (B, L), got shape {ids.shape} dtype {ids.dtype}")
    is_eot = ids == eot_id
    missing = np.flatnonzero(~is_eot.any(axis=1))
    if missing.size:
        raise ValueError(f"eot_index: rows {missing.tolist()[:10]} of ids {ids.shape} have no end token (id {eot_id}); "
                         "pooling there would silently read position 0 (open_clip #1151). Encode with "
                         "Tokenizer.encode_batch, whose truncation keeps the end token")
    return is_eot.argmax(axis=1).astype(np.int64)


# --- the tokenizer -----------------------------------------------------------------------------
class Tokenizer:
    """Word-level tokenizer: vocab[i] is the token with id i; the first four are SPECIAL_TOKENS.

    Build one with Tokenizer.train(texts), or Tokenizer(vocab) from a saved list.
    """
    pad_id, sot_id, eot_id, unk_id = PAD, SOT, EOT, UNK

    def __init__(self, vocab):
        if isinstance(vocab, (str, bytes)) or not hasattr(vocab, "__iter__"):
            raise TypeError(f"Tokenizer: vocab must be a list of str, got {type(vocab).__name__}")
        vocab = [str(w) for w in vocab]
        if tuple(vocab[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"Tokenizer: vocab must start with {SPECIAL_TOKENS}, got {vocab[:len(SPECIAL_TOKENS)]}")
        words = vocab[len(SPECIAL_TOKENS):]
        repeated = sorted(w for w, c in Counter(vocab).items() if c > 1)
        if repeated:
            raise ValueError(f"Tokenizer: vocab holds {repeated[:10]} more than once")
        # Every word must be exactly one token of the splitter, or it could never be encoded.
        bad = [w for w in words if split_words(w) != [w]]
        if bad:
            raise ValueError(f"Tokenizer: {bad[:10]} are not single normalised tokens (see split_words)")
        self.vocab: list[str] = vocab
        self.token_to_id: dict[str, int] = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def train(cls, texts, min_count: int = 1) -> "Tokenizer":
        """Specials, then every token seen at least min_count times, most frequent first, ties alphabetical.

        The order depends on the counts alone, so the same texts in any order give the same ids.
        """
        texts = _as_texts(texts, "Tokenizer.train")
        min_count = check_int("Tokenizer.train", "min_count", min_count, low=1)
        counts = Counter(w for t in texts for w in split_words(t))
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(list(SPECIAL_TOKENS) + words)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, words={self.vocab[len(SPECIAL_TOKENS):][:8]}...)"

    # --- text -> ids ---------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """[SOT] + one id per token (UNK when not in the vocabulary) + [EOT]; "" gives [SOT, EOT]."""
        ids = [self.token_to_id.get(w, UNK) for w in _TOKEN.findall(_clean(text, "Tokenizer.encode"))]
        return [SOT, *ids, EOT]

    def encode_batch(self, texts, context_length: int, on_overflow: str = "truncate") -> np.ndarray:
        """ids (B, L) int64, L = context_length: each row encode(text), then PAD up to L.

        A row longer than L: on_overflow="truncate" keeps [SOT] + its first L - 2 words + [EOT], so
        every row holds exactly one EOT; on_overflow="error" raises ValueError naming the rows.
        """
        texts = _as_texts(texts, "Tokenizer.encode_batch")
        # ValueError even for a wrong type (check_int would raise TypeError): tests/test_tokenizer.py expects it.
        if not is_int(context_length) or context_length < 2:
            raise ValueError(f"Tokenizer.encode_batch: context_length must be an int >= 2 (room for the start and end "
                             f"tokens), got {context_length!r}")
        on_overflow = check_choice("Tokenizer.encode_batch", "on_overflow", on_overflow, ("truncate", "error"))
        L = int(context_length)
        rows = [self.encode(t) for t in texts]
        long = [i for i, r in enumerate(rows) if len(r) > L]
        if long and on_overflow == "error":
            raise ValueError(f"Tokenizer.encode_batch: texts {long[:10]} need {max(len(rows[i]) for i in long)} tokens "
                             f"with start and end, more than context_length={L}, e.g. {texts[long[0]]!r}")
        ids = np.full((len(rows), L), PAD, dtype=np.int64)
        for i, r in enumerate(rows):
            if len(r) > L:
                r = r[:L - 1] + [EOT]   # cut words, never the end token the encoder pools at
            ids[i, :len(r)] = r
        return ids

    # --- ids -> text ---------------------------------------------------------------------------
    def decode(self, ids) -> str:
        """The text of one row of ids: tokens up to the first EOT, PAD and SOT skipped, UNK as "<unk>".

        decode(encode(t)) == normalize(t) whenever every token of t is in the vocabulary.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"Tokenizer.decode: ids must be one row of integer ids (L,), got shape {ids.shape} "
                             f"dtype {ids.dtype}; use decode_batch for (B, L)")
        bad = ids[(ids < 0) | (ids >= self.vocab_size)]
        if bad.size:
            raise ValueError(f"Tokenizer.decode: ids {bad[:10].tolist()} are outside 0..{self.vocab_size - 1}")
        words = []
        for i in ids.tolist():
            if i == EOT:
                break                     # what follows the end token is padding, not text
            if i not in (PAD, SOT):
                words.append(self.vocab[i])
        return _join(words)

    def decode_batch(self, ids) -> list[str]:
        """decode for each row of ids (B, L)."""
        ids = np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"Tokenizer.decode_batch: ids must be (B, L), got shape {ids.shape}")
        return [self.decode(row) for row in ids]

    def eot_index(self, ids) -> np.ndarray:
        """(B,) position of the first EOT in each row of ids (B, L); see the module function eot_index."""
        return eot_index(ids, self.eot_id)

    # --- saving --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{"vocab": list of str}; np.asarray(state["vocab"]) is a string array that np.savez stores without pickle."""
        return {"vocab": list(self.vocab)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Tokenizer":
        """The tokenizer that state_dict() described; state["vocab"] may be a list or a NumPy string array."""
        if "vocab" not in state:
            raise ValueError(f"Tokenizer.from_state_dict: state needs a 'vocab' entry, got keys {sorted(state)}")
        return cls(np.asarray(state["vocab"]).tolist())


def _as_texts(texts, who: str) -> list[str]:
    """A list of str; a lone str is refused (iterating it would give its characters)."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{who}: texts must be a list of str, got one {type(texts).__name__}; wrap it as [text]")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{who}: texts[{i}] must be a str, got {type(t).__name__}")
    return texts
