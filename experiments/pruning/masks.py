"""Sparsity patterns and masks. A mask is a bool tensor shaped like W (out x in); True = kept.

Patterns:
  row    every output row keeps the same number of weights (prunes int(in * sparsity))
  layer  the whole matrix prunes int(out * in * sparsity) weights, rows may differ
  N:M    in every group of M consecutive inputs of a row, N weights are kept (2:4, 4:8)

Ties: among equal scores the weight with the lower index (within the row, the flattened layer or
the group) is pruned first, as a stable ascending sort would order them (Wanda's and SparseGPT's
reference code sort with `torch.sort`). `torch.topk` makes no such promise, so it is not used.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator


class Pattern(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["row", "layer", "nm"]
    sparsity: float = Field(ge=0, lt=1)
    n: int = 0
    m: int = 0

    @model_validator(mode="after")
    def _check(self) -> Pattern:
        if self.kind == "nm" and not 0 < self.n < self.m:
            raise ValueError(f"N:M needs 0 < N < M, got {self.n}:{self.m}")
        return self

    @classmethod
    def parse(cls, pattern: str, sparsity: float | None = None) -> Pattern:
        """'row' | 'layer' (with a sparsity) or 'N:M' such as '2:4' (sparsity is then 1 - N/M)."""
        if ":" in pattern:
            try:
                n, m = (int(part) for part in pattern.split(":"))
            except ValueError as exc:
                raise ValueError(f"pattern {pattern!r} is not N:M with integers, e.g. 2:4") from exc
            return cls(kind="nm", sparsity=1 - n / m, n=n, m=m)
        if pattern not in ("row", "layer"):
            raise ValueError(f"unknown pattern {pattern!r}; use row, layer or N:M such as 2:4")
        if sparsity is None:
            raise ValueError(f"pattern {pattern!r} needs a sparsity in [0, 1)")
        return cls(kind=pattern, sparsity=sparsity)

    def label(self) -> str:
        return f"{self.n}:{self.m}" if self.kind == "nm" else f"{self.kind}-{self.sparsity:g}"

    def pruned_per_row(self, cols: int) -> int:
        """For row patterns: how many of the first `cols` inputs of a row are pruned."""
        return int(cols * self.sparsity)

    def check_shape(self, rows: int, cols: int) -> None:
        if self.kind == "nm" and cols % self.m:
            raise ValueError(
                f"N:M pattern {self.n}:{self.m} needs in_features divisible by {self.m}, got {cols}"
            )


def lowest(scores: torch.Tensor, k: int, dim: int = -1) -> torch.Tensor:
    """Indices of the k smallest entries along `dim`; among equal entries the lower index first."""
    return torch.sort(scores, dim=dim, stable=True).indices.narrow(dim, 0, k)


def mask_from_scores(scores: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """Keep the highest-scoring weights under `pattern` (exact counts; see the module on ties)."""
    rows, cols = scores.shape
    pattern.check_shape(rows, cols)
    mask = torch.ones_like(scores, dtype=torch.bool)
    if pattern.kind == "row":
        k = pattern.pruned_per_row(cols)
        if k:
            pruned = lowest(scores, k, dim=1)
            mask.scatter_(1, pruned, False)
    elif pattern.kind == "layer":
        k = int(scores.numel() * pattern.sparsity)
        if k:
            pruned = lowest(scores.flatten(), k)
            mask.view(-1)[pruned] = False
    else:
        groups = scores.reshape(rows, cols // pattern.m, pattern.m)
        pruned = lowest(groups, pattern.m - pattern.n, dim=2)
        mask.view(rows, cols // pattern.m, pattern.m).scatter_(2, pruned, False)
    return mask


def satisfies(mask: torch.Tensor, pattern: Pattern) -> bool:
    """Whether `mask` has exactly the pruned counts `pattern` asks for."""
    rows, cols = mask.shape
    if pattern.kind == "row":
        return bool(torch.all((~mask).sum(1) == pattern.pruned_per_row(cols)))
    if pattern.kind == "layer":
        return int((~mask).sum()) == int(mask.numel() * pattern.sparsity)
    kept = mask.reshape(rows, cols // pattern.m, pattern.m).sum(2)
    return bool(torch.all(kept == pattern.n))
