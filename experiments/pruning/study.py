"""The results study: every method x pattern x reconstruction on one model, in one process.

"50%" and "60%" are unstructured, each method with its paper's pattern (PAPER_PATTERN: one count
per layer for magnitude and SparseGPT, per output row for the others). A second, smaller table
runs every method under both unstructured patterns at 50% (no reconstruction), so the effect of the
pattern is measured rather than assumed.

Writes OUT/summary.json (one row per run plus the SparseSwaps-over-Wanda reduction per matrix),
OUT/table.md and OUT/*.png. The dense weights are restored before every run.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.pruning.run import RunConfig, RunMetrics, load_model_and_tokens, prune_and_evaluate

PATTERNS = (("unstructured", 0.5), ("unstructured", 0.6), ("2:4", None))
COMPARED_PATTERNS = ("row", "layer")  # at 50%, no reconstruction
METHODS = ("magnitude", "wanda", "ria", "sparsegpt", "sparseswaps", "frankwolfe")
RECONSTRUCTIONS = ("none", "block")


def _label(pattern: str, sparsity: float | None) -> str:
    """'50%' (paper pattern), '50% row' / '50% layer' (forced), or the N:M pattern itself."""
    if sparsity is None:
        return pattern
    return f"{sparsity:.0%}" if pattern == "unstructured" else f"{sparsity:.0%} {pattern}"


def run_study(
    model_spec: str,
    out_dir: Path,
    calib: int,
    seqlen: int,
    eval_windows: int | None,
    methods: tuple[str, ...] = METHODS,
    reconstructions: tuple[str, ...] = RECONSTRUCTIONS,
    epochs: int = 5,
    log: Any = print,
) -> dict[str, Any]:
    from experiments.lm import perplexity

    model, train_tokens, test_tokens, model_path = load_model_and_tokens(model_spec, "cpu")
    dense_state = copy.deepcopy(model.state_dict())
    dense_ppl = perplexity(model, test_tokens, seqlen, max_windows=eval_windows)
    rows: list[dict[str, Any]] = []
    runs: dict[tuple[str, str, str], RunMetrics] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(p, s, r, m) for p, s in PATTERNS for r in reconstructions for m in methods]
    jobs += [(p, 0.5, "none", m) for p in COMPARED_PATTERNS for m in methods]
    for pattern, sparsity, reconstruct, method in jobs:
        model.load_state_dict(dense_state)
        config = RunConfig.model_validate(
            {
                "model": model_spec,
                "method": method,
                "pattern": pattern,
                "sparsity": sparsity if sparsity is not None else 0.5,
                "calib": calib,
                "seqlen": seqlen,
                "reconstruct": reconstruct,
                "reconstruction": {"epochs": epochs},
                "eval_windows": eval_windows,
            }
        )
        metrics = prune_and_evaluate(
            model, train_tokens, test_tokens, config, model_path, dense_ppl
        )
        label = _label(pattern, sparsity)
        runs[(label, reconstruct, method)] = metrics
        rows.append(
            {
                "pattern": label,
                "mask": config.pattern,
                "reconstruct": reconstruct,
                "method": method,
                "perplexity": metrics.perplexity,
                "mean_relative_error": metrics.mean_relative_error,
                "mean_relative_error_reconstructed": metrics.mean_relative_error_reconstructed,
                "seconds_pruning": metrics.seconds_pruning,
            }
        )
        log(
            f"{label:>4} {reconstruct:>5} {method:>11}: ppl {metrics.perplexity:8.2f} rel.err {metrics.mean_relative_error:.4f}"
        )
    reductions = _swap_reductions(runs)
    summary = {
        "model": model_path,
        "n_params": sum(p.numel() for p in model.parameters()),
        "dense_perplexity": dense_ppl,
        "settings": {
            "calib": calib,
            "seqlen": seqlen,
            "eval_windows": eval_windows,
            "epochs": epochs,
        },
        "runs": rows,
        "sparseswaps_over_wanda": reductions,
        "layers": {
            f"{k[0]}|{k[1]}|{k[2]}": [r.model_dump() for r in v.layers] for k, v in runs.items()
        },
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    (out_dir / "table.md").write_text(markdown_table(summary))
    plot(summary, out_dir)
    return summary


def _swap_reductions(runs: dict[tuple[str, str, str], RunMetrics]) -> dict[str, Any]:
    """Per-matrix 1 - error(SparseSwaps) / error(Wanda), both without reconstruction."""
    result: dict[str, Any] = {}
    # the paper-pattern rows only: the forced "50% row" duplicates "50%" for both methods
    for label in dict.fromkeys(k[0] for k in runs if " " not in k[0]):
        wanda, swaps = runs.get((label, "none", "wanda")), runs.get((label, "none", "sparseswaps"))
        if wanda is None or swaps is None:
            continue
        per_matrix = [
            {"layer": a.layer, "name": a.name, "reduction": 1 - b.relative_error / a.relative_error}
            for a, b in zip(wanda.layers, swaps.layers, strict=True)
        ]
        values = np.array([m["reduction"] for m in per_matrix])
        result[label] = {
            "mean": float(values.mean()),
            "max": float(values.max()),
            "min": float(values.min()),
            "per_matrix": per_matrix,
        }
    return result


def markdown_table(summary: dict[str, Any]) -> str:
    """The main table (paper patterns and 2:4, with and without reconstruction), then the
    comparison of the two unstructured patterns at 50%."""
    runs = summary["runs"]
    index = {(r["pattern"], r["reconstruct"], r["method"]): r for r in runs}
    methods = list(dict.fromkeys(r["method"] for r in runs))
    compared = [f"50% {p}" for p in COMPARED_PATTERNS]
    lines = [
        "| sparsity | method | mask | rel. error | ppl | ppl + block recon. | rel. error after recon. |",
        "|---|---|---|---|---|---|---|",
    ]
    for pattern in dict.fromkeys(r["pattern"] for r in runs):
        if pattern in compared:
            continue
        for method in methods:
            plain = index.get((pattern, "none", method))
            recon = index.get((pattern, "block", method))
            if plain is None:
                continue
            recon_ppl = f"{recon['perplexity']:.2f}" if recon else "n/a"
            recon_err = f"{recon['mean_relative_error_reconstructed']:.4f}" if recon else "n/a"
            mask = "N:M" if ":" in pattern else plain["mask"]
            lines.append(
                f"| {pattern} | {method} | {mask} | {plain['mean_relative_error']:.4f} "
                f"| {plain['perplexity']:.2f} | {recon_ppl} | {recon_err} |"
            )
    if any((c, "none", m) in index for c in compared for m in methods):
        lines += [
            "",
            "| method (50%, no recon.) | "
            + " | ".join(f"rel. error {p} | ppl {p}" for p in COMPARED_PATTERNS)
            + " |",
            "|---|" + "---|---|" * len(COMPARED_PATTERNS),
        ]
        for method in methods:
            cells = []
            for label in compared:
                row = index.get((label, "none", method))
                cells += (
                    [f"{row['mean_relative_error']:.4f}", f"{row['perplexity']:.2f}"]
                    if row
                    else ["n/a", "n/a"]
                )
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = summary["runs"]
    compared = {f"50% {p}" for p in COMPARED_PATTERNS}
    patterns = [p for p in dict.fromkeys(r["pattern"] for r in runs) if p not in compared]
    methods = list(dict.fromkeys(r["method"] for r in runs))
    index = {(r["pattern"], r["reconstruct"], r["method"]): r for r in runs}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / len(methods)
    centres = np.arange(len(patterns))
    for i, method in enumerate(methods):
        xs = centres - 0.4 + (i + 0.5) * width
        errors = [index[(p, "none", method)]["mean_relative_error"] for p in patterns]
        ppls = [index[(p, "none", method)]["perplexity"] for p in patterns]
        axes[0].bar(xs, errors, width, label=method)
        axes[1].bar(xs, ppls, width, label=method)
    dense = summary["dense_perplexity"]
    axes[1].axhline(dense, color="black", linestyle="--", lw=1, label=f"dense ({dense:.2f})")
    # a linear axis starting just below the dense model: the differences are a few percent
    highest = max(index[(p, "none", m)]["perplexity"] for p in patterns for m in methods)
    axes[1].set_ylim(dense * 0.98, highest * 1.01)
    labels = [p if ":" in p else f"{p} unstructured" for p in patterns]
    for ax, title, ylabel in zip(
        axes,
        ("mean per-matrix relative error", "test perplexity (no reconstruction)"),
        ("relative error", "perplexity"),
        strict=True,
    ):
        ax.set_xticks(centres, labels)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out_dir / "methods.png", dpi=110)
    plt.close(fig)
    reductions = summary["sparseswaps_over_wanda"]
    if reductions:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        for label, data in reductions.items():
            ax.plot([100 * m["reduction"] for m in data["per_matrix"]], marker="o", label=label)
        names = [
            f"{m['layer']}.{m['name'].split('.')[-1]}"
            for m in next(iter(reductions.values()))["per_matrix"]
        ]
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_ylabel("error reduction vs Wanda (%)")
        ax.set_title("SparseSwaps refinement of Wanda's mask, per matrix")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "sparseswaps_vs_wanda.png", dpi=110)
        plt.close(fig)


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
