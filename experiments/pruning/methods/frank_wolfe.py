"""Frank-Wolfe mask selection on the convex relaxation of the per-row cardinality constraint.

Relax the 0/1 keep-mask M to [0, 1] with the pattern's counts as linear constraints (every row,
every N:M group, or the whole layer keeps its number of weights) and minimise the convex
quadratic reconstruction error of the kept weights (weights unchanged):

    f(M) = sum_i r_iᵀ G r_i,   r_i = w_i ⊙ (1 - m_i),   ∇f(M) = -2 W ⊙ (R G).

The linear minimisation oracle over that set is a top-k per row (group, layer) of -∇f, taken from
`experiments.optimization.frank_wolfe.RowCardinalitySet`. The step is the exact line search of the
quadratic. The relaxed solution is rounded to a feasible mask by keeping the largest entries of M
(ties broken by the Wanda score).
"""

from __future__ import annotations

import torch

from experiments.optimization.frank_wolfe import RowCardinalitySet
from experiments.pruning.masks import Pattern, mask_from_scores
from experiments.pruning.methods import PruneResult, wanda


def _lmo(gradient: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """The vertex (a feasible 0/1 mask) minimising <gradient, S>."""
    rows, cols = gradient.shape
    if pattern.kind == "row":
        keep = cols - pattern.pruned_per_row(cols)
        return RowCardinalitySet(rows, cols, keep).lmo(gradient)
    if pattern.kind == "layer":
        keep = gradient.numel() - int(gradient.numel() * pattern.sparsity)
        return (
            RowCardinalitySet(1, gradient.numel(), keep)
            .lmo(gradient.reshape(1, -1))
            .view(rows, cols)
        )
    groups = gradient.reshape(-1, pattern.m)
    return RowCardinalitySet(groups.shape[0], pattern.m, pattern.n).lmo(groups).view(rows, cols)


def relax(
    W: torch.Tensor, G: torch.Tensor, pattern: Pattern, M0: torch.Tensor, iters: int
) -> tuple[torch.Tensor, list[float], list[float]]:
    """Frank-Wolfe from the feasible M0; returns the relaxed mask, objectives and FW gaps."""
    W = W.to(G.dtype)
    M = M0.to(G.dtype).clone()
    objectives: list[float] = []
    gaps: list[float] = []
    for _ in range(iters):
        RG = (W * (1 - M)) @ G
        gradient = -2 * W * RG
        direction = _lmo(gradient, pattern) - M
        gap = float(-(gradient * direction).sum())
        objectives.append(float((W * (1 - M) * RG).sum()))
        gaps.append(gap)
        if gap <= 0:
            break
        # f(M + γD) = f(M) - 2γ <W⊙D, R G> + γ² <W⊙D, (W⊙D) G>
        step_dir = W * direction
        curvature = float((step_dir @ G * step_dir).sum())
        slope = float((step_dir * RG).sum())
        gamma = 1.0 if curvature <= 0 else min(1.0, max(0.0, slope / curvature))
        M += gamma * direction
    return M, objectives, gaps


def prune(W: torch.Tensor, G: torch.Tensor, pattern: Pattern, iters: int = 200) -> PruneResult:
    start = wanda.prune(W, G, pattern).mask
    M, objectives, gaps = relax(W, G, pattern, start, iters)
    tie_break = wanda.scores(W, G).to(M.dtype)
    tie_break = tie_break / tie_break.max().clamp_min(torch.finfo(M.dtype).tiny)
    mask = mask_from_scores(M + 1e-6 * tie_break, pattern)
    info = {
        "iterations": len(gaps),
        "first_gap": gaps[0] if gaps else 0.0,
        "last_gap": gaps[-1] if gaps else 0.0,
        "relaxed_objective": objectives[-1] if objectives else 0.0,
    }
    return PruneResult(W * mask, mask, info)
