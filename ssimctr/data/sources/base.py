"""What every source returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import polars as pl

from ssimctr.config.schema import SplitConfig
from ssimctr.errors import UserError

SPLIT_COLUMN = "_split"
SPLITS = ("train", "val", "test")


@dataclass
class Source:
    """A dataset's rows, not yet read.

    load:        returns the rows with the dataset's own column names (and `_split` 0/1/2
                 when the dataset ships its own train/val/test files); called only on a cache miss
    fingerprint: what identifies the input (file paths, sizes, mtimes, or generator params)
    origin:      how to name the input in error messages (a path or "the synthetic generator")
    """

    load: Callable[[], pl.LazyFrame]
    fingerprint: dict
    origin: str


class Reader(Protocol):
    """A dataset's options with the reading of its files: what a dataset schema's `_target_` builds."""

    def read(self, rule: SplitConfig) -> Source:
        """The rows, not yet read; with split=given (`rule`), marked by the file they came from."""


def release_folder(folder: Path, holds: str, otherwise: str) -> Path:
    """`folder` when it is an existing folder; else one clear error saying it must hold `holds`
    (the release's files) and `otherwise` (how to read another layout)."""
    if not folder.exists():
        raise UserError(
            f"dataset.path: folder not found: {folder} (check the path; relative paths are relative to {Path.cwd()})"
        )
    if not folder.is_dir():
        raise UserError(
            f"dataset.path: {folder} is a file, not a folder: it must be the folder holding {holds} ({otherwise})"
        )
    return folder
