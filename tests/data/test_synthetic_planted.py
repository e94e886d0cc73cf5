"""The synthetic generator's planted shareability (dataset.shareable): a hidden flag that decides whether a
row clicks by the function shared by all scenarios or by its own scenario's, kept beside the features."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from conftest import synthetic_config
from ssimctr.config.datasets import SyntheticConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data import synthetic
from ssimctr.data.columns import feature_roles
from ssimctr.data.loaders import read_split
from ssimctr.data.prepare import TRUTH_COLUMN, prepare
from ssimctr.errors import UserError

SIZE = {"rows": 40_000, "users": 2_000, "items": 500}
PINNED_DEFAULT = (1299.5580710612248, 1327)  # sum of click_prob and of click, rows=20_000, before planting existed


@pytest.fixture(scope="module")
def planted() -> pl.DataFrame:
    return synthetic.generate(SyntheticConfig(**SIZE, shareable=0.5, ctr=0.3))


def _logit(p: pl.Series) -> np.ndarray:
    x = p.to_numpy()
    return np.log(x / (1 - x))


def test_off_by_default_the_frame_is_the_one_from_before():
    default = synthetic.generate(SyntheticConfig(rows=20_000))
    assert SyntheticConfig().shareable is None and SyntheticConfig().ctr is None
    assert synthetic.SHAREABLE not in default.columns
    assert default["click_prob"].sum() == pytest.approx(PINNED_DEFAULT[0], rel=1e-12)
    assert default["click"].sum() == PINNED_DEFAULT[1]


def test_planting_changes_only_the_click_model_columns(planted):
    default = synthetic.generate(SyntheticConfig(**SIZE))
    assert planted.columns == [*default.columns, synthetic.SHAREABLE]
    assert planted.drop("click", "click_prob", synthetic.SHAREABLE).equals(default.drop("click", "click_prob"))


def test_the_flag_is_deterministic_for_a_seed(planted):
    again = synthetic.generate(SyntheticConfig(**SIZE, shareable=0.5, ctr=0.3))
    other = synthetic.generate(SyntheticConfig(**SIZE, shareable=0.5, ctr=0.3, generator_seed=8))
    assert planted.equals(again)
    assert not planted[synthetic.SHAREABLE].equals(other[synthetic.SHAREABLE])


def test_the_flag_rate_is_the_option_and_follows_the_category_and_age_effects(planted):
    flags = planted[synthetic.SHAREABLE]
    assert flags.dtype == pl.Boolean and abs(flags.mean() - 0.5) < 0.03
    rng = np.random.default_rng((SyntheticConfig().generator_seed, 3))  # the effects, drawn independently
    effects = {
        "item_category": rng.normal(0.0, synthetic.SHAREABLE_CATEGORY_STD, synthetic.NUM_CATEGORIES),
        "user_age": rng.normal(0.0, synthetic.SHAREABLE_AGE_STD, len(synthetic.AGE_BUCKETS)),
    }
    ages = {label: index for index, label in enumerate(synthetic.AGE_BUCKETS)}
    for column, drawn in effects.items():
        rates = planted.group_by(column).agg(pl.col(synthetic.SHAREABLE).mean()).sort(column)
        index = rates[column].to_list() if column == "item_category" else [ages[a] for a in rates[column]]
        assert spearmanr(drawn[index], rates[synthetic.SHAREABLE]).statistic > 0.8, column
    by_category = planted.group_by("item_category").agg(pl.col(synthetic.SHAREABLE).mean())[synthetic.SHAREABLE]
    assert by_category.min() < 0.1 and by_category.max() > 0.9


def test_flagged_rows_click_by_the_shared_function_the_others_by_their_scenarios(planted):
    """Against an independent frame whose every row clicks by the shared <u, v> (shared_weight=1): a flagged
    row's logit differs from it by a constant (the two biases); s1's rotation is 180 degrees (K=3), so its
    unflagged rows click by the negated shared function."""
    shared = synthetic.generate(SyntheticConfig(**SIZE, shared_weight=1.0, ctr=0.3))
    difference = _logit(planted["click_prob"]) - _logit(shared["click_prob"])
    flagged = planted[synthetic.SHAREABLE].to_numpy()
    scenario = planted["scenario"].to_numpy()
    for name in ("s0", "s1", "s2"):
        rows = flagged & (scenario == name)
        assert np.ptp(difference[rows]) < 1e-9, name
    opposed = ~flagged & (scenario == "s1")
    assert np.corrcoef(_logit(planted["click_prob"])[opposed], _logit(shared["click_prob"])[opposed])[0, 1] < -0.8
    turned = ~flagged & (scenario == "s0")
    assert abs(np.corrcoef(_logit(planted["click_prob"])[turned], _logit(shared["click_prob"])[turned])[0, 1]) < 0.2


def test_a_flagged_rows_click_probability_does_not_depend_on_its_scenario(planted):
    """Rows of one user, item and hour in several scenarios: one probability when flagged, one per scenario when not."""
    for flagged, values in ((True, 1), (False, 2)):
        groups = (
            planted.filter(pl.col(synthetic.SHAREABLE) == flagged)
            .group_by("user_id", "item_id", "hour")
            .agg(scenarios=pl.col("scenario").n_unique(), probabilities=pl.col("click_prob").n_unique())
            .filter(pl.col("scenarios") == 2)
        )
        assert groups.height > 100
        assert (groups["probabilities"] == values).all(), flagged


def test_every_scenario_has_the_asked_ctr(planted):
    ctr = planted.group_by("scenario").agg(pl.col("click_prob").mean())["click_prob"]
    assert np.allclose(ctr.to_numpy(), 0.3, atol=0.02)


def test_planted_rotations_are_orthogonal_turns_at_equal_angles():
    rotations = synthetic.planted_rotations(SyntheticConfig(num_scenarios=3, latent_dim=8))
    assert np.allclose(rotations @ rotations.transpose(0, 2, 1), np.eye(8))
    assert np.allclose([np.trace(r) / 8 for r in rotations], [0.0, -1.0, 0.0], atol=1e-12)


@pytest.mark.parametrize(("kwargs", "argument"), [({"shareable": 0.0}, "shareable"), ({"ctr": 1.0}, "ctr")])
def test_bad_planting_arguments_are_user_errors(kwargs, argument):
    with pytest.raises(UserError, match=f"^dataset.{argument}="):
        synthetic.generate(SyntheticConfig(rows=100, **kwargs))


def test_the_flag_is_kept_beside_the_features_never_as_one(tmp_path):
    config = synthetic_config(rows=6_000, users=600, items=200, shareable=0.5, truth=synthetic.SHAREABLE)
    data = prepare(config, ScenarioConfig(kind="column", column="scenario"), SplitConfig(kind="time"), tmp_path)
    names = [*data.feature_map.categorical_names, *data.feature_map.numeric_names, *data.feature_map.text]
    assert synthetic.SHAREABLE not in names and TRUTH_COLUMN not in names
    train = pl.read_parquet(data.split_path("train"))
    assert set(train[TRUTH_COLUMN].unique()) == {0, 1}
    assert read_split(data.split_path("train"), data.feature_map).cat.shape[1] == len(data.feature_map.categorical)
    with pytest.raises(UserError, match="dataset.truth"):
        feature_roles(synthetic_config(truth="item_brand"))
