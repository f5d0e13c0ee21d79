"""Convergence rates of Frank-Wolfe for f(x) = ||x - p||^2 on one feasible set, one step rule.

p = center + s (b - center), where b = LMO(-u) is the boundary point of the set furthest along a
random direction u and s = 1/2 (interior optimum), 1 (optimum on the boundary) or 2 (the
unconstrained minimizer outside the set, so the gradient at the optimum is bounded away from 0).
The run logs f(x_t) - f* (where f* is known) and the Frank-Wolfe gap, and fits both a power law
gap ~ C t^k and a linear rate gap ~ C rho^t.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import mpmath
import numpy as np

from experiments.optimization.frank_wolfe import (
    Backtracking,
    Ellipsoid,
    EuclideanBall,
    ExactLineSearch,
    FeasibleSet,
    L1Ball,
    LpBall,
    OpenLoop,
    Polytope,
    ShortStep,
    Simplex,
    SquaredDistance,
    StepRule,
    frank_wolfe,
    mp_array,
    norm,
)

SETS = ("ball", "lp", "l1", "simplex", "polytope", "ellipsoid")
STEPS = ("open-loop", "short", "line-search", "backtracking")
OPTIMA = {"interior": 0.5, "boundary": 1.0, "exterior": 2.0}
SMOOTHNESS = 2.0  # L of ||x - p||^2


def make_set(
    name: str, dim: int, rng: np.random.Generator, p_norm: float = 3.0
) -> tuple[FeasibleSet, np.ndarray]:
    """The feasible set called ``name`` and a point in its relative interior (its 'center')."""
    if name == "ball":
        return EuclideanBall(dim=dim), np.zeros(dim)
    if name == "lp":
        return LpBall(dim=dim, p=p_norm), np.zeros(dim)
    if name == "l1":
        return L1Ball(dim=dim), np.zeros(dim)
    if name == "simplex":
        return Simplex(dim=dim), np.full(dim, 1 / dim)
    if name == "polytope":
        vertices = rng.standard_normal((2 * dim, dim))
        return Polytope(vertices=vertices), vertices.mean(axis=0)
    if name == "ellipsoid":
        Q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        return Ellipsoid(A=Q.T @ np.diag(np.linspace(1, 10, dim)) @ Q), np.zeros(dim)
    raise ValueError(f"unknown set {name!r}: choose one of {', '.join(SETS)}")


def make_step(name: str) -> StepRule:
    if name == "open-loop":
        return OpenLoop()
    if name == "short":
        return ShortStep(L=SMOOTHNESS)
    if name == "line-search":
        return ExactLineSearch()
    if name == "backtracking":
        return Backtracking()
    raise ValueError(f"unknown step rule {name!r}: choose one of {', '.join(STEPS)}")


def fit_power_law(ts: list[int], values: list[float]) -> float:
    """Least-squares slope k of log(value) against log(t): value ~ C t^k."""
    x, y = np.log(np.asarray(ts, dtype=float)), np.log(np.asarray(values, dtype=float))
    return float(np.polyfit(x, y, 1)[0])


def fit_linear_rate(ts: list[int], values: list[float]) -> float:
    """rho from the least-squares slope of log(value) against t: value ~ C rho^t."""
    slope = np.polyfit(np.asarray(ts, dtype=float), np.log(np.asarray(values, dtype=float)), 1)[0]
    return float(math.exp(slope))


def run_rates(
    set_name: str = "ball",
    step_name: str = "line-search",
    optimum: str = "exterior",
    dim: int = 10,
    iters: int = 1000,
    digits: int = 0,
    p_norm: float = 3.0,
    seed: int = 0,
    out: Path | None = None,
) -> dict[str, Any]:
    """One Frank-Wolfe run; returns (and writes) the per-iteration log, fitted rates and timing."""
    if optimum not in OPTIMA:
        raise ValueError(f"unknown optimum position {optimum!r}: choose one of {', '.join(OPTIMA)}")
    if set_name == "ellipsoid" and digits:
        raise ValueError(
            "the ellipsoid LMO solves a linear system in float64: run it with --digits 0"
        )
    rng = np.random.default_rng(seed)
    C, center = make_set(set_name, dim, rng, p_norm)
    step = make_step(step_name)
    boundary_point = C.lmo(-rng.standard_normal(dim))
    p = center + OPTIMA[optimum] * (boundary_point - center)
    x0 = (center + C.lmo(rng.standard_normal(dim))) / 2  # feasible by convexity
    f_star: Any = None
    if optimum != "exterior":
        f_star = 0.0
    elif set_name == "ball":
        f_star = (float(np.linalg.norm(p)) - 1) ** 2
    if digits:
        mpmath.mp.dps = digits
        p, x0 = mp_array(p), mp_array(x0)
        if f_star is not None and set_name == "ball":
            f_star = (norm(p) - 1) ** 2 if optimum == "exterior" else mpmath.mpf(0)

    start = time.perf_counter()
    result = frank_wolfe(SquaredDistance(p), C, x0, step, iters)
    seconds = time.perf_counter() - start

    log: list[dict[str, Any]] = [
        {
            "t": row.t,
            "primal": float(row.primal),
            "fw_gap": float(row.gap),
            "primal_gap": None if f_star is None else float(row.primal - f_star),
            "dual_bound": float(row.dual_bound),
            "gamma": float(row.gamma),
        }
        for row in result.log
    ]
    tail = [row for row in log if row["t"] >= max(1, len(log) // 10)]
    measured = "primal_gap" if f_star is not None else "fw_gap"
    positive = [row for row in tail if row[measured] is not None and row[measured] > 0]
    fits: dict[str, Any] = {"quantity": measured}
    if len(positive) >= 3:
        ts, values = [row["t"] for row in positive], [row[measured] for row in positive]
        fits["power_law_exponent"] = fit_power_law(ts, values)
        fits["linear_rate"] = fit_linear_rate(ts, values)
    metrics = {
        "experiment": "fw-rates",
        "config": {
            "set": set_name,
            "step": step_name,
            "optimum": optimum,
            "dim": dim,
            "iters": iters,
            "digits": digits,
            "p_norm": p_norm,
            "seed": seed,
        },
        "f_star": None if f_star is None else float(f_star),
        "iterations_run": len(log) - 1,
        "fits": fits,
        "seconds": seconds,
        "log": log,
    }
    if out is not None:
        from experiments.optimization.output import pyplot, write_metrics

        write_metrics(out, metrics)
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, label in (("primal_gap", "f(x_t) − f*"), ("fw_gap", "Frank-Wolfe gap")):
            points = [
                (row["t"], row[key])
                for row in log
                if row[key] is not None and row[key] > 0 and row["t"] > 0
            ]
            if points:
                ax.loglog(*zip(*points, strict=True), label=label)
        ax.set_xlabel("iteration t")
        ax.set_title(f"{set_name}, {step_name}, {optimum} optimum")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "rates.png", dpi=120)
        plt.close(fig)
    return metrics
