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

# The unstructured pattern each method's paper (and its reference code) uses. "row": every output
# row loses the same number of weights; "layer": one count for the layer (SparseGPT: chosen per
# block of columns over all rows of the block). The other pattern stays available by name.
PAPER_PATTERN: dict[str, str] = {
    "magnitude": "layer",  # one threshold per layer (Han et al., 2015; Wanda's magnitude baseline)
    "wanda": "row",  # scores compared per output (Sun et al., 2023)
    "ria": "row",  # per output, as Wanda (Zhang et al., 2024)
    "sparsegpt": "layer",  # mask per 128-column block over the whole block (Frantar & Alistarh)
    "sparseswaps": "row",  # exact swaps within a row keep its count
    "frankwolfe": "row",  # the relaxation's constraint is a per-row cardinality
}


def paper_pattern(method: str, pattern: str) -> str:
    """`pattern`, with "unstructured" replaced by the named method's paper pattern."""
    if pattern != "unstructured":
        return pattern
    if method not in PAPER_PATTERN:
        raise ValueError(
            f"unknown pruning method {method!r}; choose one of {', '.join(METHOD_NAMES)}"
        )
    return PAPER_PATTERN[method]


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
