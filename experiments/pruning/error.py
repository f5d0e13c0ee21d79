"""The layer-wise reconstruction error that every method tries to keep small.

X (tokens x in) are the layer's calibration inputs, G = Xᵀ X (in x in). Pruning W (out x in)
to Ŵ changes the outputs X Wᵀ by X Rᵀ with R = W - Ŵ, and

    error(Ŵ) = ||X Rᵀ||_F² = sum_i r_iᵀ G r_i        (r_i: row i of R)
    relative error = error(Ŵ) / ||X Wᵀ||_F² = error / sum_i w_iᵀ G w_i
"""

from __future__ import annotations

import torch


def row_errors(W: torch.Tensor, W_pruned: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    R = (W - W_pruned).to(G.dtype)
    return ((R @ G) * R).sum(1)


def reconstruction_error(W: torch.Tensor, W_pruned: torch.Tensor, G: torch.Tensor) -> float:
    return float(row_errors(W, W_pruned, G).sum())


def relative_error(W: torch.Tensor, W_pruned: torch.Tensor, G: torch.Tensor) -> float:
    dense = float(row_errors(W, torch.zeros_like(W), G).sum())
    return reconstruction_error(W, W_pruned, G) / max(dense, torch.finfo(G.dtype).tiny)
