"""Train a small causal LM on the corpus: optimizer, learning-rate schedule, loss curves."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from experiments.lm.models import Arch, build_model, count_parameters, shape_for

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from experiments.lm.tokenizer import ByteBPE

Schedule = Literal["constant", "cosine", "wsd"]
OptimizerFactory = Callable[
    [Iterable["torch.nn.Parameter"], "TrainConfig"], "torch.optim.Optimizer"
]


class TrainConfig(BaseModel):
    """Everything that determines a trained model; its hash names the cache entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    arch: Arch = "llama"
    size: str = "tiny"
    optimizer: str = "adamw"
    lr: float = Field(3e-3, gt=0)
    schedule: Schedule = "cosine"
    warmup_steps: int = Field(20, ge=0)
    decay_fraction: float = Field(
        0.2, gt=0, le=1, description="wsd: last fraction of steps that decays"
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    momentum: float = Field(0.9, ge=0, lt=1)
    grad_clip: float | None = Field(1.0, gt=0)
    batch_size: int = Field(16, ge=1)
    seq_len: int | None = Field(None, ge=8, description="defaults to the size's context length")
    steps: int = Field(200, ge=1)
    eval_every: int = Field(50, ge=1)
    eval_windows: int = Field(32, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        shape = shape_for(self.size)
        if self.seq_len is not None and self.seq_len > shape.context:
            raise ValueError(
                f"seq_len {self.seq_len} exceeds the {self.size} model's context {shape.context}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}"
            )
        return self

    @property
    def context(self) -> int:
        return self.seq_len or shape_for(self.size).context

    def config_hash(self, corpus_fingerprint: str) -> str:
        payload = self.model_dump_json() + corpus_fingerprint
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


class TrainResult(BaseModel):
    config: TrainConfig
    config_hash: str
    n_params: int
    train_loss: list[tuple[int, float]]
    val_loss: list[tuple[int, float]]
    final_val_loss: float
    final_val_perplexity: float
    lr: list[tuple[int, float]]
    seconds: float
    tokens_seen: int
    diverged: bool = False


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the peak learning rate at `step` (0-based): linear warmup, then the schedule."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    floor = config.min_lr_ratio
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "cosine":
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    decay_start = config.steps - round(config.decay_fraction * config.steps)
    if step < decay_start:
        return 1.0
    progress = (step - decay_start) / max(1, config.steps - decay_start)
    return 1.0 - (1.0 - floor) * progress


def _adamw(params: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    import torch

    return torch.optim.AdamW(
        params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )


def _adam(params: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    import torch

    return torch.optim.Adam(params, lr=config.lr, betas=config.betas)


def _sgd(params: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    import torch

    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


# Other studies register their optimizers here (name -> factory) before building a TrainConfig.
OPTIMIZERS: dict[str, OptimizerFactory] = {"adamw": _adamw, "adam": _adam, "sgd": _sgd}


def _param_groups(model: PreTrainedModel, weight_decay: float) -> list[dict[str, object]]:
    """Weight decay on matrices only; norms, biases and embeddings' 1-d params are not decayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def evaluate_loss(
    model: PreTrainedModel, tokens: np.ndarray, seq_len: int, max_windows: int
) -> float:
    from experiments.lm.data import perplexity

    return math.log(perplexity(model, tokens, seq_len, max_windows=max_windows))


def train(
    config: TrainConfig,
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    tokenizer: ByteBPE,
    corpus_fingerprint: str,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> tuple[PreTrainedModel, TrainResult]:
    """Train from scratch; return the model and its loss curves (train every step, val every eval_every)."""
    import torch

    from experiments.lm.data import random_windows

    shape = shape_for(config.size)
    if tokenizer.vocab_size > shape.vocab:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids, model vocab is {shape.vocab}")
    torch.manual_seed(config.seed)
    model = build_model(config.arch, shape, seed=config.seed)
    model.to(device)  # type: ignore[arg-type]  # transformers types .to as a wrapped method
    model.train()
    groups = _param_groups(model, config.weight_decay)
    optimizer = OPTIMIZERS[config.optimizer](groups, config)  # type: ignore[arg-type]
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    generator = np.random.default_rng(config.seed)
    seq_len = config.context
    train_curve: list[tuple[int, float]] = []
    val_curve: list[tuple[int, float]] = []
    lr_curve: list[tuple[int, float]] = []
    diverged = False
    started = time.perf_counter()
    for step in range(config.steps):
        factor = lr_factor(step, config)
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * factor
        batch = random_windows(train_tokens, config.batch_size, seq_len, generator).to(device)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        value = float(loss.item())
        train_curve.append((step, value))
        lr_curve.append((step, config.lr * factor))
        if not math.isfinite(value):
            diverged = True
            break
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            val = evaluate_loss(model, val_tokens, seq_len, config.eval_windows)
            val_curve.append((step + 1, val))
            if log:
                log(
                    f"step {step + 1}/{config.steps} train {value:.3f} val {val:.3f} lr {config.lr * factor:.2e}"
                )
    final = val_curve[-1][1] if val_curve and not diverged else float("inf")
    model.eval()
    result = TrainResult(
        config=config,
        config_hash=config.config_hash(corpus_fingerprint),
        n_params=count_parameters(model),
        train_loss=train_curve,
        val_loss=val_curve,
        final_val_loss=final,
        final_val_perplexity=math.exp(final) if math.isfinite(final) else float("inf"),
        lr=lr_curve,
        seconds=time.perf_counter() - started,
        tokens_seen=len(train_curve) * config.batch_size * seq_len,
        diverged=diverged,
    )
    return model, result


# The trained models the pruning experiments use by name (`--model tiny|mini|small`).
PRESETS: dict[str, dict[str, object]] = {
    "tiny": {"size": "tiny"},
    "mini": {"size": "mini", "steps": 600, "batch_size": 16, "warmup_steps": 30, "eval_every": 200},
    "small": {
        "size": "small",
        "steps": 3000,
        "batch_size": 32,
        "lr": 1e-3,
        "warmup_steps": 100,
        "eval_every": 500,
    },
}


def preset(size: str) -> TrainConfig:
    if size not in PRESETS:
        raise ValueError(f"no training preset for {size!r}; choose one of {sorted(PRESETS)}")
    return TrainConfig.model_validate(PRESETS[size])
