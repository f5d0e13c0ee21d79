"""Wanda (Sun et al., 2023): score S_ij = |W_ij| * ||X_j||_2, compared within each output row.

||X_j||_2 is the norm of input feature j over all calibration tokens, i.e. sqrt(G_jj).
No weight update: the kept weights are unchanged.
"""

from __future__ import annotations

import torch

from experiments.pruning.masks import Pattern, mask_from_scores
from experiments.pruning.methods import PruneResult


def scores(W: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    feature_norms = torch.diagonal(G).clamp_min(0).sqrt().to(W.dtype)
    return W.abs() * feature_norms[None, :]


def prune(W: torch.Tensor, G: torch.Tensor, pattern: Pattern) -> PruneResult:
    mask = mask_from_scores(scores(W, G), pattern)
    return PruneResult(W * mask, mask)
