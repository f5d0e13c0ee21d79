"""Magnitude pruning: drop the weights with the smallest |W_ij| (ignores the inputs)."""

from __future__ import annotations

import torch

from experiments.pruning.masks import Pattern, mask_from_scores
from experiments.pruning.methods import PruneResult


def scores(W: torch.Tensor) -> torch.Tensor:
    return W.abs()


def prune(W: torch.Tensor, G: torch.Tensor, pattern: Pattern) -> PruneResult:
    mask = mask_from_scores(scores(W), pattern)
    return PruneResult(W * mask, mask)
