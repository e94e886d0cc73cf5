"""feature_map.json: what the prepared columns are, written by prepare and read by models."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ssimctr.features.encoded import EncodedField


@dataclass(frozen=True)
class CategoricalField:
    """An integer-encoded column: 0 is out-of-vocabulary / missing, 1..vocab_size-1 are values."""

    name: str
    vocab_size: int


@dataclass(frozen=True)
class NumericField:
    """A float column standardized with train statistics: value = (raw - mean) / std, missing = 0."""

    name: str
    mean: float
    std: float
    min: float
    max: float


@dataclass(frozen=True)
class FeatureMap:
    """Schema of a prepared dataset, fitted on the train split only.

    `scenario_names[k]` is the name of scenario index k; metric keys use these names. `text` names the
    raw text columns, `vectors` the index columns of joined image vectors (dataset.vectors). `encoded`
    is not part of the prepared data: the job sets it (ssimctr.text.build) to the fields every model
    reads beside the ids; empty (the default) means ID-only.
    """

    categorical: tuple[CategoricalField, ...]
    numeric: tuple[NumericField, ...] = ()
    text: tuple[str, ...] = ()
    scenario_names: tuple[str, ...] = ()
    scenario_column: str = ""
    label_column: str = ""
    user: str | None = None
    item: str | None = None
    time: str | None = None
    extra: dict = field(default_factory=dict)
    vectors: tuple[str, ...] = ()
    encoded: tuple[EncodedField, ...] = field(default=(), compare=False, repr=False)

    @property
    def num_scenarios(self) -> int:
        return len(self.scenario_names)

    @property
    def categorical_names(self) -> list[str]:
        return [f.name for f in self.categorical]

    @property
    def numeric_names(self) -> list[str]:
        return [f.name for f in self.numeric]

    def to_json(self, path: Path) -> None:
        prepared = asdict(replace(self, encoded=()))
        del prepared["encoded"]
        path.write_text(json.dumps(prepared, indent=2, ensure_ascii=False, default=str))

    @classmethod
    def from_json(cls, path: Path) -> FeatureMap:
        raw = json.loads(Path(path).read_text())
        return cls(
            categorical=tuple(CategoricalField(**f) for f in raw["categorical"]),
            numeric=tuple(NumericField(**f) for f in raw["numeric"]),
            text=tuple(raw["text"]),
            scenario_names=tuple(raw["scenario_names"]),
            scenario_column=raw["scenario_column"],
            label_column=raw["label_column"],
            user=raw.get("user"),
            item=raw.get("item"),
            time=raw.get("time"),
            extra=raw.get("extra", {}),
            vectors=tuple(raw.get("vectors", ())),
        )
