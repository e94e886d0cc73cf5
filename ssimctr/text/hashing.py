"""The `hashing` text encoder (text_encoder=hashing): each text's words (and character n-grams) as bucket ids.

A word is a lower-cased run of word characters (`\\w+`, so a run of CJK characters is one word); with
`char_ngrams=n` every character n-gram of each word (a word shorter than n is its own n-gram) follows
its words. Tokens hash by CRC-32 (stable across processes and versions) modulo `buckets`; a text keeps
its first `max_tokens` tokens. The trainable part, the bag of bucket embeddings, is the model layer
ssimctr.models.layers.encoded.HashedBag.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import numpy as np
import polars as pl
import torch
from rich.console import Console

from ssimctr.config.text import HashingConfig
from ssimctr.features.encoded import HashedTextField
from ssimctr.text.build import ColumnEncoder

WORD = re.compile(r"\w+")


def tokens(text: str, char_ngrams: int) -> list[str]:
    """The words of `text`, then (char_ngrams = n > 0) every character n-gram of each word."""
    words = WORD.findall(text.lower())
    if char_ngrams <= 0:
        return words
    grams = [word[i : i + char_ngrams] for word in words for i in range(max(1, len(word) - char_ngrams + 1))]
    return words + grams


def hashed_tokens(texts: Sequence[str], buckets: int, char_ngrams: int, max_tokens: int) -> torch.Tensor:
    """[len(texts), L] bucket ids of each text's tokens, padded with `buckets` (L = the longest, >= 1)."""
    ids = [[zlib.crc32(token.encode()) % buckets for token in tokens(text, char_ngrams)[:max_tokens]] for text in texts]
    lengths = np.array([len(values) for values in ids], dtype=np.int64)
    table = np.full((len(ids), max(1, int(lengths.max(initial=0)))), buckets, dtype=np.int64)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows = np.repeat(np.arange(len(ids)), lengths)
    table[rows, np.arange(int(lengths.sum())) - starts] = np.fromiter(chain.from_iterable(ids), np.int64)
    return torch.from_numpy(table)


class Hashing(HashingConfig, ColumnEncoder):
    """text_encoder=hashing: each column's texts as hashed tokens (HashingConfig's options)."""

    def field(self, prepared: Path, column: str, texts: pl.Series, console: Console) -> HashedTextField:
        """The hashed tokens of the empty text and of each of `texts`."""
        tokens = hashed_tokens(["", *texts.to_list()], self.buckets, self.char_ngrams, self.max_tokens)
        return HashedTextField(column, tokens, self.buckets, texts)
