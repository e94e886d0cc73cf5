"""Bad input on the command line is one line and exit 2, before any run is logged, naming the key,
option, column or value and the fix; no run folder, tracking store or cache entry is left behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ssimctr.cli import main
from ssimctr.data.prepare import STAGING, remove_dead_staging

CSV = "user_id,item_id,price,domain,title,click,answer,empty\n" + "".join(
    f"u{i % 7},i{i % 5},{i * 0.5},{'ab'[i % 2]},t{i % 3},{i % 2},{'yes' if i % 3 else 'no'},\n" for i in range(40)
)
TABULAR = ["dataset=tabular", "dataset.label=click", "dataset.scenario=domain", "dataset.categorical=[user_id,item_id]"]
CASES = {
    "misspelt key": (
        ["trainer.epocs=3"],
        "trainer.epocs is not an option: did you mean trainer.epochs? (ssimctr --cfg job lists every option)",
    ),
    "key at the wrong level": (
        ["epochs=3"],
        "epochs is not an option: did you mean trainer.epochs? (ssimctr --cfg job lists every option)",
    ),
    "appended key nothing reads": (
        ["+trainer.epocs=3"],
        "trainer.epocs is not an option: did you mean trainer.epochs? (ssimctr --cfg job lists every option)",
    ),
    "unknown option": (
        ["backbone=transformer"],
        "backbone=transformer is not an option of backbone: choose one of dcn, dcnv2, deepfm, dffm, dnn, hmoe, m2m, "
        "mmoe, pepnet, ple, shared_bottom, star",
    ),
    "value of the wrong type": (
        ["trainer.epochs=many"],
        "trainer.epochs=many: Value 'many' of type 'str' could not be converted to Integer",
    ),
    "missing mandatory value": (
        ["dataset=tabular", "dataset.path={csv}", "dataset.scenario=domain", "trainer=debug"],
        "dataset.label needs a value: add dataset.label=<value> to the command",
    ),
    "coldstart under multi_scenario": (
        ["coldstart=maml"],
        "task=multi_scenario does not read the coldstart group: coldstart=maml would be ignored; drop coldstart=maml "
        "(or choose a task that reads it)",
    ),
    "ssim under cold_start": (
        ["task=cold_start", "ssim=search"],
        "task=cold_start runs no SSIM phase: ssim=search would be ignored; drop it (ssim=disabled)",
    ),
    "regime cold_start does not train": (
        ["task=cold_start", "regime=mt_s"],
        "task=cold_start does not support regime=mt_s (regime.share=all; it needs joint training, "
        "regime.share=own, regime.loss_reduction=row): use regime=mt or regime=single",
    ),
    "regime option the regime ignores": (
        ["regime.finetune_lr=0.01"],
        "regime.finetune_lr is read by regime=finetune only; regime=mt would ignore it: drop it, or choose "
        "regime=finetune",
    ),
    "ssim with one tower": (
        ["ssim=search", "regime=single"],
        "ssim=search does not support regime=single (regime.towers=single; it needs joint training, "
        "regime.towers=per_scenario): use regime=mt or regime=mt_s",
    ),
    "negative shots": (
        ["task=cold_start", "task.shots=-1"],
        "task.shots=-1, task.meta_shots=5: use shots >= 0 and meta_shots >= 1",
    ),
    "text encoder without text": (
        ["text_encoder=hashing", "dataset.text=[]"],
        "text_encoder=hashing encodes the columns of dataset.text, but dataset=synthetic names none: "
        "set dataset.text=[<column>, ...], or text_encoder=none",
    ),
    "numbers as text": (
        [*TABULAR, "dataset.path={csv}", "dataset.text=[price]"],
        "dataset.text column 'price' in {csv} holds Float64 values, not text: list it under dataset.numeric, or "
        "name a column of text in dataset.text",
    ),
    "two columns of one name": (
        [*TABULAR, "dataset.path={dup}"],
        "dataset.path: {dup} names more than one column 'item_id' (columns 2, 3): give each column its own name in "
        "the header",
    ),
    "yes/no labels": (
        [*TABULAR, "dataset.path={csv}", "dataset.label=answer"],
        "dataset.label column 'answer' in {csv} holds String values ('no', 'yes'), not 0/1: write the labels as 0/1 "
        "(or true/false) in the file, or choose a 0/1 column",
    ),
    "empty labels": (
        [*TABULAR, "dataset.path={csv}", "dataset.label=empty"],
        "dataset.label column 'empty' in {csv} holds no value (every row is empty, null or NaN): choose the column "
        "that holds the 0/1 labels",
    ),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "data.csv").write_text(CSV)
    header, *rows = CSV.splitlines()
    (folder / "dup.csv").write_text("\n".join([header.replace("price", "item_id"), *rows]) + "\n")
    return {"csv": folder / "data.csv", "dup": folder / "dup.csv"}


def runs_in(store: Path) -> list:
    client = MlflowClient(f"sqlite:///{store}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def ssimctr(monkeypatch, capsys, *args: str) -> tuple[int, list[str]]:
    """`ssimctr <args>` in this process: its exit code and its stderr lines."""
    monkeypatch.setattr(sys, "argv", ["ssimctr", *args])
    try:
        main.main()
        code = 0
    except SystemExit as ended:
        code = ended.code
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize(("overrides", "message"), list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_and_exit_2_leaving_nothing_half_made(
    tmp_path, monkeypatch, capsys, files, overrides, message
):
    paths = {name: str(path) for name, path in files.items()}
    outputs = tmp_path / "outputs"
    store = tmp_path / "mlflow.db"
    args = [o.format(**paths) for o in overrides]
    code, lines = ssimctr(monkeypatch, capsys, *args, f"paths.outputs={outputs}", f"tracking.uri=sqlite:///{store}")
    assert (code, lines) == (2, [f"error: {message.format(**paths)}"])
    assert not store.exists() or not runs_in(store)  # no run logged (a data mistake meets an opened store)
    assert not list(outputs.rglob("*.hydra")) and not list(outputs.glob("runs/*/*"))  # no run folder
    assert not [p for p in outputs.glob("cache/*")]  # no cache entry, whole or half-made


def test_a_good_command_passes_the_checks(tmp_path, monkeypatch, capsys):
    """The table above fails for its input alone: the same command without the mistake runs."""
    code, lines = ssimctr(
        monkeypatch,
        capsys,
        "task=cold_start",
        "coldstart=maml",
        "trainer=debug",
        "trainer.epochs=1",
        "dataset.rows=3000",
        "task.holdout=0.2",
        "tracking=none",
        f"paths.outputs={tmp_path}",
    )
    assert code == 0, lines


def test_a_dead_preparations_staging_folder_is_removed_by_a_later_one(tmp_path):
    """kill -9 while preparing leaves `<name>.tmp-<host>-<pid>`: the next preparation removes it when that
    process is gone; a live preparation's, another machine's, and finished entries stay."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)
    host = socket.gethostname()
    folders = {
        "dead": tmp_path / f"synthetic-abc{STAGING}{host}-{dead}",
        "dead, older name": tmp_path / f"synthetic-abd{STAGING}{dead}",
        "live": tmp_path / f"synthetic-abe{STAGING}{host}-{os.getpid()}",
        "other machine": tmp_path / f"synthetic-abf{STAGING}elsewhere-{dead}",
        "prepared": tmp_path / "synthetic-abg",
    }
    for folder in folders.values():
        (folder / "train").mkdir(parents=True)
    removed = remove_dead_staging(tmp_path)
    assert sorted(removed) == sorted([folders["dead"], folders["dead, older name"]])
    assert {name for name, folder in folders.items() if folder.exists()} == {"live", "other machine", "prepared"}
