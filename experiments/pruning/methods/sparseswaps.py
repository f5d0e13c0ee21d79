"""SparseSwaps-style mask refinement: exact 1-swaps per row that lower the reconstruction error.

The weights stay as they are; only the mask changes. Row i has residual r = w ⊙ (1 - m) and
error e = rᵀ G r. Swapping a kept weight p (pruned afterwards) with a pruned weight u (restored)
changes the residual by Δr = w_p e_p - w_u e_u, so with c = G r the change in error is

    Δe(p, u) = 2 w_p c_p + w_p² G_pp  -  2 w_u c_u + w_u² G_uu  -  2 w_p w_u G_pu.

Every row takes its best swap when Δe < 0 (rows are independent, so all rows move at once),
c is updated in O(in) per swap, and the loop stops when no row has an improving swap (a 1-swap
local optimum) or after `max_swaps` rounds. For N:M only swaps inside one group of M are
allowed, which keeps the pattern; for row and layer patterns a swap keeps every row's count.
"""

from __future__ import annotations

from typing import Any

import torch

from experiments.pruning.masks import Pattern
from experiments.pruning.methods import PruneResult

# Elements of one (rows x in x in) chunk of swap changes: bounds the memory of a round.
CHUNK_ELEMENTS = 1 << 25


def swap_deltas(w: torch.Tensor, mask: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Δe(p, u) for all pairs of one row (in x in); +inf where p is not kept or u is not pruned."""
    c = G @ (w * ~mask)
    diag = torch.diagonal(G)
    prune_gain = torch.where(mask, 2 * w * c + w**2 * diag, torch.inf)
    restore_gain = torch.where(~mask, -2 * w * c + w**2 * diag, torch.inf)
    return prune_gain[:, None] + restore_gain[None, :] - 2 * w[:, None] * G * w[None, :]


def _best_swaps_dense(
    W: torch.Tensor, mask: torch.Tensor, C: torch.Tensor, G: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best (Δe, p, u) per row among all kept/pruned pairs of the row."""
    rows, cols = W.shape
    diag = torch.diagonal(G)
    best = torch.empty(rows, dtype=W.dtype, device=W.device)
    best_p = torch.empty(rows, dtype=torch.long, device=W.device)
    best_u = torch.empty(rows, dtype=torch.long, device=W.device)
    chunk = max(1, CHUNK_ELEMENTS // (cols * cols))
    for lo in range(0, rows, chunk):
        w, m, c = W[lo : lo + chunk], mask[lo : lo + chunk], C[lo : lo + chunk]
        prune_gain = torch.where(m, 2 * w * c + w**2 * diag, torch.inf)
        restore_gain = torch.where(~m, -2 * w * c + w**2 * diag, torch.inf)
        kept_w = torch.where(m, w, 0)
        pruned_w = torch.where(m, 0, w)
        delta = prune_gain[:, :, None] + restore_gain[:, None, :]
        delta -= 2 * kept_w[:, :, None] * G[None] * pruned_w[:, None, :]
        values, flat = delta.view(delta.shape[0], -1).min(1)
        best[lo : lo + chunk] = values
        best_p[lo : lo + chunk] = flat // cols
        best_u[lo : lo + chunk] = flat % cols
    return best, best_p, best_u


def _best_swaps_nm(
    W: torch.Tensor, mask: torch.Tensor, C: torch.Tensor, G: torch.Tensor, m_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best (Δe, p, u) per row among pairs inside one group of M consecutive inputs."""
    rows, cols = W.shape
    groups = cols // m_size
    diag = torch.diagonal(G)
    idx = torch.arange(cols, device=W.device).view(groups, m_size)
    G_blocks = G[idx[:, :, None], idx[:, None, :]]  # (groups, M, M): the diagonal blocks of G
    prune_gain = torch.where(mask, 2 * W * C + W**2 * diag, torch.inf).view(rows, groups, m_size)
    restore_gain = torch.where(~mask, -2 * W * C + W**2 * diag, torch.inf).view(
        rows, groups, m_size
    )
    kept_w = torch.where(mask, W, 0).view(rows, groups, m_size)
    pruned_w = torch.where(mask, 0, W).view(rows, groups, m_size)
    delta = prune_gain[..., :, None] + restore_gain[..., None, :]
    delta -= 2 * kept_w[..., :, None] * G_blocks[None] * pruned_w[..., None, :]
    values, flat = delta.view(rows, -1).min(1)
    group, within = flat // (m_size * m_size), flat % (m_size * m_size)
    return values, group * m_size + within // m_size, group * m_size + within % m_size


def refine(
    W: torch.Tensor,
    G: torch.Tensor,
    mask: torch.Tensor,
    pattern: Pattern,
    max_swaps: int | None = None,
    rel_tol: float = 1e-9,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Improve `mask` by 1-swaps; returns the new mask and statistics. W is not modified.

    A swap is taken only when it lowers the row's error by more than rel_tol times the row's
    error, so rounding cannot make the error grow. max_swaps=None runs to a local optimum.
    """
    W = W.to(G.dtype)
    mask = mask.clone()
    R = W * ~mask
    C = R @ G  # row i holds c_i = G r_i (G is symmetric)
    row_error = (R * C).sum(1)
    initial = float(row_error.sum())
    swaps = torch.zeros(W.shape[0], dtype=torch.long, device=W.device)
    active = torch.ones(W.shape[0], dtype=torch.bool, device=W.device)
    rounds = 0
    while bool(active.any()) and (max_swaps is None or rounds < max_swaps):
        rows = active.nonzero().squeeze(1)
        if pattern.kind == "nm":
            delta, p, u = _best_swaps_nm(W[rows], mask[rows], C[rows], G, pattern.m)
        else:
            delta, p, u = _best_swaps_dense(W[rows], mask[rows], C[rows], G)
        improving = delta < -rel_tol * row_error[rows].clamp_min(torch.finfo(W.dtype).tiny)
        active[rows[~improving]] = False
        rows, p, u, delta = rows[improving], p[improving], u[improving], delta[improving]
        if rows.numel() == 0:
            break
        w_p, w_u = W[rows, p], W[rows, u]
        mask[rows, p] = False
        mask[rows, u] = True
        C[rows] += w_p[:, None] * G[p] - w_u[:, None] * G[u]
        row_error[rows] += delta
        swaps[rows] += 1
        rounds += 1
    final = float(((W * ~mask) @ G * (W * ~mask)).sum())
    info = {
        "initial_error": initial,
        "final_error": final,
        "swaps": int(swaps.sum()),
        "max_swaps_in_a_row": int(swaps.max()) if swaps.numel() else 0,
        "rounds": rounds,
        "local_optimum": not bool(active.any()),
    }
    return mask, info


def prune(
    W: torch.Tensor,
    G: torch.Tensor,
    pattern: Pattern,
    init: str = "wanda",
    max_swaps: int | None = None,
) -> PruneResult:
    """Start from another method's mask (Wanda by default) and refine it with 1-swaps."""
    from experiments.pruning.methods import registry

    if init == "sparseswaps" or init not in registry():
        raise ValueError(f"sparseswaps init must be another method's name, got {init!r}")
    start = registry()[init](W, G, pattern)
    mask, info = refine(W, G, start.mask, pattern, max_swaps=max_swaps)
    info["init"] = init
    return PruneResult(W * mask, mask, info)
