"""Every command the docs show, found and checked without running it (tests/test_docs_commands.py, and the
examples of `ssimctr --help` in tests/cli/test_help.py).

Where commands are found: the lines of the shell blocks (```bash) of README.md and docs/**/*.md (a line
ending in `\\` continues on the next; `# ...` is a comment), and the inline code spans that start with
`ssimctr`, `ssimctr-report|predict|evaluate` or `make`. A shell block holds commands only: shown output
goes into a ```text block, Python into a ```python block (compiled by the test).

How each is checked (`check`), with `<placeholders>` given stand-in values first (`stand_in`):
- `ssimctr ...` (also `python -m ssimctr`, `torchrun ... -m ssimctr`, with `VAR=value` before it): its
  overrides are composed as the command line would compose them (Hydra's compose, with the hydra node, so
  an unknown group, option or key fails), then go through the job's own checks (`check_job`: values in
  range, what the task supports), as `ssimctr <overrides> --cfg job` would, without any data or training. A
  multirun (`-m`, or an experiment that is one) is composed once per swept value;
- `ssimctr-report|predict|evaluate ...`: their argument parsers read the arguments;
- `make TARGET [VAR=value]`: `make -n` knows the target;
- `pip install -e '.[extra]'`: pyproject.toml declares the extras;
- `python -c CODE`: CODE compiles (`python -m venv DIR`: nothing to check);
- the shell's own commands (`export`, `read`, ...) and `mlflow ui`, `ray start`: nothing to check.
Anything else fails the test, so a new kind of command gets a check before it appears in the docs.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf, open_dict

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
SHELL = {"bash", "sh", "shell"}
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")"}
NOTHING_TO_CHECK = {"export", "read", "source", "cd", "umask", "mlflow", "ray"}
RUN_ID = "0123456789abcdef0123456789abcdef"
APP = re.compile(r"^(?:\.venv/bin/)?ssimctr$")
TOOLS = re.compile(r"^(?:\.venv/bin/)?(ssimctr-report|ssimctr-predict|ssimctr-evaluate)$")
INLINE = re.compile(r"(?<!`)`((?:ssimctr(?:-report|-predict|-evaluate)?|make) [^`]+)`(?!`)")


@dataclass(frozen=True)
class Command:
    """A command as the docs show it, and where."""

    where: str  # file:line
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def doc_commands(pages: list[Path] = PAGES) -> list[Command]:
    """Every command of `pages` (shell-block lines and inline code spans)."""
    return [command for page in pages for command in page_commands(page)]


def page_commands(page: Path) -> Iterator[Command]:
    name = page.relative_to(REPO).as_posix()
    fence, pending, start = None, "", 0
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        opened = re.match(r"^\s*```(\S*)", line)
        if opened:
            fence = None if fence is not None else opened[1]
            continue
        if fence is None:
            for span in INLINE.findall(line):
                yield Command(f"{name}:{number}", span)
        elif fence in SHELL:
            if not pending:
                start = number
            pending += line.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            text = _without_comment(pending).strip()
            pending = ""
            if text:
                yield Command(f"{name}:{start}", text)


def python_blocks(pages: list[Path] = PAGES) -> list[tuple[str, str]]:
    """(file:line, source) of every ```python block of `pages`."""
    blocks = []
    for page in pages:
        lines = page.read_text().splitlines()
        fence = None
        for number, line in enumerate(lines, start=1):
            opened = re.match(r"^\s*```(\S*)", line)
            if opened and fence is None:
                fence, start, body = opened[1], number, []
            elif opened:
                if fence == "python":
                    blocks.append((f"{page.relative_to(REPO).as_posix()}:{start}", "\n".join(body)))
                fence = None
            elif fence is not None:
                body.append(line)
    return blocks


def stand_in(placeholder: str) -> str:
    """A value that composes in place of `<placeholder>`: a run id, a host, or a plain word."""
    words = placeholder.lower()
    if "id" in words.split() or words.endswith(" id") or "id>" in words:
        return RUN_ID
    if "host" in words or "server" in words:
        return "127.0.0.1"
    return "x"


def with_stand_ins(text: str) -> str:
    """`text` with a stand-in for each `<placeholder>` (a group's first option for `group=<...>`), each
    `$(command)` and `…`."""

    def option(match: re.Match) -> str:
        options = sorted(path.stem for path in (REPO / "conf" / match[1]).glob("*.yaml"))
        return f"{match[1]}={options[0]}" if options else f"{match[1]}={stand_in(match[2])}"

    text = re.sub(r"\b(\w+)=<([^<>]+)>", option, text)
    text = re.sub(r"\$\([^()]*\)", "x", text)
    return re.sub(r"<([^<>]+)>", lambda match: stand_in(match[1]), text).replace("…", "x")


def parts(command: str) -> list[list[str]]:
    """The simple commands of a command line (split at ;, &&, ||, | and parentheses), as argument lists."""
    lexer = shlex.shlex(with_stand_ins(command), posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    simple, current = [], []
    for token in lexer:
        if token in SEPARATORS:
            simple, current = simple + [current] if current else simple, []
        else:
            current.append(token)
    return [*simple, current] if current else simple


def check(command: str) -> str | None:
    """Check every simple command of `command`; None when all pass, else why one fails. Raises
    `Unavailable` for an app command that needs a Hydra plugin this environment lacks."""
    for argv in parts(command):
        while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):  # VAR=value before the command
            argv = argv[1:]
        if not argv:
            continue
        problem = _check_simple(argv)
        if problem:
            return problem
    return None


class Unavailable(Exception):
    """The command needs something this environment has not installed (a Hydra plugin from an extra)."""


def _check_simple(argv: list[str]) -> str | None:
    program = argv[0]
    if APP.match(program):
        return check_app(argv[1:])
    if program in ("python", "python3", ".venv/bin/python") and argv[1:3] == ["-m", "ssimctr"]:
        return check_app(argv[3:])
    if program in ("python", "python3", ".venv/bin/python") and argv[1:2] == ["-m"] and argv[2].startswith("ssimctr."):
        return None if importlib.util.find_spec(argv[2]) else f"{argv[2]}: no such module of the package"
    if program in ("python", "python3") and argv[1:3] == ["-m", "venv"]:
        return None  # the standard library's venv
    if program in ("python", "python3", ".venv/bin/python") and argv[1:2] == ["-c"]:
        return _compiles(argv[2], " ".join(argv[:2]))
    if program == "torchrun":
        module = argv.index("-m") if "-m" in argv else None
        if module is None or argv[module + 1] != "ssimctr":
            return "torchrun runs something other than -m ssimctr"
        return check_app(argv[module + 2 :])
    tool = TOOLS.match(program)
    if tool:
        return check_tool(tool[1], argv[1:])
    if program == "make":
        return check_make(argv[1:])
    if program.endswith("pip") or argv[:3] == ["python", "-m", "pip"]:
        return check_pip(argv)
    if program in NOTHING_TO_CHECK:
        return None
    return f"{program}: no check knows this command (tests/doc_commands.py)"


FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--config-name", "-cn", "--config-dir"}


def check_app(args: list[str]) -> str | None:
    """Compose `ssimctr <args>` as Hydra would (each swept value of a multirun once), then run the job's
    checks on it; why it fails, or None."""
    flags, overrides, index = set(), [], 0
    while index < len(args):
        arg = args[index]
        if arg.startswith("-"):
            flags.add(arg)
            index += 2 if arg in FLAGS_WITH_VALUE else 1
            continue
        overrides.append(arg)
        index += 1
    if flags & {"--help", "-h", "--hydra-help"}:
        return None  # `ssimctr --help` itself is run by tests/cli/test_help.py
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as error:  # noqa: BLE001 (the parser's own message says what is wrong)
        return f"cannot read the overrides: {str(error).splitlines()[0]}"
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    swept = [o for o in parsed if o.is_sweep_override()]
    first = {o.get_key_element(): next(iter(o.sweep_string_iterator())) for o in swept}
    variants = [fixed + [f"{key}={value}" for key, value in first.items()]]
    for sweep in swept:
        for value in list(sweep.sweep_string_iterator())[1:]:
            chosen = {**first, sweep.get_key_element(): value}
            variants.append(fixed + [f"{key}={value}" for key, value in chosen.items()])
    for variant in variants:
        problem = _composes(variant, multirun=bool(flags & {"-m", "--multirun"}) or not swept)  # or an experiment
        if problem:
            return problem
    return None


def _composes(overrides: list[str], multirun: bool) -> str | None:
    from ssimctr.cli.main import CONFIG_DIR
    from ssimctr.cli.runner import check_job

    GlobalHydra.instance().clear()
    try:
        with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = hydra.compose("config", overrides=overrides, return_hydra_config=True)
    except MissingConfigException as error:
        if "hydra/launcher" in str(error) or "hydra/sweeper" in str(error):
            raise Unavailable(str(error).splitlines()[0]) from error
        return f"{' '.join(overrides)}: {str(error).splitlines()[0]}"
    except Exception as error:  # noqa: BLE001 (Hydra's and OmegaConf's errors say what is wrong)
        return f"{' '.join(overrides)}: {type(error).__name__}: {str(error).splitlines()[0]}"
    if not multirun and "MULTIRUN" not in str(cfg.hydra.mode):
        return f"{' '.join(overrides)}: a sweep without -m (Hydra runs one job)"
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        check_job(cfg, choices)
        OmegaConf.to_container(cfg, resolve=True)
    except Exception as error:  # noqa: BLE001 (a UserError's one line, or a config that does not resolve)
        return f"{' '.join(overrides)}: {type(error).__name__}: {error}"
    return None


def check_tool(program: str, args: list[str]) -> str | None:
    """`ssimctr-report|predict|evaluate <args>`: their parsers read `args` (nothing is run)."""
    from ssimctr.report.cli import build_parser
    from ssimctr.serving import cli as serving

    def parse_only(parser, argv, command):  # noqa: ANN001 (serving.cli._main's signature)
        parser.parse_args(argv)
        return 0

    try:
        if program == "ssimctr-report":
            build_parser().parse_args(args)
        else:
            with mock.patch.object(serving, "_main", parse_only):
                (serving.predict_main if program == "ssimctr-predict" else serving.evaluate_main)(args)
    except SystemExit:
        return f"{program} refuses the arguments {' '.join(args)}"
    return None


def check_make(args: list[str]) -> str | None:
    """`make -n` (print, run nothing) knows the target."""
    result = subprocess.run(["make", "-n", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60)
    return None if result.returncode == 0 else f"make {' '.join(args)}: {result.stderr.strip()[-300:]}"


def check_pip(argv: list[str]) -> str | None:
    """`pip install -e '.[a,b]'` names extras pyproject.toml declares."""
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for arg in argv:
        named = re.fullmatch(r"\.\[([\w,-]+)\]", arg)
        if named:
            unknown = set(named[1].split(",")) - extras
            if unknown:
                return f"pip install: no extra {', '.join(sorted(unknown))} in pyproject.toml"
    return None


def _compiles(code: str, where: str) -> str | None:
    try:
        compile(code, where, "exec")
    except SyntaxError as error:
        return f"{where}: {error}"
    return None


def _without_comment(line: str) -> str:
    """`line` without its shell comment (a `#` that starts a word outside quotes)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line
