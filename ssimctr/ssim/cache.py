"""Finished SSIM searches stored by what they depend on, so that pipelines of the same search share one
(`ssim.reuse_search`, docs/methods.md §1.6): the transfer rows of experiment=table_ssim retrain on the
selection of the DNN row's search instead of searching again.

A search's key hashes everything the search depends on: the prepared data (its cache key), the
searcher's backbone config (resolved, completed with its schema's defaults) and regime, the seed, the
ssim options a search reads (its criterion included), the trainer options that change its batches or
steps, the source of ssimctr's model, training and SSIM code, and the torch version. A finished search lives in
`<paths.cache>/ssim_search/<key>/`: `ssim/` (the search folder, ssimctr.ssim.artifacts) and
`origin.json` (the key's content and the run that searched). It is written to a temporary folder and
renamed into place, so a reader sees a whole search or none; of two jobs that finish the same search,
the first one's stays.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ssimctr.config.schema import SsimConfig, TrainerConfig
from ssimctr.train.regimes import Regime
from ssimctr.utils.digest import json_digest, source_digest

NOT_SEARCH_SSIM = (  # read by the retrain, or not at all by the search (search_backbone is the key's backbone)
    "phase",
    "selection",
    "retrain_dropout",
    "search_backbone",
    "from_run",
    "from_path",
    "log_every",
    "reuse_search",
)
NOT_SEARCH_TRAINER = (  # the search sets its own epochs and patience; evaluation and process settings
    "epochs",
    "patience",
    "monitor",
    "monitor_mode",
    "eval_batch_size",
    "device",
    "threads",
    "progress",
)
CODE = ("models", "ssim", "train")  # ssimctr packages whose source is part of the key
ORIGIN = "origin.json"


@dataclass(frozen=True)
class SearchKey:
    """What a search depends on (`content`) and its digest, the name of its cache entry."""

    content: dict

    @property
    def digest(self) -> str:
        return json_digest(self.content)[:16]


def search_key(
    data_key: str,
    text_encoder: dict,
    backbone: dict,
    regime: Regime,
    seed: int,
    ssim: SsimConfig,
    settings: TrainerConfig,
) -> SearchKey:
    """The key of a search with `backbone` (the searcher's resolved, complete config) on the prepared
    data `data_key` with its text fields encoded by `text_encoder`; the ssim and trainer options that do
    not change the search are left out."""
    return SearchKey(
        {
            "data": data_key,
            "text_encoder": text_encoder,
            "backbone": backbone,
            "regime": asdict(regime),
            "seed": seed,
            "ssim": {k: v for k, v in asdict(ssim).items() if k not in NOT_SEARCH_SSIM},
            "trainer": {k: v for k, v in asdict(settings).items() if k not in NOT_SEARCH_TRAINER},
            "code": source_digest(CODE),
            "torch": torch.__version__,
        }
    )


def find(root: Path, key: SearchKey) -> Path | None:
    """The stored search folder of `key` under `root`, None when no search of that key has finished."""
    entry = root / key.digest
    return entry / "ssim" if (entry / ORIGIN).is_file() else None


def store(root: Path, key: SearchKey, folder: Path, run_id: str | None) -> None:
    """Store the search folder `folder` under `key`, atomically; an entry already there stays."""
    staging = root / f"{key.digest}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(folder, staging / "ssim")
        (staging / ORIGIN).write_text(json.dumps({"run_id": run_id, "key": key.content}, indent=2, default=str))
        with contextlib.suppress(OSError):  # a non-empty entry is there: another job stored this search first
            os.replace(staging, root / key.digest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def origin_run(stored: Path) -> str | None:
    """The run that made the stored search folder `stored` (None when it was not tracked)."""
    return json.loads((stored.parent / ORIGIN).read_text())["run_id"]
