"""`python -m experiments.lm train --size tiny ...`: train (or fetch from the cache) a small LM."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from pydantic import ValidationError

from experiments.lm.corpus import CorpusMissingError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def _root() -> None:
    """Small language models trained here on offline text."""


@app.command("train")
def train_command(
    size: str = typer.Option("tiny", help="tiny | mini | small"),
    arch: str = typer.Option("llama", help="llama | gpt2 | opt"),
    optimizer: str = typer.Option("adamw", help="adamw | adam | sgd (or a registered name)"),
    lr: float = typer.Option(3e-3),
    schedule: str = typer.Option("cosine", help="constant | cosine | wsd"),
    warmup: int = typer.Option(20, help="linear warmup steps"),
    decay_fraction: float = typer.Option(0.2, help="wsd: fraction of steps spent decaying"),
    weight_decay: float = typer.Option(0.1),
    batch_size: int = typer.Option(16),
    seq_len: int | None = typer.Option(None, help="defaults to the size's context length"),
    steps: int = typer.Option(200),
    eval_every: int = typer.Option(50),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    threads: int = typer.Option(2, help="torch CPU threads"),
    retrain: bool = typer.Option(False, help="ignore a cached model with the same config"),
    out: Path | None = typer.Option(None, help="also write train_result.json into this directory"),
) -> None:
    """Train a model (or load it from the cache) and print its validation loss as JSON."""
    import torch

    from experiments.lm.cache import trained_model
    from experiments.lm.train import TrainConfig

    torch.set_num_threads(threads)
    try:
        config = TrainConfig.model_validate(
            {
                "arch": arch,
                "size": size,
                "optimizer": optimizer,
                "lr": lr,
                "schedule": schedule,
                "warmup_steps": warmup,
                "decay_fraction": decay_fraction,
                "weight_decay": weight_decay,
                "batch_size": batch_size,
                "seq_len": seq_len,
                "steps": steps,
                "eval_every": eval_every,
                "seed": seed,
            }
        )
    except (ValidationError, ValueError) as exc:
        typer.echo(f"invalid training settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        _, _, result, path = trained_model(
            config, device, retrain, log=lambda m: typer.echo(m, err=True)
        )
    except CorpusMissingError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_result.json").write_text(result.model_dump_json(indent=1))
    summary = {
        "model_dir": str(path),
        "n_params": result.n_params,
        "final_val_loss": result.final_val_loss,
        "final_val_perplexity": result.final_val_perplexity,
        "seconds": result.seconds,
        "diverged": result.diverged,
    }
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    app()
