"""What a search leaves behind, and how a retrain reads it back (the folder `ssim/` of a run).

initial_state.pt    the backbone's weights before search (retrain starts from them when it matches)
selector.pt         the selector's weights and shape
embedding.pt        the frozen search-phase embedding the selector reads in retrain
selection.parquet   every train row: row_id, scenario, score m, shared (global top r)
summary.json        data key and what made it (`data`: the dataset, scenario and split options, the input's
                    fingerprint, the preparation code), scenario names, ratio, shared fraction per scenario,
                    the criterion and its settings, and on data with a planted answer (dataset.truth) the
                    selection AUC per scenario and overall
score_histogram.png selector scores per scenario
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch

from ssimctr.data.datasplit import DataSplit
from ssimctr.data.loaders import parquet_files
from ssimctr.data.prepare import TRUTH_COLUMN
from ssimctr.errors import UserError
from ssimctr.features.feature_map import FeatureMap
from ssimctr.metrics import auc
from ssimctr.models.layers import FeatureEmbedding
from ssimctr.ssim.selector import FrozenSelector, Selector

FILES = ("initial_state.pt", "selector.pt", "embedding.pt", "selection.parquet", "summary.json")


def save_search(
    folder: Path,
    *,
    initial_state: dict,
    selector: Selector,
    selector_shape: dict,
    embedding: FeatureEmbedding,
    selection: pl.DataFrame,
    summary: dict,
) -> None:
    """Write the search artifacts into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(_cpu(initial_state), folder / "initial_state.pt")
    torch.save({"state": _cpu(selector.state_dict()), **selector_shape}, folder / "selector.pt")
    torch.save(
        {"state": _cpu(embedding.state_dict()), "dim": embedding.dim, "scenario_feature": embedding.scenario_feature},
        folder / "embedding.pt",
    )
    selection.write_parquet(folder / "selection.parquet")
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))


def data_provenance(manifest: dict) -> dict:
    """What made a prepared dataset, from its manifest: the options, the input's fingerprint, the code (as
    summary.json holds them: JSON values)."""
    provenance = {
        "options": manifest["config"],
        "source": manifest["source"],
        "preparation_code": manifest["versions"]["preparation_code"],
    }
    return json.loads(json.dumps(provenance, default=str))


def check_search_folder(folder: Path, manifest: dict) -> dict:
    """The summary of a search folder, after checking it is complete and made on the data of `manifest`
    (the job's prepared data); a search on other data is refused by the options that differ."""
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"{folder} is not an SSIM search folder (missing {', '.join(missing)}): point "
            "ssim.from_path at the ssim/ folder of a search run, or use ssim.from_run=<run id>"
        )
    summary = json.loads((folder / "summary.json").read_text())
    if summary["data_key"] != manifest["cache_key"]:
        searched = summary.get("data")
        what = (
            data_difference(searched, data_provenance(manifest))
            if searched
            else f"{summary['dataset']}, prepared data key {summary['data_key'][:12]}"
        )
        raise UserError(
            f"the search in {folder} was made on other data ({what}); retrain with the search's dataset, "
            "scenario and split options"
        )
    return summary


def data_difference(searched: dict, here: dict) -> str:
    """The first options that differ between the search's data and this job's (`data_provenance` of each),
    as `dataset.rows=100000 in the search, 200000 here`; else the input files or the preparation code."""
    before, after = _flat(searched["options"]), _flat(here["options"])
    differ = [key for key in sorted(before.keys() | after.keys()) if before.get(key) != after.get(key)]
    if differ:
        shown = [f"{key}={before.get(key)} in the search, {after.get(key)} here" for key in differ[:3]]
        return "; ".join(shown) + (f"; and {len(differ) - 3} more options" if len(differ) > 3 else "")
    if searched["source"] != here["source"]:
        return "the same options, other input files"
    return "the same options and input files, another version of the preparation code"


def _flat(options: dict, prefix: str = "") -> dict:
    """Nested options as {dotted key: value}."""
    flat = {}
    for key, value in options.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_frozen_selector(folder: Path, feature_map: FeatureMap, device: torch.device) -> FrozenSelector:
    """The search's selector on a frozen copy of the search-phase embedding."""
    saved_embedding = torch.load(folder / "embedding.pt", map_location="cpu")
    embedding = FeatureEmbedding(feature_map, saved_embedding["dim"], saved_embedding["scenario_feature"])
    embedding.load_state_dict(saved_embedding["state"])
    saved = torch.load(folder / "selector.pt", map_location="cpu")
    selector = Selector(
        saved["in_dim"], saved["hidden"], saved["num_scenarios"], saved["shared_head"], saved["dropout"]
    )
    selector.load_state_dict(saved["state"])
    return FrozenSelector(embedding, selector).to(device)


def load_initial_state(folder: Path, model: torch.nn.Module) -> bool:
    """Load the search's initial weights into `model` when they fit it exactly; True if loaded."""
    state = torch.load(folder / "initial_state.pt", map_location="cpu")
    own = model.state_dict()
    if state.keys() != own.keys() or any(state[k].shape != own[k].shape for k in own):
        return False
    model.load_state_dict(state)
    return True


def score_rows(selector: FrozenSelector, rows: DataSplit, batch_size: int = 16384) -> pl.DataFrame:
    """row_id, scenario and selector score m of every row, in row order."""
    ids, scenarios, scores = [], [], []
    for batch in rows.loader(batch_size, shuffle=False):
        ids.append(batch.row_id.cpu())
        scenarios.append(batch.scenario.cpu())
        scores.append(selector(batch).float().cpu())
    return pl.DataFrame(
        {
            "row_id": torch.cat(ids).numpy(),
            "scenario": torch.cat(scenarios).numpy().astype(np.int32),
            "score": torch.cat(scores).numpy(),
        }
    )


def global_top_ratio(scores: np.ndarray, ratio: float) -> np.ndarray:
    """A boolean mask of the ⌊ratio·N⌋ highest scores (ties broken by position)."""
    shared = np.zeros(len(scores), dtype=bool)
    count = math.floor(ratio * len(scores))
    if count:
        shared[np.argsort(-scores, kind="stable")[:count]] = True
    return shared


def selection_frame(scored: pl.DataFrame, ratio: float) -> pl.DataFrame:
    """The scored rows with `shared`: the global top r of the scores."""
    return scored.with_columns(shared=pl.Series(global_top_ratio(scored["score"].to_numpy(), ratio)))


def shared_fractions(selection: pl.DataFrame, names: Sequence[str]) -> dict[str, float]:
    """Share of each scenario's train rows marked shared."""
    by = selection.group_by("scenario").agg(pl.col("shared").mean()).sort("scenario")
    fractions = dict(zip(by["scenario"].to_list(), by["shared"].to_list()))
    return {name: float(fractions.get(k, float("nan"))) for k, name in enumerate(names)}


def planted_truth(rows: DataSplit) -> pl.DataFrame | None:
    """row_id and the planted 0/1 answer of the split's rows (dataset.truth), or None when its
    prepared files hold none."""
    if rows.path is None:
        return None
    frame = pl.scan_parquet(parquet_files(rows.path))
    if TRUTH_COLUMN not in frame.collect_schema().names():
        return None
    return frame.select("row_id", truth=pl.col(TRUTH_COLUMN)).collect()


def selection_auc(selection: pl.DataFrame, truth: pl.DataFrame, names: Sequence[str]) -> dict[str, float]:
    """AUC of the selector score against the planted answer, per scenario and over all rows
    (`overall`); NaN where a scenario's rows hold one class."""
    joined = selection.join(truth, on="row_id", how="inner")
    result = {}
    for k, name in enumerate(names):
        part = joined.filter(pl.col("scenario") == k)
        result[name] = auc(part["truth"].to_numpy(), part["score"].to_numpy())
    result["overall"] = auc(joined["truth"].to_numpy(), joined["score"].to_numpy())
    return result


def shared_by_row(folder: Path, ratio: float, device: torch.device) -> torch.Tensor:
    """A bool tensor indexed by row_id: True for rows in the global top r of the saved scores."""
    selection = pl.read_parquet(folder / "selection.parquet", columns=["row_id", "score"])
    shared = global_top_ratio(selection["score"].to_numpy(), ratio)
    table = torch.zeros(int(selection["row_id"].max()) + 1, dtype=torch.bool, device=device)
    table[torch.tensor(selection["row_id"].to_numpy(), device=device)] = torch.from_numpy(shared).to(device)
    return table


def plot_scores(selection: pl.DataFrame, names: Sequence[str], path: Path) -> None:
    """Histogram of selector scores per scenario, with the global top-r threshold."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    scores = selection["score"].to_numpy()
    for k, name in enumerate(names):
        part = scores[selection["scenario"].to_numpy() == k]
        if len(part):
            axes.hist(part, bins=50, density=True, histtype="step", label=f"{name} ({len(part):,} rows)")
    shared = selection.filter(pl.col("shared"))["score"]
    if len(shared):
        axes.axvline(float(shared.min()), color="black", linestyle="--", label="shared threshold")
    axes.set_xlabel("selector score m(x)")
    axes.set_ylabel("density")
    axes.set_title("SSIM selector scores on the train rows")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _cpu(state: dict) -> dict:
    return {key: value.detach().cpu() for key, value in state.items()}
