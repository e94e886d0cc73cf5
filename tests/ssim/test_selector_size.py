"""The selector's hidden sizes: by default the backbone's towers, an explicit ssim.selector_hidden wins,
the reference presets keep the official [1024, 512, 256], and the size a search used is the one
its retrain rebuilds (docs/methods.md §1.3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

from conftest import compose
from ssimctr.cli.main import CONFIG_DIR
from ssimctr.cli.runner import JobInfo, run
from ssimctr.config.models import MODEL_SCHEMAS
from ssimctr.ssim import artifacts
from ssimctr.ssim.selector import FALLBACK_HIDDEN, selector_hidden

OFFICIAL = [1024, 512, 256]
DNN = MODEL_SCHEMAS["dnn"]._target_


@pytest.mark.parametrize(
    ("backbone", "expected"),
    [
        ({"_target_": DNN, "hidden": [32, 16]}, [32, 16]),
        ({"_target_": DNN}, [256, 128, 64]),  # a search_backbone without `hidden`: the schema's default
        ({"_target_": MODEL_SCHEMAS["star"]._target_}, [128, 64, 32]),
        ({"_target_": MODEL_SCHEMAS["mmoe"]._target_, "tower": [8]}, list(FALLBACK_HIDDEN)),  # no `hidden`
        (None, list(FALLBACK_HIDDEN)),
    ],
)
def test_the_default_selector_follows_the_backbone_towers(backbone, expected):
    assert selector_hidden(None, backbone) == expected


def test_an_explicit_selector_size_wins():
    assert selector_hidden([8, 4], {"_target_": DNN, "hidden": [32, 16]}) == [8, 4]
    assert selector_hidden([], None) == []  # no hidden layer: the heads read the embedding


def test_the_default_is_null_and_the_dnn_fallback_is_its_default_towers():
    assert compose("ssim=search").ssim.selector_hidden is None
    assert list(FALLBACK_HIDDEN) == list(compose().backbone.hidden) == [256, 128, 64]


def test_the_reference_presets_keep_the_official_selector_size():
    presets = sorted(Path(CONFIG_DIR).glob("*/ssim_ali*.yaml"))
    assert presets
    for path in presets:
        assert yaml.safe_load(path.read_text())["ssim"]["selector_hidden"] == OFFICIAL, path


def _pipeline(tmp_path: Path, *overrides: str) -> Path:
    """Run a small ssim=pipeline job; its search folder."""
    cfg = compose(
        f"paths.outputs={tmp_path}",
        "tracking=none",
        "dataset.rows=4000",
        "dataset.users=400",
        "dataset.items=150",
        "trainer=debug",
        "trainer.progress=false",
        "ssim=pipeline",
        *overrides,
    )
    run(cfg, JobInfo(output_dir=tmp_path / "run"), Console(quiet=True))
    return tmp_path / "run" / "ssim"


def _recording_loads(monkeypatch) -> list[list[int]]:
    """The MLP widths of every frozen selector a retrain loads."""
    loaded, real = [], artifacts.load_frozen_selector

    def recording(*args, **kwargs):
        frozen = real(*args, **kwargs)
        loaded.append([layer.out_features for layer in frozen.selector.mlp if isinstance(layer, torch.nn.Linear)])
        return frozen

    monkeypatch.setattr(artifacts, "load_frozen_selector", recording)
    return loaded


def test_the_resolved_size_is_saved_and_rebuilt_by_the_retrain(tmp_path, monkeypatch):
    loaded = _recording_loads(monkeypatch)
    folder = _pipeline(tmp_path, "backbone.hidden=[24,12]")
    assert torch.load(folder / "selector.pt")["hidden"] == [24, 12]
    assert loaded == [[24, 12]]


def test_a_transfer_search_sizes_the_selector_by_the_search_backbone(tmp_path, monkeypatch):
    loaded = _recording_loads(monkeypatch)
    folder = _pipeline(
        tmp_path,
        "backbone=star",
        "backbone.hidden=[16]",
        "ssim.search_backbone={_target_: ssimctr.models.backbones.dnn.DNN, hidden: [20]}",
    )
    assert torch.load(folder / "selector.pt")["hidden"] == [20]
    assert loaded == [[20]]
