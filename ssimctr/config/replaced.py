"""Config keys that a class now stands for: the `_target_` of an option replaced the string that named
a behaviour. An old spelling (on the command line or in a YAML file) is one line naming what replaced it
(ssimctr.cli.config_errors.unknown_key), not a "did you mean" guess."""

from __future__ import annotations

REPLACED = {
    "regime.training": (
        "the training procedure is the regime's class: regime=mt, mt_s or single (joint), regime=st (separate) "
        "or regime=finetune; or set regime._target_=ssimctr.train.regimes.Joint|Separate|Finetune"
    ),
    "tracking.backend": "the tracker is the tracking option: tracking=mlflow or tracking=none",
    "trainer.lr": "the dense weights' optimizer is trainer/optimizer: set trainer.optimizer.lr",
    "trainer.weight_decay": "the dense weights' optimizer is trainer/optimizer: set trainer.optimizer.weight_decay",
    "trainer.embedding_optimizer": (
        "the id rows' rule is the group trainer/embedding_optimizer: trainer/embedding_optimizer=sgd|sparse_adam|"
        "rowwise_adagrad|adam (its rate: trainer.embedding_optimizer.lr)"
    ),
    "dataset.source": "a dataset's reader is named by its schema (`_target_`): pick the dataset, e.g. dataset=aliccp",
}
