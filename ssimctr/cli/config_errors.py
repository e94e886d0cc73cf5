"""A config the command line got wrong, as one line naming the key or option and the fix.

Hydra's own messages for these run to several lines (an unknown key suggests `+key=value`, which
would add a key nothing reads; an unknown option lists every option and the search path); these
functions turn each into one line with the closest real key or the options there are.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterator, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from ssimctr.config.replaced import REPLACED
from ssimctr.errors import UserError

_COULD_NOT_OVERRIDE = re.compile(r"Could not (?:override|append to) '([^']+)'")
_COULD_NOT_FIND = re.compile(r"Could not find '([^']+)'")
_MERGING = re.compile(r"Error merging override (\S+)")


def config_keys(cfg: DictConfig, prefix: str = "") -> Iterator[str]:
    """Every dotted key of `cfg` (nodes and leaves), `hydra` aside, without resolving interpolations."""
    for key in cfg.keys():
        if not prefix and key == "hydra":
            continue
        dotted = f"{prefix}{key}"
        yield dotted
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
            yield from config_keys(node, f"{dotted}.")


def closest_key(key: str, known: Sequence[str]) -> str | None:
    """The real key `key` most likely meant: a key of the same depth whose node and last part are both
    close to its own (`trainer.epocs`, `trainr.epochs` -> `trainer.epochs`), else the key whose last part
    is closest to its last part (`epochs` -> `trainer.epochs`)."""
    parent, _, leaf = key.rpartition(".")

    def similarity(a: str, b: str) -> float:
        return difflib.SequenceMatcher(None, a, b).ratio()

    scored = []
    for name in known:
        other_parent, _, other_leaf = name.rpartition(".")
        if name.count(".") == key.count(".") and similarity(parent, other_parent) >= 0.75:
            score = similarity(leaf, other_leaf)
            if score >= 0.75:
                scored.append((score + similarity(parent, other_parent), name))
    if scored:
        return max(scored)[1]
    by_leaf = {name.rsplit(".", 1)[-1]: name for name in sorted(known, key=lambda name: -name.count("."))}
    match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.8)
    return by_leaf[match[0]] if match else None


def unknown_key(key: str, cfg: DictConfig | None) -> UserError:
    """`key` is not an option: one line with what replaced it (ssimctr.config.replaced), the closest real key
    (from `cfg`), or the options of its node."""
    if key in REPLACED:
        return UserError(f"{key} is no longer an option: {REPLACED[key]}")
    known = [name for name in config_keys(cfg) if name != key] if cfg is not None else []
    close = closest_key(key, known)
    if close is not None:
        return UserError(f"{key} is not an option: did you mean {close}? (ssimctr --cfg job lists every option)")
    parent = key.rpartition(".")[0]
    siblings = sorted(name.rsplit(".", 1)[-1] for name in known if name.rpartition(".")[0] == parent)
    where = f"{parent} has" if parent else "the options are"
    listed = f" ({where} {', '.join(siblings)})" if siblings and len(siblings) <= 30 else ""
    return UserError(f"{key} is not an option{listed}: see ssimctr --cfg job")


def unknown_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Keys added to a schema's node (`+trainer.foo=1`) that its dataclass does not have: nothing reads them."""
    found = []
    schema = OmegaConf.get_type(cfg)
    names = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in cfg.keys():
        if not prefix and key == "hydra":
            continue
        if names is not None and key not in names:
            found.append(f"{prefix}{key}")
            continue
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
            found.extend(unknown_keys(node, f"{prefix}{key}."))
    return found


def missing_values(cfg: DictConfig) -> UserError | None:
    """One line naming every mandatory value left unset (`???`), None when there is none."""
    missing = sorted(key for key in OmegaConf.missing_keys(cfg) if not key.startswith("hydra."))
    if not missing:
        return None
    listed = ", ".join(missing)
    verb = "needs a value" if len(missing) == 1 else "need values"
    example = " ".join(f"{key}=<value>" for key in missing)
    return UserError(f"{listed} {verb}: add {example} to the command")


def composition_error(error: BaseException, overrides: Sequence[str], base: DictConfig | None) -> UserError | None:
    """The one line for Hydra's failure to compose the config from `overrides` (None: not such a failure).
    `base` is a config composed without the faulty override (for the closest keys), or None."""
    if isinstance(error, MissingConfigException):
        return _unknown_option(error)
    if isinstance(error, OverrideParseException):
        bad = next((o for o in overrides if not _parses(o)), None)
        reason = str(error).splitlines()[0]
        return UserError(f"cannot read the override {bad or ''!s}: {reason} (form: key=value, group=option)")
    if not isinstance(error, ConfigCompositionException):
        return None
    cause = error.__cause__
    named = _COULD_NOT_OVERRIDE.search(str(error))
    if named and isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        return unknown_key(named[1], base)
    merging = _MERGING.search(str(error))
    detail = str(cause).splitlines()[0] if isinstance(cause, OmegaConfBaseException) else ""
    if merging and detail:
        return UserError(f"{merging[1]}: {detail}")
    first = str(error).splitlines()[0]
    return UserError(f"{first}{f' ({detail})' if detail else ''}")


def faulty_override(error: BaseException) -> str | None:
    """The key of the override Hydra could not apply, when its message names one."""
    named = _COULD_NOT_OVERRIDE.search(str(error)) or _MERGING.search(str(error))
    return named[1].split("=", 1)[0] if named else None


def _unknown_option(error: MissingConfigException) -> UserError:
    """`backbone=transformer`: one line with the group's options (and the closest one)."""
    missing = _COULD_NOT_FIND.search(str(error))
    if not missing or not error.options:
        return UserError(str(error).splitlines()[0])
    group, _, option = missing[1].rpartition("/")
    options = list(error.options)
    close = difflib.get_close_matches(option, options, n=1)
    hint = f"did you mean {group}={close[0]}? " if close else ""
    return UserError(f"{group}={option} is not an option of {group}: {hint}choose one of {', '.join(options)}")


def _parses(override: str) -> bool:
    try:
        OverridesParser.create().parse_overrides([override])
    except OverrideParseException:
        return False
    return True
