"""dataset=douban and dataset=mind: the YAML presets (source: files) composed with Hydra, on the real
Scenario-Wise-Rec samples in shared/data; totals per scenario as listed in shared/data/PROVENANCE.md."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from conftest import SHARED_DATA, compose, scenario_totals
from ssimctr.config.datasets import DatasetConfig
from ssimctr.data.prepare import prepare
from ssimctr.errors import UserError

DOUBAN = SHARED_DATA / "douban" / "douban_sample.csv"
MIND = SHARED_DATA / "mind" / "mind_sample.csv"


def _configs(*overrides: str):
    """The dataset, scenario and split configs composed with `overrides`."""
    cfg = compose(*overrides)
    return OmegaConf.to_object(cfg.dataset), OmegaConf.to_object(cfg.scenario), OmegaConf.to_object(cfg.split)


@pytest.mark.skipif(not DOUBAN.is_file(), reason=f"the shared Douban sample is not here ({DOUBAN})")
def test_douban_preset_three_domains(tmp_path):
    dataset, scenario, split = _configs("dataset=douban", f"dataset.path={DOUBAN}", "split=random")
    assert type(dataset) is DatasetConfig and dataset.time is None
    data = prepare(dataset, scenario, split, tmp_path / "cache")
    assert data.feature_map.scenario_names == ("book", "movie", "music")
    assert scenario_totals(data) == {"movie": (2299, 1415), "book": (364, 259), "music": (337, 262)}
    assert data.manifest["dropped"] == {}
    assert [f.name for f in data.feature_map.categorical] == ["user_id", "item_id", "living_place"]
    assert data.manifest["splits"]["train"]["rows"] / 3000 == pytest.approx(0.8, abs=0.03)


@pytest.mark.skipif(not DOUBAN.is_file(), reason=f"the shared Douban sample is not here ({DOUBAN})")
def test_douban_preset_splits_at_random_and_has_no_interaction_time(tmp_path):
    """join_time is the user's join date, not a time of the rating: the preset splits at random,
    and split=time is refused with the fix."""
    assert _configs("dataset=douban", f"dataset.path={DOUBAN}")[2].kind == "random"
    dataset, scenario, split = _configs("dataset=douban", f"dataset.path={DOUBAN}", "split=time")
    with pytest.raises(UserError) as err:
        prepare(dataset, scenario, split, tmp_path / "cache")
    assert "split=random" in str(err.value)


@pytest.mark.skipif(not MIND.is_file(), reason=f"the shared MIND sample is not here ({MIND})")
def test_mind_preset_four_categories(tmp_path):
    dataset, scenario, split = _configs("dataset=mind", f"dataset.path={MIND}", "split=random")
    data = prepare(dataset, scenario, split, tmp_path / "cache")
    assert data.feature_map.scenario_names == ("finance", "lifestyle", "news", "sports")
    assert scenario_totals(data) == {
        "news": (3742, 163),
        "lifestyle": (1565, 60),
        "sports": (1428, 84),
        "finance": (1265, 56),
    }
    assert data.manifest["dropped"] == {}
    assert [f.name for f in data.feature_map.categorical] == ["User_ID", "News_ID", "SubCategory"]


@pytest.mark.parametrize("name", ["douban", "mind"])
def test_presets_need_the_path(tmp_path, name):
    dataset, scenario, split = _configs(f"dataset={name}", "split=random")
    with pytest.raises(UserError) as err:
        prepare(dataset, scenario, split, tmp_path / "cache")
    assert f"dataset={name} needs a file: set dataset.path=" in str(err.value)
