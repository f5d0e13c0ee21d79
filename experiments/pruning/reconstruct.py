"""Local reconstruction: retrain the kept weights of a unit so its outputs match the dense unit.

A unit is one matrix, one attention/MLP part, or one decoder block. It gets the same inputs
as during calibration (the pruned model's activations) and is trained with AdamW (linear warmup,
then constant) for a fixed number of epochs on the MSE to the dense unit's outputs. Pruned
weights stay exactly zero: their gradients are masked and the mask is re-applied after each step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from experiments.pruning.model import Prunable


class ReconstructionSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(5, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_fraction: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)


@dataclass
class Sample:
    """One calibration chunk for a unit: how to call it and what the dense unit returned."""

    forward: Callable[[], torch.Tensor]
    target: torch.Tensor


def reconstruct(
    matrices: Sequence[Prunable],
    masks: Sequence[torch.Tensor],
    samples: Sequence[Sample],
    settings: ReconstructionSettings,
) -> list[float]:
    """Train the masked weights; returns the mean loss of each epoch."""
    params = [item.parameter for item in matrices]
    stored_masks = [
        item.storage_mask(mask).to(param.dtype)
        for item, mask, param in zip(matrices, masks, params, strict=True)
    ]
    previous = [param.requires_grad for param in params]
    for param in params:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    total = settings.epochs * len(samples)
    warmup = max(1, int(settings.warmup_fraction * total))
    losses: list[float] = []
    step = 0
    with torch.enable_grad():
        for _ in range(settings.epochs):
            epoch_loss = 0.0
            for sample in samples:
                for group in optimizer.param_groups:
                    group["lr"] = settings.lr * min(1.0, (step + 1) / warmup)
                loss = torch.nn.functional.mse_loss(sample.forward().float(), sample.target.float())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                for param, mask in zip(params, stored_masks, strict=True):
                    if param.grad is not None:
                        param.grad.mul_(mask)
                optimizer.step()
                with torch.no_grad():
                    for param, mask in zip(params, stored_masks, strict=True):
                        param.mul_(mask)
                epoch_loss += loss.item()
                step += 1
            losses.append(epoch_loss / len(samples))
    for param, flag in zip(params, previous, strict=True):
        param.requires_grad_(flag)
        param.grad = None
    return losses
