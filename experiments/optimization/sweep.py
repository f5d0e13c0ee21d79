"""Optimizer sweeps: a YAML definition -> one `train` argv per run -> a table and plots.

    name: lm-optimizers          # runs go to <out>/<name>/<NNN-...>
    mode: grid                   # grid: every combination; random: `samples` draws
    samples: 8                   # random only
    seed: 0                      # random only
    fixed: {size: tiny, steps: 100, seq_len: 64}
    search:
      optimizer: [adamw, sgd]    # a list: one of these values
      lr: {low: 1.0e-3, high: 3.0e-2, log: true}   # a range: random mode only

expand_sweep() validates every run with experiments.lm's TrainConfig before anything is
submitted, so a typo fails here with the option's name, not in the middle of a job array.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from experiments.optimization.train import TRAIN_OPTIONS, train_config

Scalar = str | int | float


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"range needs low < high (got low={self.low}, high={self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        return self

    def draw(self, rng: random.Random) -> float | int:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return round(value) if self.integer else float(f"{value:.4g}")


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    mode: Literal["grid", "random"] = "grid"
    samples: int | None = None
    seed: int = 0
    fixed: dict[str, Scalar] = {}
    search: dict[str, list[Scalar] | Range]

    @model_validator(mode="after")
    def _consistent(self) -> SweepConfig:
        for key in [*self.fixed, *self.search]:
            if key not in TRAIN_OPTIONS:
                raise ValueError(f"unknown training option {key!r}; known: {sorted(TRAIN_OPTIONS)}")
        both = sorted(set(self.fixed) & set(self.search))
        if both:
            raise ValueError(f"{both} appear in both `fixed` and `search`; keep each option in one")
        if any(isinstance(v, list) and not v for v in self.search.values()):
            raise ValueError("every list in `search` needs at least one value")
        if self.mode == "grid":
            ranges = [k for k, v in self.search.items() if isinstance(v, Range)]
            if ranges:
                raise ValueError(
                    f"grid mode needs lists of values, but {ranges} are ranges: list values or use mode: random"
                )
            if self.samples is not None:
                raise ValueError("`samples` is for mode: random; a grid runs every combination")
        elif not self.samples or self.samples < 1:
            raise ValueError("mode: random needs `samples` (a positive number of runs)")
        return self


def load_sweep(config_path: Path) -> SweepConfig:
    try:
        raw = yaml.safe_load(Path(config_path).read_text())
    except FileNotFoundError:
        raise ValueError(f"sweep config {config_path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"sweep config {config_path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"sweep config {config_path} must be a mapping with name, mode, search")
    try:
        return SweepConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"sweep config {config_path}: {problems}") from None


def sweep_points(sweep: SweepConfig) -> list[dict[str, Scalar]]:
    """The option dict of every run, in a fixed order."""
    if sweep.mode == "grid":
        keys = list(sweep.search)
        lists = [value for value in sweep.search.values() if isinstance(value, list)]
        return [
            {**sweep.fixed, **dict(zip(keys, combo, strict=True))}
            for combo in itertools.product(*lists)
        ]
    rng = random.Random(sweep.seed)
    points = []
    for _ in range(sweep.samples or 0):
        point: dict[str, Scalar] = dict(sweep.fixed)
        for key, space in sweep.search.items():
            point[key] = space.draw(rng) if isinstance(space, Range) else rng.choice(space)
        points.append(point)
    return points


def run_name(index: int, point: dict[str, Scalar], searched: list[str]) -> str:
    """NNN-key=value-... over the searched options (the fixed ones are the same in every run)."""
    parts = [f"{index:03d}"] + [f"{key}={point[key]}" for key in searched]
    return "-".join(parts).replace("/", "_")


def expand_sweep(config_path: Path, out_root: Path = Path("runs")) -> list[list[str]]:
    """One argv per run: `python -m experiments.optimization train --key value ... --out DIR`."""
    sweep = load_sweep(config_path)
    argvs = []
    for index, point in enumerate(sweep_points(sweep)):
        try:
            train_config(dict(point))
        except ValueError as exc:
            raise ValueError(f"sweep config {config_path}, run {index} {point}: {exc}") from None
        argv = ["python", "-m", "experiments.optimization", "train"]
        for key, value in point.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        argv += ["--out", str(out_root / sweep.name / run_name(index, point, list(sweep.search)))]
        argvs.append(argv)
    return argvs


def _load_metrics(item: Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(item, dict):
        return item
    path = item / "metrics.json" if item.is_dir() else item
    try:
        metrics: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist: did that run finish?") from None
    return metrics


def collect(
    items: list[Path] | list[dict[str, Any]], out: Path | None = None
) -> tuple[list[dict[str, Any]], Path | None]:
    """Rows (one per run, best validation loss first) and, with ``out``, a table and a plot.

    Each item is a run directory, a metrics.json path or an already-loaded metrics dict (e.g. from
    the ledger).
    """
    runs = [_load_metrics(item) for item in items]
    rows = []
    for metrics in runs:
        config = metrics["config"]
        rows.append(
            {
                "optimizer": config["optimizer"],
                "schedule": config["schedule"],
                "lr": config["lr"],
                "weight_decay": config["weight_decay"],
                "batch_size": config["batch_size"],
                "final_val_loss": metrics["final_val_loss"],
                "diverged": metrics["diverged"],
                "seconds": round(metrics["seconds"], 1),
            }
        )
    order = sorted(range(len(rows)), key=lambda i: rows[i]["final_val_loss"])
    rows = [rows[i] for i in order]
    runs = [runs[i] for i in order]
    if out is None:
        return rows, None
    from experiments.optimization.output import pyplot

    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep_summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "sweep_table.md").write_text(markdown_table(rows))
    plt = pyplot()
    fig, (curves, by_lr) = plt.subplots(1, 2, figsize=(11, 4.2))
    # One colour per optimizer+schedule (the same in both panels), one line style per learning
    # rate: a sweep has more curves than a colour cycle has colours.
    group_names = sorted({(r["optimizer"], r["schedule"]) for r in rows})
    palette = plt.get_cmap("tab10" if len(group_names) <= 10 else "tab20")
    colour = {group: palette(i) for i, group in enumerate(group_names)}
    lrs = sorted({r["lr"] for r in rows})
    styles = ("-", "--", ":", "-.")
    style = {lr: styles[i % len(styles)] for i, lr in enumerate(lrs)}
    for metrics, row in zip(runs, rows, strict=True):
        if metrics["val_loss"]:
            label = f"{row['optimizer']} {row['schedule']} lr={row['lr']:g}"
            curves.plot(
                *zip(*metrics["val_loss"], strict=True),
                marker=".",
                lw=1.2,
                ls=style[row["lr"]],
                color=colour[(row["optimizer"], row["schedule"])],
                label=label,
            )
    curves.set_xlabel("step")
    curves.set_ylabel("validation loss")
    curves.set_title("validation loss curves")
    curves.legend(fontsize=6)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["optimizer"], row["schedule"]), []).append(row)
    for (optimizer, schedule), members in sorted(groups.items()):
        members = sorted(
            (r for r in members if math.isfinite(r["final_val_loss"])), key=lambda r: r["lr"]
        )
        by_lr.plot(
            [r["lr"] for r in members],
            [r["final_val_loss"] for r in members],
            "o-",
            color=colour[(optimizer, schedule)],
            label=f"{optimizer}, {schedule}",
        )
    by_lr.set_xscale("log")
    # ticks at the swept rates only: log axes otherwise label minor ticks that overlap
    by_lr.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
    by_lr.minorticks_off()
    by_lr.set_xlabel("peak learning rate")
    by_lr.set_ylabel("final validation loss")
    by_lr.set_title("final validation loss vs learning rate")
    by_lr.legend(fontsize=7)
    fig.tight_layout()
    plot = out / "sweep.png"
    fig.savefig(plot, dpi=120)
    plt.close(fig)
    return rows, plot


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            f"{v:.4f}" if isinstance(v, float) and k == "final_val_loss" else str(v)
            for k, v in row.items()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
