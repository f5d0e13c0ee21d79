"""Train the small LM of experiments/lm with one optimizer setting; write metrics.json + loss plot.

The model, data and training loop are experiments.lm's (the same model the pruning study uses);
this entry point only turns command-line options into its TrainConfig and records the curves.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

# option name on the command line -> TrainConfig field
TRAIN_OPTIONS = {
    "optimizer": "optimizer",
    "lr": "lr",
    "schedule": "schedule",
    "weight_decay": "weight_decay",
    "batch_size": "batch_size",
    "warmup": "warmup_steps",
    "decay_fraction": "decay_fraction",
    "steps": "steps",
    "seq_len": "seq_len",
    "size": "size",
    "arch": "arch",
    "eval_every": "eval_every",
    "seed": "seed",
}


def train_config(options: dict[str, Any]) -> Any:
    """A validated experiments.lm TrainConfig; raises ValueError naming the bad option."""
    from pydantic import ValidationError

    from experiments.lm.train import TrainConfig

    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(TRAIN_OPTIONS)}")
    fields = {TRAIN_OPTIONS[key]: value for key, value in options.items() if value is not None}
    try:
        return TrainConfig.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"invalid training settings {fields}: {problems}") from None


def run_train(options: dict[str, Any], out: Path, threads: int = 1) -> dict[str, Any]:
    import torch

    from experiments.lm.cache import load_data
    from experiments.lm.models import shape_for
    from experiments.lm.train import train
    from experiments.optimization.output import pyplot, write_metrics

    config = train_config(options)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    data = load_data(shape_for(config.size).vocab)
    _, result = train(config, data.train, data.val, data.tokenizer, data.fingerprint)
    metrics = {
        "experiment": "lm-train",
        "options": {key: value for key, value in options.items() if value is not None},
        "config": config.model_dump(),
        "n_params": result.n_params,
        "final_val_loss": result.final_val_loss,
        "diverged": result.diverged,
        "train_loss": result.train_loss,
        "val_loss": result.val_loss,
        "lr": result.lr,
        "train_seconds": result.seconds,
        "seconds": time.perf_counter() - start,
        "tokens_seen": result.tokens_seen,
    }
    write_metrics(out, metrics)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(*zip(*result.train_loss, strict=True), lw=0.8, label="train")
    if result.val_loss:
        ax.plot(*zip(*result.val_loss, strict=True), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"{config.optimizer}, lr {config.lr:g}, {config.schedule}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=110)
    plt.close(fig)
    return metrics
