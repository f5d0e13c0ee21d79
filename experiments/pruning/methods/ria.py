"""RIA (Zhang et al., 2024): relative importance times activations.

S_ij = (|W_ij| / sum_k |W_ik| + |W_ij| / sum_k |W_kj|) * ||X_j||_2 ^ a,   a = 0.5 by default:
a weight matters when it is large relative to both its output row and its input column.
"""

from __future__ import annotations

import torch

from experiments.pruning.masks import Pattern, mask_from_scores
from experiments.pruning.methods import PruneResult


def scores(W: torch.Tensor, G: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    A = W.abs()
    tiny = torch.finfo(A.dtype).tiny
    relative = A / A.sum(1, keepdim=True).clamp_min(tiny) + A / A.sum(0, keepdim=True).clamp_min(
        tiny
    )
    feature_norms = torch.diagonal(G).clamp_min(0).sqrt().to(W.dtype)
    return relative * feature_norms[None, :] ** alpha


def prune(W: torch.Tensor, G: torch.Tensor, pattern: Pattern, alpha: float = 0.5) -> PruneResult:
    mask = mask_from_scores(scores(W, G, alpha), pattern)
    return PruneResult(W * mask, mask)
