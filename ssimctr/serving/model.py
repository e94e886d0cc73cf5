"""A logged model read back: the pickled module (mlflow.pytorch) and what encodes rows for it.

The runner logs the selected model with `mlflow.pytorch` (the module pickled by reference to its ssimctr
class, so loading needs ssimctr installed) and, beside it, the job's config.yaml and feature_map.json (the
flavor's extra files, under extra_files/) and the prepared dataset's vocab/ folder. A model URI alone
(`runs:/<run id>/model`, `models:/m-...`, or a local copy's folder) is then enough to score a file.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from omegaconf import DictConfig, OmegaConf

from ssimctr.config.datasets import DatasetConfig
from ssimctr.data.loaders import InMemoryLoader, batch_from_frame
from ssimctr.data.prepare import encode_rows, read_vocabularies
from ssimctr.errors import UserError
from ssimctr.features.feature_map import FeatureMap
from ssimctr.models.base import MultiScenarioModel
from ssimctr.tracking.models import download_logged_model, load_torch_model
from ssimctr.train.loop import predict

EXTRA_FILES = "extra_files"  # where mlflow.pytorch keeps a model's extra files
VOCAB = "vocab"


@dataclass
class LoggedModel:
    """A logged model on this machine: the module (on the CPU, in eval mode), the job's config, the
    prepared dataset's feature map and its vocabularies."""

    uri: str
    model: MultiScenarioModel
    config: DictConfig
    feature_map: FeatureMap
    vocabularies: dict[str, pl.DataFrame]

    @property
    def dataset(self) -> DatasetConfig:
        """The job's dataset options (the roles of the columns), as the base schema."""
        raw = OmegaConf.to_container(self.config.dataset, resolve=True)
        return DatasetConfig(**{f.name: raw[f.name] for f in dataclasses.fields(DatasetConfig) if f.name in raw})

    def check_id_only(self) -> None:
        """Refuse a model that reads text or image vectors: their tables belong to the training data."""
        text = self.config.get("text_encoder", {}).get("kind", "none")
        if text != "none" or self.feature_map.vectors:
            reads = f"text_encoder={text}" if text != "none" else f"image vectors {list(self.feature_map.vectors)}"
            raise UserError(
                f"the model {self.uri} reads {reads}: scoring new data supports models of ID and numeric "
                "features only (train with text_encoder=none and no dataset.vectors)"
            )

    def logits(self, frame: pl.DataFrame, batch_size: int = 65_536) -> np.ndarray:
        """Own-scenario logits of the rows of an encoded frame (`batch_from_frame`'s columns), in order."""
        loader = InMemoryLoader(batch_from_frame(frame, self.feature_map), batch_size, shuffle=False)
        return predict(self.model, loader)[1]

    def encode(self, frame: pl.LazyFrame, origin: str) -> tuple[pl.DataFrame, int]:
        """A new file's rows encoded as the training data was (ssimctr.data.prepare.encode_rows); with the
        count of rows whose scenario the model does not know (scenario null)."""
        self.check_id_only()
        encoded, unknown = encode_rows(frame, self.dataset, self.feature_map, self.vocabularies, origin)
        return encoded.collect(), unknown


def default_tracking_uri() -> str:
    """The runner's default store: $MLFLOW_TRACKING_URI, else outputs/mlflow.db."""
    import os

    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///outputs/mlflow.db"


def load_logged_model(uri: str, tracking_uri: str) -> LoggedModel:
    """The logged model at `uri` (or in a local copy's folder), read into memory."""
    with tempfile.TemporaryDirectory(prefix="ssimctr-model-") as scratch:
        local = Path(uri) if Path(uri).is_dir() else download_logged_model(uri, tracking_uri, Path(scratch))
        extra = local / EXTRA_FILES
        needed = [local / "MLmodel", extra / "config.yaml", extra / "feature_map.json", local / VOCAB]
        missing = [str(path.relative_to(local)) for path in needed if not path.exists()]
        if missing:
            raise UserError(f"--model {uri} is not a model logged by ssimctr: it lacks {', '.join(missing)}")
        model = load_torch_model(local)
        model.eval()
        config = OmegaConf.load(extra / "config.yaml")
        feature_map = FeatureMap.from_json(extra / "feature_map.json")
        vocabularies = read_vocabularies(local / VOCAB, feature_map.categorical_names)
    return LoggedModel(uri, model, config, feature_map, vocabularies)
