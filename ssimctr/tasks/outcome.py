"""What a task returns: the metrics and model of a training procedure, and how the job presents them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ssimctr.train.loop import Trained


@dataclass
class Outcome(Trained):
    """A task's result: what its training gave (Trained: val/test metrics, fits, the selected model)
    and what the runner prints with it. `summaries`: rows, positives and CTR per scenario of each
    evaluated slice, by metric prefix (e.g. "test" and "test/warm"); None: the whole test split."""

    summaries: dict[str, list[dict]] | None = None
    description: str = ""  # what was trained, in a few words (the printed tables' titles)
    next_step: str = ""  # what to run next, printed after the results (e.g. ssim=search: the retrain command)

    @classmethod
    def of(cls, trained: Trained, **presented: Any) -> Outcome:
        """The outcome of `trained`, with the task's `summaries`, `description` or `next_step`."""
        return cls(**{f.name: getattr(trained, f.name) for f in fields(Trained)}, **presented)

    @property
    def best_epoch(self) -> float:
        """The best epoch (the mean over models when there are several: the metric best/epoch)."""
        return float(np.mean([f.best_epoch for f in self.fits]))

    @property
    def best_epochs(self) -> str:
        """The best epoch of each training, named by its phase: `best epoch 3` (one unnamed training), or
        `best epoch: base 3, meta 2` (epoch 0: the weights the training started from stayed the best)."""
        if not any(f.phase for f in self.fits):
            return f"best epoch {', '.join(str(f.best_epoch) for f in self.fits)}"
        return "best epoch: " + ", ".join(f"{f.phase or 'training'} {f.best_epoch}" for f in self.fits)

    @property
    def rows_per_second(self) -> float:
        """Training rows per second over every fit."""
        seconds = sum(f.train_seconds for f in self.fits)
        return sum(f.train_rows for f in self.fits) / seconds if seconds else float("nan")

    def summary(self) -> dict[str, float]:
        """Every result of the job: val/* of the selected model(s), test/*, best epoch, throughput."""
        return {**self.val, **self.test, "best/epoch": self.best_epoch, "train/rows_per_s_mean": self.rows_per_second}
