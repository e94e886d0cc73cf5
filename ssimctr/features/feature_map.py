"""feature_map.json: what the prepared columns are, written by prepare and read by models."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


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

    `scenario_names[k]` is the name of scenario index k; metric keys use these names.
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
        path.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False))

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
        )
