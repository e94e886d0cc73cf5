"""Schemas of the `text_encoder` group: how the dataset's text fields become model inputs
(ssimctr.text). `none` keeps a job ID-only; every other option encodes each column of
`dataset.text` into one more model field.

Every option's defaults live here once; conf/text_encoder/<name>.yaml holds its comments. `_target_`
names the encoder class (ssimctr.text), which subclasses its schema and adds the encoding; `kind` is the
option's name in messages, cache files and the logged config.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from ssimctr.errors import UserError

POOLINGS = ("mean", "cls")


@dataclass
class TextEncoderConfig:
    """text_encoder=none: the text columns stay in the prepared data, no model reads them."""

    _target_: str = "ssimctr.text.build.NoText"
    kind: str = "none"


@dataclass
class HashingConfig(TextEncoderConfig):
    """Words (and character n-grams) hashed into buckets, averaged by a trainable EmbeddingBag."""

    _target_: str = "ssimctr.text.hashing.Hashing"
    kind: str = "hashing"
    buckets: int = 100_000  # hash buckets (rows of the bag's table)
    char_ngrams: int = 0  # n > 0: also every character n-gram of each word (CJK text: 1 or 2)
    max_tokens: int = 64  # tokens kept per text, in order

    def __post_init__(self) -> None:
        """Refuse settings no text can be hashed with (checked when the encoder is built)."""
        for key, least in (("buckets", 1), ("char_ngrams", 0), ("max_tokens", 1)):
            if getattr(self, key) < least:
                raise UserError(f"text_encoder.{key}={getattr(self, key)}: must be at least {least}")


@dataclass
class FrozenEncoderConfig(TextEncoderConfig):
    """A frozen transformer run once per unique text; vectors cached under the prepared dataset."""

    _target_: str = MISSING  # ssimctr.text.encoders.MiniLM | ssimctr.text.encoders.HuggingFace
    kind: str = MISSING  # minilm | hf
    path: str | None = None  # hf: a local model folder (config.json, weights, tokenizer); minilm: the packaged one
    pooling: str = "mean"  # mean (over the attention mask) | cls
    normalize: bool = False  # L2-normalize each vector (all-MiniLM-L6-v2 does)
    max_length: int = 128  # tokens per text, the rest cut
    batch_size: int = 256  # texts per forward pass
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        """Refuse settings no encoder runs with (checked when the encoder is built)."""
        if self.pooling not in POOLINGS:
            raise UserError(f"text_encoder.pooling={self.pooling} is not known: use {' or '.join(POOLINGS)}")
        for key in ("max_length", "batch_size"):
            if getattr(self, key) < 1:
                raise UserError(f"text_encoder.{key}={getattr(self, key)}: must be at least 1")


TEXT_ENCODER_SCHEMAS: dict[str, type] = {
    "none": TextEncoderConfig,
    "hashing": HashingConfig,
    "frozen": FrozenEncoderConfig,
}
"""Stored as `schema_text_encoder_<key>`; minilm and hf both use `frozen` and name their class in the YAML."""
