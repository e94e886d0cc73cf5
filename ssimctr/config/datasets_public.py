"""Schemas of the public academic datasets (KuaiRand, MovieLens, Douban, MIND) in the dataset group."""
from __future__ import annotations

PUBLIC_SCHEMAS: dict[str, type] = {}
