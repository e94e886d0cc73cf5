"""Schemas of the `text_encoder` group: how the dataset's text fields become model inputs
(ssimctr.text). `none` keeps a job ID-only; every other option encodes each column of
`dataset.text` into one more model field.

Every option's defaults live here once; conf/text_encoder/<name>.yaml holds its comments.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class TextEncoderConfig:
    """text_encoder=none: the text columns stay in the prepared data, no model reads them."""

    kind: str = MISSING  # none | hashing | minilm | hf


@dataclass
class HashingConfig(TextEncoderConfig):
    """Words (and character n-grams) hashed into buckets, averaged by a trainable EmbeddingBag."""

    kind: str = "hashing"
    buckets: int = 100_000  # hash buckets (rows of the bag's table)
    char_ngrams: int = 0  # n > 0: also every character n-gram of each word (CJK text: 1 or 2)
    max_tokens: int = 64  # tokens kept per text, in order


@dataclass
class FrozenEncoderConfig(TextEncoderConfig):
    """A frozen transformer run once per unique text; vectors cached under the prepared dataset."""

    kind: str = MISSING  # minilm | hf
    path: str | None = None  # hf: a local model folder (config.json, weights, tokenizer); minilm: the packaged one
    pooling: str = "mean"  # mean (over the attention mask) | cls
    normalize: bool = False  # L2-normalize each vector (all-MiniLM-L6-v2 does)
    max_length: int = 128  # tokens per text, the rest cut
    batch_size: int = 256  # texts per forward pass
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N


TEXT_ENCODER_SCHEMAS: dict[str, type] = {
    "none": TextEncoderConfig,
    "hashing": HashingConfig,
    "frozen": FrozenEncoderConfig,
}
"""Stored as `schema_text_encoder_<key>`; minilm and hf both use `frozen`."""
