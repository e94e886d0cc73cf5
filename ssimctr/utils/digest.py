"""Stable digests for content-addressed caches: of JSON-able content, and of ssimctr's own source."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # ssimctr/


def json_digest(content: object) -> str:
    """SHA-256 (hex) of `content` as JSON with sorted keys (values JSON cannot hold as their str)."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def source_digest(packages: Sequence[str]) -> str:
    """A hash (16 hex digits) of the Python source of ssimctr's `packages` (e.g. "ssim", "models")."""
    digest = hashlib.sha256()
    for package in packages:
        for file in sorted((PACKAGE_ROOT / package).rglob("*.py")):
            digest.update(file.relative_to(PACKAGE_ROOT).as_posix().encode() + file.read_bytes())
    return digest.hexdigest()[:16]
