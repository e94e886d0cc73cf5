"""Schemas of the Alibaba / Ant Group datasets (Ali-CCP, AliMama, AntM2C) in the dataset group."""
from __future__ import annotations

ALIBABA_SCHEMAS: dict[str, type] = {}
