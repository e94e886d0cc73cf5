"""Config keys that a class now stands for: the `_target_` of an option replaced the string that named
a behaviour. An old spelling on the command line gets one line naming what replaced it, not Hydra's
"Key ... is not in struct"."""

from __future__ import annotations

from collections.abc import Sequence

from ssimctr.errors import UserError

REPLACED = {
    "regime.training": (
        "the training procedure is the regime's class: regime=mt, mt_s or single (joint), regime=st (separate) "
        "or regime=finetune; or set regime._target_=ssimctr.train.regimes.Joint|Separate|Finetune"
    ),
    "tracking.backend": "the tracker is the tracking option: tracking=mlflow or tracking=none",
    "dataset.source": "a dataset's reader is named by its schema (`_target_`): pick the dataset, e.g. dataset=aliccp",
}


def check_overrides(overrides: Sequence[str]) -> None:
    """Raise UserError for an override of a replaced key (`regime.training=separate`, `+tracking.backend=x`)."""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if "=" in override and key in REPLACED:
            raise UserError(f"{key} is no longer an option: {REPLACED[key]}")
