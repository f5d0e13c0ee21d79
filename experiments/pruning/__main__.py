"""`python -m experiments.pruning run --model tiny --method sparseswaps --pattern 2:4 ...`"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from pydantic import ValidationError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def _root() -> None:
    """Layer-wise pruning of causal language models from a small calibration set."""


@app.command("run")
def run_command(
    model: str = typer.Option("tiny", help="tiny | mini | small, or a save_pretrained directory"),
    method: str = typer.Option(
        "wanda", help="magnitude | wanda | ria | sparsegpt | sparseswaps | frankwolfe"
    ),
    sparsity: float = typer.Option(0.5, help="fraction pruned (ignored for N:M patterns)"),
    pattern: str = typer.Option(
        "unstructured",
        help="unstructured (the method's paper pattern: layer for magnitude and sparsegpt, row "
        "for the others) | row | layer | N:M such as 2:4 or 4:8",
    ),
    calib: int = typer.Option(32, help="number of calibration sequences"),
    seqlen: int = typer.Option(128, help="calibration and evaluation sequence length"),
    seed: int = typer.Option(0),
    reconstruct: str = typer.Option("none", help="none | matrix | part | block"),
    recon_epochs: int = typer.Option(5),
    recon_lr: float = typer.Option(1e-3),
    recon_warmup: float = typer.Option(0.1, help="fraction of reconstruction steps warming up"),
    init: str | None = typer.Option(None, help="sparseswaps: the method whose mask it refines"),
    max_swaps: int | None = typer.Option(
        None, help="sparseswaps: swap rounds per matrix (default: to a local optimum)"
    ),
    eval_windows: int | None = typer.Option(None, help="cap on perplexity windows"),
    device: str = typer.Option("cpu"),
    threads: int = typer.Option(2, help="torch CPU threads"),
    out: Path = typer.Option(Path("pruning-run"), help="directory for metrics.json"),
) -> None:
    """Prune a model, evaluate perplexity, and write OUT/metrics.json."""
    import torch

    from experiments.lm.corpus import CorpusMissingError
    from experiments.pruning.run import RunConfig, run

    torch.set_num_threads(threads)
    options: dict[str, object] = {}
    if init is not None:
        options["init"] = init
    if max_swaps is not None:
        options["max_swaps"] = max_swaps
    try:
        config = RunConfig.model_validate(
            {
                "model": model,
                "method": method,
                "pattern": pattern,
                "sparsity": sparsity,
                "calib": calib,
                "seqlen": seqlen,
                "seed": seed,
                "reconstruct": reconstruct,
                "reconstruction": {
                    "epochs": recon_epochs,
                    "lr": recon_lr,
                    "warmup_fraction": recon_warmup,
                },
                "eval_windows": eval_windows,
                "device": device,
                "method_options": options,
            }
        )
        config.parsed_pattern()
        metrics = run(config, out, log=lambda m: typer.echo(m, err=True))
    except (ValidationError, ValueError, FileNotFoundError, CorpusMissingError) as exc:
        typer.echo(f"pruning run failed: {exc}", err=True)
        raise typer.Exit(2) from exc
    summary = {
        "metrics": str(out / "metrics.json"),
        "dense_perplexity": metrics.dense_perplexity,
        "perplexity": metrics.perplexity,
        "mean_relative_error": metrics.mean_relative_error,
        "sparsity": metrics.sparsity,
        "seconds_total": metrics.seconds_total,
    }
    typer.echo(json.dumps(summary, indent=1))


@app.command("study")
def study_command(
    model: str = typer.Option("mini", help="tiny | mini | small, or a save_pretrained directory"),
    calib: int = typer.Option(32),
    seqlen: int = typer.Option(128),
    eval_windows: int | None = typer.Option(None),
    epochs: int = typer.Option(5, help="block reconstruction epochs"),
    threads: int = typer.Option(2),
    out: Path = typer.Option(Path("pruning-study")),
) -> None:
    """Every method at 50%, 60% and 2:4, with and without block reconstruction; table and plots."""
    from experiments.pruning.study import run_study, set_threads

    set_threads(threads)
    summary = run_study(
        model,
        out,
        calib,
        seqlen,
        eval_windows,
        epochs=epochs,
        log=lambda m: typer.echo(m, err=True),
    )
    typer.echo(json.dumps({"out": str(out), "dense_perplexity": summary["dense_perplexity"]}))


if __name__ == "__main__":
    app()
