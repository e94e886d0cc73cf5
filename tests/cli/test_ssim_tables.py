"""The SSIM tables (experiment=table_ssim, table_ssim_ablation, table_ssim_transfer) with and without
the reference presets: every row composes, the presets set what the official code does, a transfer
row searches exactly as its source row (one search, ssim.reuse_search), and `ssimctr-report` with
the grouping each table's comment gives shows one row per grid row."""

from __future__ import annotations

import functools
import itertools
import re
from pathlib import Path

import hydra
import pytest
import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from ssimctr.cli.main import CONFIG_DIR
from ssimctr.cli.runner import JobInfo, _tags
from ssimctr.config.models import MODEL_SCHEMAS, backbone_config
from ssimctr.report.cli import DEFAULT_GROUP_BY
from ssimctr.report.table import aggregate
from ssimctr.ssim.cache import search_key
from ssimctr.tracking.runs import RunRecord
from ssimctr.train.regimes import Regime
from ssimctr.utils.instantiate import instantiate

CONF = Path(CONFIG_DIR)
TABLES = ("table_ssim", "table_ssim_ablation", "table_ssim_transfer")
PRESETS = (None, "ssim_aliccp", "ssim_alimama")
OFFICIAL_TOWERS = [1024, 512, 256]
DNN_FAMILY = {MODEL_SCHEMAS[name]._target_ for name in ("dnn", "deepfm", "dcn", "dcnv2", "dffm")}


def sweep(table: str) -> list[tuple[str, ...]]:
    """The grid rows of experiment=`table`: one override tuple per combination of its sweeper params
    (a `glob(*)` param: every option of that group), seeds left out."""
    experiment = yaml.safe_load((CONF / "experiment" / f"{table}.yaml").read_text())
    axes = []
    for key, values in experiment["hydra"]["sweeper"]["params"].items():
        if key == "seed":
            continue
        group = key.lstrip("+")
        options = sorted(p.stem for p in (CONF / group).glob("*.yaml")) if values == "glob(*)" else values.split(",")
        axes.append([f"{key}={option}" for option in options])
    return list(itertools.product(*axes))


def compose(*overrides: str) -> tuple[DictConfig, dict[str, str]]:
    """The app config and the chosen option of every group, as the CLI composes them."""
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra.compose("config", overrides=list(overrides), return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


@functools.cache
def rows(table: str, preset: str | None) -> list[tuple[tuple[str, ...], DictConfig, dict[str, str]]]:
    """(overrides, config, choices) of every grid row of `table` under `preset` (composed once)."""
    extra = (f"experiment={table}",) + ((f"preset={preset}",) if preset else ())
    return [(row, *compose(*extra, *row)) for row in sweep(table)]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("table", TABLES)
def test_every_row_composes_and_resolves(table, preset):
    for row, cfg, _ in rows(table, preset):
        OmegaConf.to_container(cfg, resolve=True)
        regime: Regime = instantiate(cfg.regime)
        assert regime.name == cfg.regime.name, row
        if cfg.ssim.search_backbone is not None:
            backbone_config(OmegaConf.to_container(cfg.ssim.search_backbone, resolve=True))


@pytest.mark.parametrize("preset", PRESETS[1:])
def test_a_preset_sets_the_official_model_selection_loss_and_tower_sizes(preset):
    for row, cfg, _ in rows("table_ssim", preset) + rows("table_ssim_transfer", preset):
        assert (cfg.trainer.monitor, cfg.trainer.patience, cfg.trainer.epochs) == ("val/auc/overall", 1, 20), row
        assert cfg.regime.loss_reduction == "scenario", row
        own = OmegaConf.to_object(cfg.backbone)
        schema = next(s for s in MODEL_SCHEMAS.values() if s._target_ == cfg.backbone._target_)
        expected = OFFICIAL_TOWERS if cfg.backbone._target_ in DNN_FAMILY else getattr(schema(), "hidden", None)
        assert getattr(own, "hidden", None) == expected, row  # STAR and HMoE keep their reference defaults
        if cfg.ssim.phase == "pipeline" and cfg.ssim.search_backbone is not None:
            assert list(cfg.ssim.search_backbone.hidden) == OFFICIAL_TOWERS, row


def test_without_a_preset_the_tables_keep_the_project_defaults():
    for row, cfg, _ in rows("table_ssim", None):
        assert cfg.regime.loss_reduction == "row" and cfg.trainer.monitor == "val/auc/mean", row
        if cfg.backbone._target_ == MODEL_SCHEMAS["dnn"]._target_:
            assert list(cfg.backbone.hidden) == [256, 128, 64], row


def key_of(cfg: DictConfig) -> str:
    """The search key of a pipeline row (on stand-in data)."""
    ssim = OmegaConf.to_object(cfg.ssim)
    searcher = cfg.backbone if ssim.search_backbone is None else backbone_config(ssim.search_backbone)
    regime: Regime = instantiate(cfg.regime)
    settings = OmegaConf.to_object(cfg.trainer)
    text = OmegaConf.to_container(cfg.text_encoder, resolve=True)
    return search_key(
        "data", text, OmegaConf.to_container(searcher, resolve=True), regime, cfg.seed, ssim, settings
    ).digest


@pytest.mark.parametrize("preset", PRESETS)
def test_a_transfer_row_searches_as_its_source_row(preset):
    """experiment=table_ssim's STAR/HMoE/DFFM rows reuse the dnn_ssim row's search, and
    experiment=table_ssim_transfer's rows the <source>_ssim row's: the same search key."""
    pipelines = [(choices, cfg) for _, cfg, choices in rows("table_ssim", preset) if cfg.ssim.phase == "pipeline"]
    keys = {choices["_parts/table_ssim"]: key_of(cfg) for choices, cfg in pipelines}
    assert keys["star_ssim"] == keys["hmoe_ssim"] == keys["dffm_ssim"] == keys["dnn_ssim"]
    assert len({keys["dnn_ssim"], keys["deepfm_ssim"], keys["dcn_ssim"]}) == 3
    for _, cfg, choices in rows("table_ssim_transfer", preset):
        assert key_of(cfg) == keys[f"{choices['search_backbone']}_ssim"]


def report_group_by(experiment_file: Path) -> tuple[str, ...]:
    """The --group-by of the ssimctr-report line in an experiment's comment (the default without one)."""
    found = re.search(r"ssimctr-report .*--group-by (\S+)", experiment_file.read_text())
    return tuple((found.group(1) if found else DEFAULT_GROUP_BY).split(","))


@pytest.mark.parametrize("table", TABLES)
def test_each_grid_row_is_its_own_report_row(table):
    grid = rows(table, None)
    records = [
        RunRecord(str(i), str(i), "FINISHED", tags=_tags(cfg, JobInfo(choices=choices)), metrics={"test/auc/s0": 0.5})
        for i, (_, cfg, choices) in enumerate(grid)
    ]
    report = aggregate(records, report_group_by(CONF / "experiment" / f"{table}.yaml"), metrics=("auc",))
    assert len(report.rows) == len(grid) and all(row.n == 1 for row in report.rows)
    assert all("-" not in row.group and "None" not in row.group for row in report.rows)
