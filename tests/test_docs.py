"""The repository stands alone: every `docs/methods.md §x.y` cited in code, config or docs exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CITED = re.compile(r"docs/methods\.md ((?:§[0-9.]+[0-9](?:[–,] ?)?)+)")


def cited_sections() -> set[str]:
    found = set()
    for path in [
        *REPO.glob("ssimctr/**/*.py"),
        *REPO.glob("conf/**/*.yaml"),
        *REPO.glob("tests/**/*.py"),
        *REPO.glob("bench/*.py"),
        REPO / "README.md",
        *REPO.glob("docs/**/*.md"),
    ]:
        for match in CITED.finditer(path.read_text()):
            found.update(re.findall(r"§([0-9.]*[0-9])", match.group(1)))
    return found


def test_every_cited_section_of_docs_methods_exists():
    headings = set(re.findall(r"^#{2,3} ([0-9.]*[0-9])\.? ", (REPO / "docs/methods.md").read_text(), re.M))
    cited = cited_sections()
    assert len(cited) > 15
    assert not cited - headings


def test_nothing_points_outside_the_repository():
    offenders = [
        str(path.relative_to(REPO))
        for path in [
            *REPO.glob("ssimctr/**/*.py"),
            *REPO.glob("conf/**/*.yaml"),
            REPO / "README.md",
            *REPO.glob("docs/**/*.md"),
        ]
        if re.search(r"\.\./shared|(?<!docs/)methods\.md §", path.read_text())
    ]
    assert not offenders
