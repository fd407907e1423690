"""tinyvision.text.tokenizer: round trip, the end token under truncation, padding, odd input, saving.

The property tests draw captions as random sequences of vocabulary words (and punctuation), with
random case and whitespace between them, so the normalisation is exercised on every example.
"""
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyvision.text import EOT, PAD, SOT, SPECIAL_TOKENS, UNK, Tokenizer, eot_index, normalize, split_words

CAPTIONS = ["a small red circle on the left", "A photo of two blue squares.", "a large green triangle on the right",
            "a picture of three white circles!", "four cyan triangles, five orange squares"]
TOK = Tokenizer.train(CAPTIONS)
WORDS = TOK.vocab[len(SPECIAL_TOKENS):]

spaces = st.sampled_from([" ", "  ", "\t", "\n", " \u00a0"])


@st.composite
def known_texts(draw, max_words=30):
    """(text, its tokens): vocabulary words in random case, joined by random whitespace."""
    words = draw(st.lists(st.sampled_from(WORDS), max_size=max_words))
    text = draw(spaces).join(w.upper() if draw(st.booleans()) else w for w in words)
    return text, words


# --- round trip --------------------------------------------------------------------------------
@given(known_texts())
def test_decode_of_encode_is_the_normalised_text_and_ids_are_the_words(case):
    text, words = case
    ids = TOK.encode(text)
    assert ids == [SOT, *(TOK.token_to_id[w] for w in words), EOT]
    assert TOK.decode(ids) == normalize(text)
    assert split_words(TOK.decode(ids)) == words


def test_normalize_lowercases_collapses_whitespace_and_attaches_punctuation():
    assert normalize("  A small RED circle , on the\tleft!") == "a small red circle, on the left!"
    assert split_words("Two blue squares.") == ["two", "blue", "squares", "."]


@given(st.text(max_size=40))
def test_normalize_is_idempotent_on_any_text(text):
    assert normalize(normalize(text)) == normalize(text)
    assert split_words(normalize(text)) == split_words(text)


# --- padding and truncation --------------------------------------------------------------------
@given(known_texts(max_words=40), st.integers(2, 24))
def test_encode_batch_keeps_the_end_token_for_any_length_and_context(case, context_length):
    text, words = case
    row = TOK.encode_batch([text], context_length)[0]
    full = TOK.encode(text)
    n = min(len(full), context_length)                   # tokens in the row, EOT included
    assert row.shape == (context_length,) and row.dtype == np.int64
    assert row[0] == SOT and row[n - 1] == EOT and (row == EOT).sum() == 1
    assert row[:n - 1].tolist() == full[:n - 1]           # truncation cuts words from the end only
    assert (row[n:] == PAD).all() and not (row[:n] == PAD).any()
    assert eot_index(row[None])[0] == n - 1


def test_padding_is_pad_after_the_end_token():
    ids = TOK.encode_batch(["a red circle", "", "two blue squares."], 8)
    expected = [[SOT, *TOK.encode("a red circle")[1:-1], EOT, PAD, PAD, PAD],
                [SOT, EOT, PAD, PAD, PAD, PAD, PAD, PAD],
                [SOT, *TOK.encode("two blue squares.")[1:-1], EOT, PAD, PAD]]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(eot_index(ids), [4, 1, 5])


def test_truncation_drops_the_last_words_and_keeps_eot():
    ids = TOK.encode_batch(["a small red circle on the left"], 4)[0]
    assert TOK.decode(ids) == "a small"
    assert ids.tolist() == [SOT, TOK.token_to_id["a"], TOK.token_to_id["small"], EOT]
    assert TOK.encode_batch(["a small red circle"], 2)[0].tolist() == [SOT, EOT]


def test_on_overflow_error_names_the_long_texts():
    with pytest.raises(ValueError, match=r"texts \[1\] need 9 tokens.*context_length=5"):
        TOK.encode_batch(["a red circle", "a small red circle on the left"], 5, on_overflow="error")
    assert TOK.encode_batch(["a red circle"], 5, on_overflow="error").shape == (1, 5)
    with pytest.raises(ValueError, match="on_overflow"):
        TOK.encode_batch(["a"], 5, on_overflow="warn")


@pytest.mark.parametrize("context_length", [1, 0, -3, 2.5, True, None])
def test_context_length_below_two_or_not_an_int_raises(context_length):
    with pytest.raises(ValueError, match="context_length must be an int >= 2"):
        TOK.encode_batch(["a red circle"], context_length)


def test_encode_batch_of_no_texts_is_zero_rows_and_a_lone_string_is_refused():
    assert TOK.encode_batch([], 7).shape == (0, 7)
    with pytest.raises(TypeError, match="list of str"):
        TOK.encode_batch("a red circle", 7)


# --- empty, unknown and odd input --------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "\x00\u200b"])
def test_empty_or_blank_caption_encodes_to_start_and_end(text):
    assert TOK.encode(text) == [SOT, EOT]
    assert TOK.decode(TOK.encode(text)) == ""


def test_unknown_words_become_unk_and_decode_as_unk():
    ids = TOK.encode("a purple circle")
    assert ids == [SOT, TOK.token_to_id["a"], UNK, TOK.token_to_id["circle"], EOT]
    assert TOK.decode(ids) == "a <unk> circle"


def test_odd_characters_follow_the_documented_rules():
    same = TOK.encode("a red circle")
    assert TOK.encode("A\u00a0RED\ncircle") == same                     # any whitespace separates
    assert TOK.encode("a red\x00 circle\x07") == same                   # invisible characters are dropped
    assert TOK.encode("a re\u200bd circle") == same                     # ... also inside a word
    assert split_words("café 😀!") == ["café", "😀", "!"]                # visible non-ASCII is kept
    assert TOK.encode("a café circle") == [SOT, TOK.token_to_id["a"], UNK, TOK.token_to_id["circle"], EOT]
    assert TOK.encode("😀") == [SOT, UNK, EOT]


def test_text_cannot_produce_special_ids():
    for text in ["<eot>", "<pad> <sot>", "<unk>"]:
        ids = TOK.encode(text)
        assert ids[0] == SOT and ids[-1] == EOT
        assert not {PAD, SOT, EOT} & set(ids[1:-1])


@pytest.mark.parametrize("text, error", [(b"a red circle", "decode bytes"), (None, "must be a str"),
                                         (3, "must be a str")])
def test_encode_of_a_non_string_raises_type_error(text, error):
    with pytest.raises(TypeError, match=error):
        TOK.encode(text)


def test_decode_stops_at_the_end_token_and_rejects_unknown_ids():
    red = TOK.token_to_id["red"]
    assert TOK.decode([SOT, red, EOT, red, red]) == "red"
    assert TOK.decode([]) == ""
    assert TOK.decode_batch(TOK.encode_batch(["a red circle", "two"], 6)) == ["a red circle", "two"]
    with pytest.raises(ValueError, match="outside 0"):
        TOK.decode([SOT, TOK.vocab_size, EOT])
    with pytest.raises(ValueError, match=r"\(L,\)"):
        TOK.decode([[SOT, EOT]])


# --- eot_index ---------------------------------------------------------------------------------
def test_eot_index_finds_the_first_end_token():
    ids = np.array([[SOT, 5, 6, EOT, PAD], [SOT, EOT, 7, EOT, PAD], [SOT, 5, 6, 7, EOT]])
    np.testing.assert_array_equal(eot_index(ids), [3, 1, 4])
    np.testing.assert_array_equal(TOK.eot_index(ids), [3, 1, 4])


def test_eot_index_raises_on_a_row_without_end_token():
    ids = np.array([[SOT, 5, EOT], [SOT, 5, 6]])                       # row 1 was cut without its EOT
    assert (ids == EOT).argmax(axis=1)[1] == 0                         # the silent trap: position 0
    with pytest.raises(ValueError, match=r"rows \[1\].*no end token"):
        eot_index(ids)
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        eot_index(np.array([SOT, EOT]))


# --- training and saving -----------------------------------------------------------------------
def test_train_orders_by_count_then_alphabetically_and_respects_min_count():
    tok = Tokenizer.train(["b a", "a c", "c a", "d"], min_count=1)
    assert tok.vocab == [*SPECIAL_TOKENS, "a", "c", "b", "d"]         # a:3, c:2, then b, d (1 each)
    assert Tokenizer.train(["b a", "a c", "c a", "d"], min_count=2).vocab == [*SPECIAL_TOKENS, "a", "c"]
    assert (tok.pad_id, tok.sot_id, tok.eot_id, tok.unk_id) == (0, 1, 2, 3) and tok.vocab_size == 8


def test_train_is_deterministic_and_independent_of_text_order():
    texts = CAPTIONS * 3 + ["two red circles", "a red square"]
    shuffled = texts[:]
    random.Random(0).shuffle(shuffled)
    assert Tokenizer.train(texts).vocab == Tokenizer.train(texts).vocab == Tokenizer.train(shuffled).vocab


def test_train_rejects_a_lone_string_and_a_bad_min_count():
    with pytest.raises(TypeError, match="list of str"):
        Tokenizer.train("a red circle")
    with pytest.raises(ValueError, match="min_count"):
        Tokenizer.train(CAPTIONS, min_count=0)


@pytest.mark.parametrize("vocab, error", [(["a", "b"], "must start with"),
                                          ([*SPECIAL_TOKENS, "a", "a"], "more than once"),
                                          ([*SPECIAL_TOKENS, "red circle"], "single normalised tokens"),
                                          ([*SPECIAL_TOKENS, "Red"], "single normalised tokens")])
def test_a_vocabulary_that_could_not_round_trip_is_refused(vocab, error):
    with pytest.raises(ValueError, match=error):
        Tokenizer(vocab)


def test_state_dict_round_trips_through_npz_without_pickle(tmp_path):
    path = tmp_path / "tok.npz"
    np.savez(path, **{f"tokenizer/{k}": np.asarray(v) for k, v in TOK.state_dict().items()})
    with np.load(path, allow_pickle=False) as f:
        loaded = Tokenizer.from_state_dict({"vocab": f["tokenizer/vocab"]})
    assert loaded.vocab == TOK.vocab
    assert loaded.encode("a small red circle") == TOK.encode("a small red circle")
