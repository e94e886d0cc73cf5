"""`ssimctr --help`: conf/hydra/help/ssimctr.yaml is the text; `${ssimctr.options:<group>}` in it lists a
config group's options from conf/<group>/, the one the command line (or the default) chose marked `*`."""

from __future__ import annotations

import textwrap
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

RESOLVER = "ssimctr.options"
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
INDENT = 19  # the template's column of the options
WIDTH = 110


def group_options(group: str, _root_: DictConfig) -> str:
    """`group`'s options, space-separated in alphabetical order, the chosen one marked `*` (wrapped to the
    template's column)."""
    chosen = OmegaConf.select(_root_, "hydra.runtime.choices", default={}) or {}
    options = sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))
    text = " ".join(f"*{option}" if option == chosen.get(group) else option for option in options)
    return textwrap.fill(text, WIDTH - INDENT, subsequent_indent=" " * INDENT, break_on_hyphens=False)


def register_help() -> None:
    """Make `${ssimctr.options:<group>}` available to the help template (before Hydra composes)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, group_options)
