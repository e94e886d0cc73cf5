"""`ssimctr --help`: a description, examples that compose, and the config groups a user chooses with their
options (the preset parts under conf/_parts/ left out); the config dump stays behind `--cfg job`."""

from __future__ import annotations

import re
import sys

import pytest
import yaml
from doc_commands import check
from omegaconf import OmegaConf

from ssimctr.cli import main
from ssimctr.cli.help import CONFIG_DIR, group_options

TEMPLATE = yaml.safe_load((CONFIG_DIR / "hydra/help/ssimctr.yaml").read_text())["template"]
EXAMPLES = re.findall(r"^  (ssimctr [^\n]*?)(?: {3,}.*)?$", TEMPLATE.split("Config groups")[0], re.M)
USER_GROUPS = sorted(
    path.name for path in CONFIG_DIR.iterdir() if path.is_dir() and path.name not in ("_parts", "hydra")
)


def help_text(monkeypatch, capsys, *args: str) -> str:
    """What `ssimctr <args> --help` prints (in this process)."""
    monkeypatch.setattr(sys, "argv", ["ssimctr", *args, "--help"])
    with pytest.raises(SystemExit) as ended:
        main.main()
    assert ended.value.code in (0, None)
    return capsys.readouterr().out


def test_help_describes_the_program_and_lists_only_the_groups_a_user_chooses(monkeypatch, capsys):
    text = help_text(monkeypatch, capsys)
    assert text.startswith("ssimctr: an experiment runner for multi-scenario click-through-rate prediction")
    assert "powered by Hydra" not in text and "seed: 2022" not in text  # no generic line, no config dump
    listed = re.findall(r"^  ([a-z_/]+) {2,}\S", text.split("Config groups")[1], re.M)
    assert sorted(g for g in listed if g != "hydra/launcher") == USER_GROUPS
    assert "_parts" not in text and "preset_backbone" not in text and "table_ssim_ablation\n" not in text
    assert re.search(r"^ {19}.*\*dnn\b", text, re.M) and re.search(r"^ {19}.*\*mlflow\b", text, re.M)
    assert max(len(line) for line in text.splitlines()) <= 110


def test_help_marks_the_option_the_command_line_chose(monkeypatch, capsys):
    text = help_text(monkeypatch, capsys, "backbone=star", "tracking=none")
    assert re.search(r"\*star\b", text) and not re.search(r"\*dnn\b", text)
    assert re.search(r"\*none\b", text.split("tracking ")[1].splitlines()[1])


def test_group_options_are_the_yaml_files_of_the_group():
    root = OmegaConf.create({"hydra": {"runtime": {"choices": {"regime": "single"}}}})
    options = group_options("regime", root).split()
    assert options == ["finetune", "mt", "mt_s", "*single", "st"]


def test_the_config_dump_stays_behind_cfg_job(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ssimctr", "--cfg", "job", "trainer=debug"])
    main.main()  # prints the config and returns
    assert re.search(r"^seed: 2022$", capsys.readouterr().out, re.M)


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_of_the_help_composes(example):
    assert len(EXAMPLES) >= 8
    assert check(example) is None
