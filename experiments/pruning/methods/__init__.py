"""One module per pruning method. Each takes one layer's weight W (out x in), the Gram matrix
G = Xᵀ X of its calibration inputs X (tokens x in) and a Pattern, and returns a PruneResult."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from experiments.pruning.masks import Pattern


@dataclass
class PruneResult:
    weight: torch.Tensor  # the pruned (possibly updated) weight, zero where mask is False
    mask: torch.Tensor  # bool, True = kept
    info: dict[str, Any] = field(default_factory=dict)


Method = Callable[..., PruneResult]


def registry() -> dict[str, Method]:
    from experiments.pruning.methods import (
        frank_wolfe,
        magnitude,
        ria,
        sparsegpt,
        sparseswaps,
        wanda,
    )

    return {
        "magnitude": magnitude.prune,
        "wanda": wanda.prune,
        "ria": ria.prune,
        "sparsegpt": sparsegpt.prune,
        "sparseswaps": sparseswaps.prune,
        "frankwolfe": frank_wolfe.prune,
    }


METHOD_NAMES = ("magnitude", "wanda", "ria", "sparsegpt", "sparseswaps", "frankwolfe")


def prune_layer(
    method: str, W: torch.Tensor, G: torch.Tensor, pattern: Pattern, **options: Any
) -> PruneResult:
    methods = registry()
    if method not in methods:
        raise ValueError(
            f"unknown pruning method {method!r}; choose one of {', '.join(METHOD_NAMES)}"
        )
    rows, cols = W.shape
    if G.shape != (cols, cols):
        raise ValueError(
            f"G must be {cols}x{cols} for a weight of shape {tuple(W.shape)}, got {tuple(G.shape)}"
        )
    pattern.check_shape(rows, cols)
    return methods[method](W, G, pattern, **options)
