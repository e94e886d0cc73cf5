"""Every command the README and the docs show composes or parses (tests/doc_commands.py says how each kind
is checked, without running it), and every Python block compiles."""

from __future__ import annotations

import re

import pytest
from doc_commands import REPO, Unavailable, check, doc_commands, python_blocks

COMMANDS = doc_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) > 40
    assert any(c.text.startswith("make run") for c in COMMANDS) and any(c.text == "make test" for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_every_command_of_the_docs_checks(command):
    try:
        problem = check(command.text)
    except Unavailable as missing:
        pytest.skip(f"needs a Hydra plugin of an extra: {missing}")
    assert problem is None, f"{command.where}: {problem}"


@pytest.mark.parametrize(("where", "source"), python_blocks(), ids=[where for where, _ in python_blocks()])
def test_every_python_block_of_the_docs_compiles(where, source):
    compile(source, where, "exec")


def test_the_readme_is_short_and_every_link_of_it_resolves():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 200
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"^[a-z]+://", link)]
    assert len(local) > 10
    assert [link for link in local if not (REPO / link).is_file()] == []
