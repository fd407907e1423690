"""Text for the vision-language models: a tokenizer the project trains on its own captions.

    tokenizer.py   word-level Tokenizer with <pad> <sot> <eot> <unk>, padding, truncation that
                   keeps the end token, and eot_index (where the text encoder pools)

The captions themselves are generated with the pictures, in tinyvision.data.captions.
"""
from .tokenizer import EOT, PAD, SOT, SPECIAL_TOKENS, UNK, Tokenizer, eot_index, normalize, split_words

__all__ = ["EOT", "PAD", "SOT", "SPECIAL_TOKENS", "UNK", "Tokenizer", "eot_index", "normalize", "split_words"]
