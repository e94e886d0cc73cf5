"""Schemas of the multi-scenario models in the backbone group (see ssimctr.config.backbones)."""
from __future__ import annotations

MSR_SCHEMAS: dict[str, type] = {}
