"""The vector cache of frozen encoders: one parquet file per text column and encoder setting, in the
prepared dataset's folder, `text/<column>-<kind>-<key>.parquet` with the columns `text` and `vector`.

The key hashes the encoder kind, the model's identity (ssimctr.text.encoders.model_identity), the
settings that change a vector (pooling, normalize, max_length) and the column; batch size and device do
not enter it. Texts already in the file are read back; only new ones are encoded (none on a second run),
and the file is rewritten with them (write to a temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from ssimctr.config.text import FrozenEncoderConfig


def cache_key(config: FrozenEncoderConfig, identity: dict, column: str) -> str:
    """The key of one column's vectors under one encoder setting."""
    payload = {
        "kind": config.kind,
        "model": identity,
        "pooling": config.pooling,
        "normalize": config.normalize,
        "max_length": config.max_length,
        "column": column,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(prepared: Path, config: FrozenEncoderConfig, identity: dict, column: str) -> Path:
    return Path(prepared) / "text" / f"{column}-{config.kind}-{cache_key(config, identity, column)}.parquet"


def cached_vectors(path: Path, texts: pl.Series, encode: Callable[[list[str]], np.ndarray]) -> tuple[np.ndarray, int]:
    """Vectors [len(texts), d] in the order of `texts` (distinct), and how many were encoded now."""
    wanted = pl.DataFrame({"text": texts})
    cached = pl.read_parquet(path) if path.is_file() else None
    missing = wanted if cached is None else wanted.join(cached.select("text"), on="text", how="anti")
    if missing.height:
        fresh = encode(missing["text"].to_list())
        new = pl.DataFrame({"text": missing["text"], "vector": pl.Series(fresh.astype(np.float32, copy=False))})
        cached = new if cached is None else pl.concat([cached, new])
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        cached.write_parquet(staging)
        os.replace(staging, path)
    vectors = wanted.join(cached, on="text", how="left", maintain_order="left")["vector"]
    return np.array(vectors.to_numpy(), dtype=np.float32), missing.height  # a writable copy
