"""The Omega(1/sqrt(eps)) lower bound for Frank-Wolfe on a strongly convex set (arXiv 2602.04378).

Problem: f(x) = ||x - p||^2 over the unit Euclidean ball, ||p|| = 1, so x* = p and f* = 0.
Frank-Wolfe with exact line search. The LMO answers v = (p - x) / ||p - x||, and x_{t+1} is the
foot of the perpendicular from p onto the line through x_t and v_t. Everything stays in the plane
of x_0 and p, so we work in 2-D with p = (1, 0) and write the error as

    e_t = p - x_t = r_t (cos theta_t, sin theta_t),     f(x_t) = r_t^2.

Limit behaviour (derived in docs/results/optimization.md): for small r, with a_t = theta_t / sqrt(r_t),

    a_{t+1} = a_t / 2 - 1 / a_t      and      1/r_{t+1} = 1/r_t + (1 + a_t^2 / 2)^2 / (2 a_t^2) + O(r).

With a = sqrt(2) cot(phi) the angle map is the doubling map phi -> 2 phi (mod pi), so a generic
start wanders chaotically, while the period-2 orbit phi = pi/3, 2 pi/3 (a = +-sqrt(2/3), the
iterates zig-zag around p) is repelling with factor 2 per step. On that orbit 1/r grows by exactly
4/3 per step, so r_t ~ 3 / (4 t) and t^2 f(x_t) -> 9/16.

Construction (work backwards from the limit): put x_T on the zig-zag orbit at a tiny r_T, then
invert the Frank-Wolfe map T times. Backwards the orbit is attracting (factor 1/2 per step), so
the constructed x_0, ..., x_T is an exact Frank-Wolfe trajectory to working precision. Running
Frank-Wolfe forward from x_0 doubles any error each step: following the construction for T steps
needs about T bits (0.30 T decimal digits) beyond the size of the iterates, hence mpmath.

Random starts run in float64. They are generic trajectories of the same chaotic map, so no finite
precision follows one exact trajectory for long (float64 leaves it after about 50 steps, 637 digits
after about 2000): what a run measures is the distribution of t^2 f along a trajectory. Each
float64 step is an exact Frank-Wolfe step from a point within about 1e-16 of the computed one (the
arithmetic has tiny backward error, checked by the tests), and an expanding map like this one
shadows such pseudo-orbits with true orbits from nearby starts, so the float64 runs sample the same
behaviour at a fraction of the cost. Only the worst case, a single unstable orbit, needs the digits.
"""

from __future__ import annotations

import math
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mpmath
import numpy as np

from experiments.optimization.frank_wolfe import (
    EuclideanBall,
    ExactLineSearch,
    SquaredDistance,
    frank_wolfe,
    mp_array,
)

LIMIT_CONSTANT = 9 / 16  # t^2 f(x_t) on the zig-zag orbit, from 1/r_{t+1} - 1/r_t -> 4/3
LIMIT_SLOPE = mpmath.mpf(4) / 3

Point = tuple[Any, Any]  # (x, y) as mpmath numbers


def digits_needed(iters: int) -> int:
    """Decimal digits to follow a worst-case trajectory forward for ``iters`` steps (1 bit per step)."""
    return math.ceil((iters + 80) * math.log10(2)) + 10


def steps_followed(digits: int) -> int:
    """About how many steps ``digits`` decimal digits follow the worst case forward (1 bit per step)."""
    return math.floor(digits / math.log10(2))


def working_digits(iters: int, requested: int | None) -> tuple[int, str | None]:
    """The precision to run at and, when a request was too low and was raised, a note saying so.

    The backward construction is stable at any precision, but the forward check (and therefore
    the reported forward table) is only meaningful while the precision lasts, so a request below
    ``digits_needed(iters)`` is raised rather than silently producing a random-looking tail.
    """
    needed = digits_needed(iters)
    if requested is None or requested >= needed:
        return requested or needed, None
    if requested < 15:
        raise ValueError(
            f"--digits must be at least 15 (got {requested}); leave it out for the default"
        )
    return needed, (
        f"--digits {requested} follows the worst case forward only to about t = "
        f"{steps_followed(requested)} (each Frank-Wolfe step doubles the error, one bit per step); "
        f"running at {needed} digits, the minimum for --iters {iters} "
        f"({requested} digits suffice for --iters {max_iters(requested)} or fewer)."
    )


def max_iters(digits: int) -> int:
    """The largest --iters that ``digits`` decimal digits cover (inverse of digits_needed)."""
    iters = math.floor((digits - 10) / math.log10(2)) - 80
    while iters > 0 and digits_needed(iters) > digits:
        iters -= 1
    return iters


def predecessors(x: Point) -> list[Point]:
    """All z in the unit ball whose exact-line-search Frank-Wolfe step lands on x (p = (1, 0)).

    x is the foot of the perpendicular from p onto the segment [z, v], so v lies on the unit circle
    and on the line through x orthogonal to e = p - x: two candidates v = x + tau n. Then z sits on
    the line through v and x, beyond x: z = x - s (v - x) with s > 0, and p - z must point along v
    (the LMO's answer at z): cross(e + s (v - x), v) = 0 fixes s.
    """
    x1, x2 = x
    e1, e2 = 1 - x1, -x2
    r = mpmath.sqrt(e1 * e1 + e2 * e2)
    n1, n2 = -e2 / r, e1 / r
    b = x1 * n1 + x2 * n2
    c = x1 * x1 + x2 * x2 - 1  # < 0 inside the ball, so there is one tau of each sign
    root = mpmath.sqrt(b * b - c)
    found: list[Point] = []
    for tau in (-b + root, -b - root):
        v1, v2 = x1 + tau * n1, x2 + tau * n2
        u1, u2 = v1 - x1, v2 - x2
        s = -(e1 * v2 - e2 * v1) / (u1 * v2 - u2 * v1)
        z1, z2 = x1 - s * u1, x2 - s * u2
        lam = (e1 + s * u1) * v1 + (e2 + s * u2) * v2  # p - z = lam v needs lam > 0
        if s > 0 and lam > 0 and z1 * z1 + z2 * z2 <= 1:
            found.append((z1, z2))
    return found


class PrecisionWarning(UserWarning):
    """mpmath's working precision is too low to follow a worst-case trajectory forward."""


def worst_case_trajectory(iters: int, shift: float = 1.0) -> list[Point]:
    """x_0 .. x_iters on the zig-zag orbit, built backwards from x_iters (at mpmath's precision).

    x_iters is placed at r = 3 / (4 (iters + shift)), theta = -sqrt(2 r / 3): the limit orbit as if
    the run had started ``shift`` steps before t = 0. Each step back takes the predecessor on the
    other side of the axis through p (the zig-zag).

    The construction itself is stable at any precision, but Frank-Wolfe run forward from the x_0 it
    returns follows it only for about ``steps_followed(mpmath.mp.dps)`` steps, so a precision below
    ``digits_needed(iters)`` gets a PrecisionWarning naming the digits needed.
    """
    needed = digits_needed(iters)
    if mpmath.mp.dps < needed:
        warnings.warn(
            PrecisionWarning(
                f"mpmath.mp.dps = {mpmath.mp.dps} follows this worst case forward only to about "
                f"t = {steps_followed(mpmath.mp.dps)} of {iters}; set mpmath.mp.dps >= {needed} "
                f"(digits_needed({iters})) for a forward run that stays on it"
            ),
            stacklevel=2,
        )
    r_end = mpmath.mpf(3) / (4 * (iters + mpmath.mpf(shift)))
    theta_end = -mpmath.sqrt(2 * r_end / 3)
    trajectory: list[Point] = [(1 - r_end * mpmath.cos(theta_end), -r_end * mpmath.sin(theta_end))]
    for t in range(iters, 0, -1):
        x = trajectory[-1]
        zigzag = [z for z in predecessors(x) if (z[1] > 0) != (x[1] > 0)]
        if not zigzag:
            raise ValueError(
                f"no zig-zag Frank-Wolfe predecessor of x_{t} inside the unit ball (shift={shift}); "
                "start further from the optimum by increasing --shift"
            )
        trajectory.append(zigzag[0])
    trajectory.reverse()
    return trajectory


def forward_run(x0: Point, iters: int, float64: bool = False) -> list[Point]:
    """Frank-Wolfe with exact line search from x0, through the general library.

    At mpmath's working precision, or in float64 with ``float64=True`` (for random starts).
    """
    if float64:
        f = SquaredDistance(np.array([1.0, 0.0]))
        x_start = np.array([float(x0[0]), float(x0[1])])
    else:
        f = SquaredDistance(mp_array([1, 0]))
        x_start = mp_array(list(x0))
    result = frank_wolfe(
        f, EuclideanBall(dim=2), x_start, ExactLineSearch(), iters, keep_iterates=True
    )
    return [(x[0], x[1]) for x in result.iterates]


def objective(x: Point) -> Any:
    return (1 - x[0]) ** 2 + x[1] ** 2


def checkpoints(iters: int, smallest: int = 8) -> list[int]:
    """iters, iters/2, iters/4, ... down to ``smallest``, ascending."""
    ts: list[int] = []
    t = iters
    while t >= smallest:
        ts.append(t)
        t //= 2
    return sorted(ts)


@dataclass(frozen=True)
class ConstantRow:
    t: int
    t2_gap: float  # t^2 f(x_t)
    increment_constant: (
        float | None
    )  # (t / (1/sqrt f(x_2t) - 1/sqrt f(x_t)))^2, free of the start offset
    extrapolated: float | None  # Richardson: 2 c(t) - c(t/2) of the increment constant


def constant_table(f_values: list[Any], ts: list[int]) -> list[ConstantRow]:
    """The lower-bound constant measured three ways at each checkpoint t."""
    increment: dict[int, Any] = {}
    for t in ts:
        if 2 * t < len(f_values):
            slope = (1 / mpmath.sqrt(f_values[2 * t]) - 1 / mpmath.sqrt(f_values[t])) / t
            increment[t] = 1 / slope**2
    rows = []
    for t in ts:
        inc = increment.get(t)
        extrapolated = (
            2 * inc - increment[t // 2] if inc is not None and t // 2 in increment else None
        )
        rows.append(
            ConstantRow(
                t=t,
                t2_gap=float(t * t * f_values[t]),
                increment_constant=None if inc is None else float(inc),
                extrapolated=None if extrapolated is None else float(extrapolated),
            )
        )
    return rows


def tracking_horizon(forward: list[Point], constructed: list[Point], rel_tol: float = 1e-3) -> int:
    """Last t up to which the forward run stays within rel_tol * ||x_t - p|| of the construction."""
    for t, (a, b) in enumerate(zip(forward, constructed, strict=True)):
        deviation = mpmath.sqrt((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2)
        if deviation > rel_tol * mpmath.sqrt(objective(b)):
            return t - 1
    return len(constructed) - 1


def random_start(rng: random.Random) -> Point:
    """A uniform point of the unit disk."""
    angle, radius = rng.uniform(0, 2 * math.pi), math.sqrt(rng.uniform(0, 1))
    return (mpmath.mpf(radius * math.cos(angle)), mpmath.mpf(radius * math.sin(angle)))


def optimum_position_runs(iters: int, seed: int, digits: int = 60) -> dict[str, list[float]]:
    """f(x_t) - f* on the unit ball for p inside (||p|| = 1/2), on (1) and outside (2) the ball.

    Runs at ``digits`` digits (enough to see linear convergence down to 1e-50) and stops once the
    duality gap falls below 1e-50.
    """
    rng = random.Random(seed)
    runs: dict[str, list[float]] = {}
    with mpmath.workdps(digits):
        x0 = random_start(rng)
        direction = mpmath.mpf(rng.uniform(0, 2 * math.pi))
        for name, norm_p in (("interior", 0.5), ("boundary", 1.0), ("exterior", 2.0)):
            # computed in mpmath so that ||p|| is exactly norm_p at working precision
            p = mp_array([norm_p * mpmath.cos(direction), norm_p * mpmath.sin(direction)])
            f_star = mpmath.mpf(max(norm_p - 1, 0)) ** 2
            f = SquaredDistance(p)
            result = frank_wolfe(
                f, EuclideanBall(dim=2), mp_array(list(x0)), ExactLineSearch(), iters, gap_tol=1e-50
            )
            runs[name] = [float(row.primal - f_star) for row in result.log]
    return runs


def linear_rate(gaps: list[float], floor: float = 1e-45) -> float | None:
    """Geometric-mean contraction factor per iteration of the gaps above ``floor`` (None if < 3)."""
    usable = [g for g in gaps[1:] if g > floor]
    if len(usable) < 3:
        return None
    return (usable[-1] / usable[0]) ** (1 / (len(usable) - 1))


def run_lower_bound(
    iters: int = 2000,
    digits: int | None = None,
    shift: float = 1.0,
    random_starts: int = 8,
    seed: int = 0,
    out: Path | None = None,
    random_starts_digits: int = 0,
) -> dict[str, Any]:
    """Construct the worst case, check it forward, compare with random starts; write metrics and plots.

    The worst case runs at ``digits`` (raised to ``digits_needed(iters)`` with a note on stderr
    when lower); the random starts run in float64 (see the module docstring), or at
    ``random_starts_digits`` digits when that is not 0 (to compare the two).
    """
    if iters < 16:
        raise ValueError(f"--iters must be at least 16 to measure a rate (got {iters})")
    needed = digits_needed(iters)
    mpmath.mp.dps, note = working_digits(iters, digits)
    if note:
        print(f"note: {note}", file=sys.stderr, flush=True)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    constructed = worst_case_trajectory(iters, shift)
    timings["construct_s"] = time.perf_counter() - start

    start = time.perf_counter()
    forward = forward_run(constructed[0], iters)
    timings["forward_s"] = time.perf_counter() - start

    f_constructed = [objective(x) for x in constructed]
    f_forward = [objective(x) for x in forward]
    ts = checkpoints(iters)
    theta_end = mpmath.atan2(-constructed[-1][1], 1 - constructed[-1][0])
    a_end = abs(theta_end) / mpmath.sqrt(mpmath.sqrt(f_constructed[-1]))

    start = time.perf_counter()
    rng = random.Random(seed)
    random_f: list[list[float]] = []
    for _ in range(random_starts):
        x0 = random_start(rng)
        if random_starts_digits:
            with mpmath.workdps(random_starts_digits):
                trajectory = forward_run(x0, iters)
        else:
            trajectory = forward_run(x0, iters, float64=True)
        random_f.append([float(f) for f in map(objective, trajectory)])
    timings["random_starts_s"] = time.perf_counter() - start

    start = time.perf_counter()
    positions = optimum_position_runs(min(iters, 400), seed)
    timings["optimum_positions_s"] = time.perf_counter() - start

    metrics: dict[str, Any] = {
        "experiment": "fw-lower-bound",
        "config": {
            "iters": iters,
            "digits": mpmath.mp.dps,
            "digits_requested": digits,
            "random_starts_precision": (
                f"{random_starts_digits} digits" if random_starts_digits else "float64"
            ),
            "shift": shift,
            "random_starts": random_starts,
            "seed": seed,
        },
        "digits_needed_to_follow_forward": needed,
        "digits_note": note,
        "limit_constant": LIMIT_CONSTANT,
        "x0": [mpmath.nstr(c, 30) for c in constructed[0]],
        "a_at_T": float(a_end),
        "a_limit": math.sqrt(2 / 3),
        "constructed": [vars(row) for row in constant_table(f_constructed, ts)],
        "forward": [vars(row) for row in constant_table(f_forward, ts)],
        "forward_tracks_construction_until": tracking_horizon(forward, constructed),
        "random_starts_t2_gap": {str(t): sorted(t * t * run[t] for run in random_f) for t in ts},
        "optimum_positions": {
            name: {
                "iterations_run": len(gaps) - 1,
                "gap_at": {str(t): gaps[t] for t in (5, 10, 20, 50, 100, 200) if t < len(gaps)},
                "linear_rate_per_iteration": linear_rate(gaps),
            }
            for name, gaps in positions.items()
        },
        "timings": timings,
    }
    if out is not None:
        from experiments.optimization.output import write_metrics

        write_metrics(out, metrics)
        plot_lower_bound(out, f_constructed, f_forward, random_f, positions)
    return metrics


def plot_lower_bound(
    out: Path,
    f_constructed: list[Any],
    f_forward: list[Any],
    random_f: list[list[float]],
    positions: dict[str, list[float]],
) -> list[Path]:
    from experiments.optimization.output import pyplot

    plt = pyplot()
    ts = list(range(1, len(f_constructed)))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(
        ts,
        [float(t * t * f_constructed[t]) for t in ts],
        lw=2,
        label="worst-case start (constructed)",
    )
    ax.plot(
        ts,
        [float(t * t * f_forward[t]) for t in ts],
        lw=1,
        ls="--",
        label="forward run from that start",
    )
    for i, run in enumerate(random_f):
        ax.plot(
            ts,
            [t * t * run[t] for t in ts],
            lw=0.6,
            alpha=0.6,
            color="grey",
            label="random starts" if i == 0 else None,
        )
    ax.axhline(LIMIT_CONSTANT, color="k", lw=0.8, ls=":", label="9/16")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("iteration t")
    ax.set_ylabel("t² (f(x_t) − f*)")
    ax.set_title("Frank-Wolfe, exact line search, unit ball, ||p|| = 1")
    ax.legend(fontsize=8)
    fig.tight_layout()
    constant_path = out / "lower_bound_constant.png"
    fig.savefig(constant_path, dpi=120)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.loglog(ts, [float(f_constructed[t]) for t in ts], lw=2, label="worst case (boundary)")
    for i, run in enumerate(random_f):
        left.loglog(
            ts,
            [run[t] for t in ts],
            lw=0.6,
            color="grey",
            alpha=0.6,
            label="random starts" if i == 0 else None,
        )
    left.loglog(ts, [LIMIT_CONSTANT / t**2 for t in ts], "k:", lw=0.8, label="9 / (16 t²)")
    left.set_xlabel("iteration t")
    left.set_ylabel("f(x_t) − f*")
    left.set_title("optimum on the boundary: sublinear")
    left.legend(fontsize=8)
    for name, gaps in positions.items():
        steps = [t for t, g in enumerate(gaps) if g > 0]
        right.semilogy(steps, [gaps[t] for t in steps], label=f"p {name}")
    right.set_xlabel("iteration t")
    right.set_ylabel("f(x_t) − f*")
    right.set_title("optimum inside, on and outside the ball (one start)")
    right.legend(fontsize=8)
    fig.tight_layout()
    rates_path = out / "lower_bound_rates.png"
    fig.savefig(rates_path, dpi=120)
    plt.close(fig)
    return [constant_path, rates_path]
