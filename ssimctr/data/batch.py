"""A batch of prepared rows as tensors: the contract between data, models and training."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class Batch:
    """A batch of B rows.

    cat:      [B, F] long, categorical ids (0 = OOV/missing), F = len(feature_map.categorical)
    num:      [B, D] float, standardized numeric fields (D may be 0)
    scenario: [B] long, scenario index in 0..K-1
    label:    [B] float, 0.0 or 1.0
    row_id:   [B] long, the prepared dataset's stable row id
    text:     [B, T] long, per encoded text / image-vector field the row's index into its table
              (0 = empty text or missing vector; ssimctr.features.encoded), or None (ID-only)
    """

    cat: torch.Tensor
    num: torch.Tensor
    scenario: torch.Tensor
    label: torch.Tensor
    row_id: torch.Tensor
    text: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.label.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on `device` (a no-op where it already lives there)."""
        return Batch(**{f.name: _move(getattr(self, f.name), device) for f in fields(self)})

    def slice(self, start: int, stop: int) -> Batch:
        """Rows start..stop as views (no copy)."""
        return Batch(**{f.name: _apply(getattr(self, f.name), lambda t: t[start:stop]) for f in fields(self)})

    def take(self, index: torch.Tensor) -> Batch:
        """Rows at `index` (a copy, in that order)."""
        return Batch(
            **{f.name: _apply(getattr(self, f.name), lambda t: t.index_select(0, index)) for f in fields(self)}
        )

    def of_scenario(self, scenario: int) -> Batch:
        """The rows that belong to `scenario` (a copy, in their order)."""
        return self.take(torch.nonzero(self.scenario == scenario).squeeze(1))

    @staticmethod
    def concat(batches: list[Batch]) -> Batch:
        """The rows of `batches`, one after the other."""
        return Batch(
            **{
                f.name: _apply(
                    getattr(batches[0], f.name), lambda _, n=f.name: torch.cat([getattr(b, n) for b in batches])
                )
                for f in fields(Batch)
            }
        )


def _apply(t: torch.Tensor | None, fn) -> torch.Tensor | None:
    return None if t is None else fn(t)


def _move(t: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if t is None else t.to(device, non_blocking=True)
