"""Token streams: training batches, seeded calibration samples, held-out perplexity."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def random_windows(
    tokens: np.ndarray, count: int, length: int, generator: np.random.Generator
) -> torch.Tensor:
    """`count` windows of `length` tokens starting at uniformly random offsets."""
    import torch

    if len(tokens) <= length:
        raise ValueError(f"a split of {len(tokens)} tokens is too short for windows of {length}")
    starts = generator.integers(0, len(tokens) - length, size=count)
    return torch.from_numpy(np.stack([tokens[s : s + length] for s in starts]).astype(np.int64))


def calibration_batch(
    train_tokens: np.ndarray, n_samples: int, seq_len: int, seed: int
) -> torch.Tensor:
    """N calibration sequences of length L drawn from the training split, reproducible by seed."""
    return random_windows(train_tokens, n_samples, seq_len, np.random.default_rng(seed))


def perplexity(
    model: torch.nn.Module,
    tokens: np.ndarray,
    seq_len: int,
    batch_size: int = 8,
    max_windows: int | None = None,
) -> float:
    """exp(mean next-token NLL) over non-overlapping windows of `seq_len` tokens of a held-out split."""
    import torch

    n_windows = len(tokens) // seq_len
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows == 0:
        raise ValueError(f"the split has {len(tokens)} tokens, fewer than one window of {seq_len}")
    windows = torch.from_numpy(tokens[: n_windows * seq_len].astype(np.int64)).view(
        n_windows, seq_len
    )
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, n_windows, batch_size):
            batch = windows[start : start + batch_size].to(device)
            logits = model(input_ids=batch).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
            )
            total_nll += nll.item()
            total_tokens += batch[:, 1:].numel()
    model.train(was_training)
    return math.exp(total_nll / total_tokens)
