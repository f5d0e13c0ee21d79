"""SparseGPT (Frantar & Alistarh, 2023): prune columns left to right, each time updating the
not-yet-processed weights of the row to compensate (Optimal Brain Surgeon on H = G = Xᵀ X).

For column q with F = {q, ..., in-1} the columns still free, pruning w_q changes the row by
    δ_F = -(w_q / [H_F⁻¹]_qq) [H_F⁻¹]_{q,F}
and its saliency is w_q² / [H_F⁻¹]_qq. The rows of the upper Cholesky factor U of H⁻¹ hold all
these at once: U_qF = [H_F⁻¹]_{q,F} / sqrt([H_F⁻¹]_qq). Columns are processed in blocks of
`blocksize`; inside a block updates are applied column by column, and to the columns after the
block once per block (lazy batched update). The mask is chosen per block (per N:M group for N:M)
from the saliency at the moment the block starts.
"""

from __future__ import annotations

import torch

from experiments.pruning.masks import Pattern, lowest
from experiments.pruning.methods import PruneResult


def inverse_hessian_cholesky(G: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor of (G + damp * mean(diag G) * I)⁻¹, and the dead-input indicator.

    Inputs that never fire (G_jj = 0) get H_jj = 1 so H stays invertible; their weights are
    irrelevant to the outputs and are pruned first.
    """
    H = G.clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1
    idx = torch.arange(H.shape[0], device=H.device)
    H[idx, idx] += damp * torch.mean(torch.diagonal(H))
    L = torch.linalg.cholesky(H)
    H_inv = torch.cholesky_inverse(L)
    return torch.linalg.cholesky(H_inv, upper=True), dead


def _block_mask(scores: torch.Tensor, pattern: Pattern, start: int, end: int) -> torch.Tensor:
    """Pruned (True) entries of one block of columns [start, end) for row / layer patterns."""
    rows = scores.shape[0]
    pruned = torch.zeros_like(scores, dtype=torch.bool)
    if pattern.kind == "row":
        k = pattern.pruned_per_row(end) - pattern.pruned_per_row(start)
        if k:
            pruned.scatter_(1, lowest(scores, k, dim=1), True)
    else:
        k = int(rows * end * pattern.sparsity) - int(rows * start * pattern.sparsity)
        if k:
            pruned.view(-1)[lowest(scores.flatten(), k)] = True
    return pruned


def prune(
    W: torch.Tensor,
    G: torch.Tensor,
    pattern: Pattern,
    blocksize: int = 128,
    damp: float = 0.01,
) -> PruneResult:
    _rows, cols = W.shape
    if pattern.kind == "nm" and blocksize % pattern.m:
        raise ValueError(f"blocksize {blocksize} must be a multiple of M={pattern.m}")
    W = W.clone().to(G.dtype)
    U, dead = inverse_hessian_cholesky(G, damp)
    W[:, dead] = 0
    mask = torch.ones_like(W, dtype=torch.bool)
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        W_block = W[:, start:end].clone()
        U_block = U[start:end, start:end]
        d = torch.diagonal(U_block)
        pruned = torch.zeros_like(W_block, dtype=torch.bool)
        if pattern.kind != "nm":
            pruned = _block_mask(W_block**2 / d[None, :] ** 2, pattern, start, end)
        errors = torch.zeros_like(W_block)
        for i in range(end - start):
            if pattern.kind == "nm" and i % pattern.m == 0:
                group = W_block[:, i : i + pattern.m] ** 2 / d[None, i : i + pattern.m] ** 2
                smallest = lowest(group, pattern.m - pattern.n, dim=1)
                pruned[:, i : i + pattern.m].scatter_(1, smallest, True)
            w = W_block[:, i]
            q = torch.where(pruned[:, i], torch.zeros_like(w), w)
            err = (w - q) / d[i]
            W_block[:, i:] -= err[:, None] * U_block[i, i:][None, :]
            W_block[:, i] = q  # exact zero, not w - w/d*d rounding
            errors[:, i] = err
        W[:, start:end] = W_block
        mask[:, start:end] = ~pruned
        W[:, end:] -= errors @ U[start:end, end:]
    return PruneResult(W * mask, mask, {"damp": damp, "blocksize": blocksize})
