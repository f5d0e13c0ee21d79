"""A small, exact Frank-Wolfe library: feasible sets with linear minimization oracles (LMOs),
step rules, the duality gap and a primal-dual log of every iteration.

    v_t     = argmin_{v in C} <g_t, v>           g_t = grad f(x_t)       (the LMO)
    gap_t   = <g_t, x_t - v_t>  >=  f(x_t) - f*                          (Frank-Wolfe duality gap)
    x_{t+1} = x_t + gamma_t (v_t - x_t)                                  (a convex combination)

Backend: points are numpy arrays. A float64 array runs in float64; an object array of
``mpmath.mpf`` runs at mpmath's working precision (set ``mpmath.mp.dps`` or use ``mp_array``).
Everything below uses only +, -, *, /, comparisons and ``sqrt``, which both backends provide.
``Ellipsoid`` solves a linear system and is float64 only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import mpmath
import numpy as np

Array = np.ndarray
Scalar = Any  # float or mpmath.mpf


# --- backend ---------------------------------------------------------------------------------


def mp_array(values: Sequence[Any] | Array, digits: int | None = None) -> Array:
    """An object array of mpmath numbers (optionally setting the working precision first)."""
    if digits is not None:
        mpmath.mp.dps = digits
    return np.array(
        [mpmath.mpf(v) for v in np.ravel(np.asarray(values, dtype=object))], dtype=object
    ).reshape(np.shape(values))


def sqrt(x: Scalar) -> Scalar:
    return mpmath.sqrt(x) if isinstance(x, mpmath.mpf) else math.sqrt(x)


def inner(a: Array, b: Array) -> Scalar:
    """<a, b> over all entries (vectors or matrices), in the arrays' own number type."""
    return (a * b).sum()


def norm(a: Array) -> Scalar:
    return sqrt(inner(a, a))


def _first_basis_vector_like(x: Array) -> Array:
    e = np.zeros_like(x)
    e.flat[0] = 1
    return e


# --- feasible sets ---------------------------------------------------------------------------


class FeasibleSet(Protocol):
    def lmo(self, g: Array) -> Array:
        """A minimizer of <g, v> over the set."""
        ...


@dataclass(frozen=True)
class EuclideanBall:
    """{x : ||x - center||_2 <= radius}.  LMO: center - radius g / ||g||."""

    dim: int
    radius: float = 1.0
    center: Array | None = None

    def _center(self, like: Array) -> Array:
        return np.zeros_like(like) if self.center is None else self.center.astype(like.dtype)

    def lmo(self, g: Array) -> Array:
        g_norm = norm(g)
        if g_norm == 0:  # every point is a minimizer; return a fixed one
            return self._center(g) + self.radius * _first_basis_vector_like(g)
        return self._center(g) - self.radius * g / g_norm

    def contains(self, x: Array, tol: float = 1e-9) -> bool:
        return bool(norm(x - self._center(x)) <= self.radius + tol)


@dataclass(frozen=True)
class LpBall:
    """{x : ||x||_p <= radius} for 1 < p < inf, and p = inf (the cube).

    Hölder: min <g, v> = -radius ||g||_q with 1/p + 1/q = 1, attained at
    v_i = -radius sign(g_i) |g_i|^(q-1) / ||g||_q^(q-1).
    """

    dim: int
    p: float
    radius: float = 1.0

    def __post_init__(self) -> None:
        if not self.p > 1:
            raise ValueError(f"LpBall needs p > 1 (got p={self.p}); use L1Ball for p = 1")

    def lmo(self, g: Array) -> Array:
        signs = np.where(g < 0, -1, 1).astype(g.dtype)
        if math.isinf(self.p):
            return -self.radius * signs
        q = self.p / (self.p - 1)
        abs_g = np.abs(g)
        g_q = sum(a**q for a in abs_g.flat) ** (1 / q)
        if g_q == 0:
            return self.radius * _first_basis_vector_like(g)
        return -self.radius * signs * abs_g ** (q - 1) / g_q ** (q - 1)

    def contains(self, x: Array, tol: float = 1e-9) -> bool:
        if math.isinf(self.p):
            return bool(np.max(np.abs(x)) <= self.radius + tol)
        return bool(sum(abs(a) ** self.p for a in x.flat) ** (1 / self.p) <= self.radius + tol)


@dataclass(frozen=True)
class L1Ball:
    """{x : ||x||_1 <= radius}, the cross-polytope.  LMO: the vertex -radius sign(g_i) e_i, i = argmax |g_i|."""

    dim: int
    radius: float = 1.0

    def lmo(self, g: Array) -> Array:
        i = int(np.argmax(np.abs(g)))
        v = np.zeros_like(g)
        v.flat[i] = -self.radius if g.flat[i] > 0 else self.radius
        return v

    def contains(self, x: Array, tol: float = 1e-9) -> bool:
        return bool(np.sum(np.abs(x)) <= self.radius + tol)


@dataclass(frozen=True)
class Simplex:
    """{x >= 0 : sum x = radius} (the probability simplex for radius 1).  LMO: radius e_{argmin g}."""

    dim: int
    radius: float = 1.0

    def lmo(self, g: Array) -> Array:
        v = np.zeros_like(g)
        v.flat[int(np.argmin(g))] = self.radius
        return v

    def contains(self, x: Array, tol: float = 1e-9) -> bool:
        return bool(np.min(x) >= -tol and abs(np.sum(x) - self.radius) <= tol)


@dataclass(frozen=True)
class Polytope:
    """conv(vertices), vertices given as the rows of an (m, dim) array.  LMO: the best vertex."""

    vertices: Array

    def lmo(self, g: Array) -> Array:
        scores = self.vertices @ g
        return self.vertices[int(np.argmin(scores))].astype(g.dtype)


@dataclass(frozen=True)
class Ellipsoid:
    """{x : (x - center)^T A (x - center) <= 1}, A symmetric positive definite (float64 only).

    LMO: center - A^{-1} g / sqrt(g^T A^{-1} g)   (the ball's LMO after the change of variables
    y = A^{1/2} (x - center)).
    """

    A: Array
    center: Array | None = None

    def lmo(self, g: Array) -> Array:
        center = np.zeros(len(self.A)) if self.center is None else self.center
        A_inv_g = np.linalg.solve(self.A, g.astype(float))
        scale = math.sqrt(float(g @ A_inv_g))
        if scale == 0:  # every point is a minimizer; return the boundary point along e_1
            e = _first_basis_vector_like(center.astype(float))
            return center + e / math.sqrt(float(e @ self.A @ e))
        return center - A_inv_g / scale

    def contains(self, x: Array, tol: float = 1e-9) -> bool:
        center = np.zeros(len(self.A)) if self.center is None else self.center
        d = x.astype(float) - center
        return bool(d @ self.A @ d <= 1 + tol)


@dataclass(frozen=True)
class RowCardinalitySet:
    """{M in [0, 1]^{rows x cols} : every row of M sums to k}, the relaxed per-row pruning mask set.

    Its vertices are the 0/1 masks that keep exactly k entries per row, so the LMO is a per-row
    top-k: min <G, M> puts the k ones of each row on that row's k smallest entries of G.
    (To keep the k *largest* scores S, call lmo(-S).)  Works on numpy arrays and torch tensors.
    """

    rows: int
    cols: int
    k: int

    def __post_init__(self) -> None:
        if not 0 <= self.k <= self.cols:
            raise ValueError(
                f"RowCardinalitySet needs 0 <= k <= cols (got k={self.k}, cols={self.cols})"
            )

    def _check_shape(self, G: Any) -> None:
        if tuple(G.shape) != (self.rows, self.cols):
            raise ValueError(
                f"RowCardinalitySet({self.rows}x{self.cols}, k={self.k}) got a gradient of shape "
                f"{tuple(G.shape)}; pass one entry per mask entry"
            )

    def lmo(self, G: Any) -> Any:
        self._check_shape(G)
        if isinstance(G, np.ndarray):
            M = np.zeros_like(G)
            if self.k == 0:
                return M
            smallest = np.argsort(G, axis=1, kind="stable")[:, : self.k]
            np.put_along_axis(M, smallest, 1, axis=1)
            return M
        # torch.Tensor: same rule (stable, so ties go to the lower index, as numpy's above)
        M = G.new_zeros(G.shape)
        if self.k == 0:
            return M
        smallest = G.sort(dim=1, stable=True).indices[:, : self.k]
        return M.scatter_(1, smallest, 1.0)

    def contains(self, x: Any, tol: float = 1e-9) -> bool:
        M = np.asarray(x, dtype=float)
        return bool(
            M.shape == (self.rows, self.cols)
            and M.min() >= -tol
            and M.max() <= 1 + tol
            and np.all(np.abs(M.sum(axis=1) - self.k) <= tol * max(1, self.cols))
        )


# --- objectives ------------------------------------------------------------------------------


class Objective(Protocol):
    def value(self, x: Array) -> Scalar: ...

    def gradient(self, x: Array) -> Array: ...


@dataclass(frozen=True)
class Quadratic:
    """f(x) = 1/2 x^T Q x + b^T x + c; its curvature along d is d^T Q d (used by exact line search)."""

    Q: Array
    b: Array
    c: Scalar = 0.0

    def value(self, x: Array) -> Scalar:
        return inner(x, self.Q @ x) / 2 + inner(self.b, x) + self.c

    def gradient(self, x: Array) -> Array:
        return self.Q @ x + self.b

    def curvature(self, d: Array) -> Scalar:
        return inner(d, self.Q @ d)


@dataclass(frozen=True)
class SquaredDistance:
    """f(x) = ||x - p||^2: gradient 2 (x - p), curvature 2 ||d||^2, smoothness L = 2."""

    p: Array

    def value(self, x: Array) -> Scalar:
        d = x - self.p
        return inner(d, d)

    def gradient(self, x: Array) -> Array:
        return 2 * (x - self.p)

    def curvature(self, d: Array) -> Scalar:
        return 2 * inner(d, d)


# --- step rules ------------------------------------------------------------------------------
# Each rule maps (t, x, d = v - x, gap = <g, x - v>, f) to gamma in [0, 1].


class StepRule(Protocol):
    def __call__(self, t: int, x: Array, d: Array, gap: Scalar, f: Objective) -> Scalar: ...


def _clip01(gamma: Scalar) -> Scalar:
    return min(max(gamma, 0 * gamma), 0 * gamma + 1)


@dataclass
class OpenLoop:
    """gamma_t = ell / (t + ell); ell = 2 gives the classical 2/(t+2)."""

    ell: int = 2

    def __call__(self, t: int, x: Array, d: Array, gap: Scalar, f: Objective) -> Scalar:
        one = x.flat[0] * 0 + 1  # 1 in the backend's number type
        return one * self.ell / (t + self.ell)


@dataclass
class ShortStep:
    """gamma = min(1, gap / (L ||d||^2)): the minimizer of the L-smooth upper bound."""

    L: float

    def __call__(self, t: int, x: Array, d: Array, gap: Scalar, f: Objective) -> Scalar:
        dd = inner(d, d)
        return _clip01(gap / (self.L * dd)) if dd > 0 else 0 * gap


@dataclass
class ExactLineSearch:
    """argmin_{gamma in [0, 1]} f(x + gamma d) for a quadratic f: gamma = gap / (d^T Q d)."""

    def __call__(self, t: int, x: Array, d: Array, gap: Scalar, f: Objective) -> Scalar:
        curvature = getattr(f, "curvature", None)
        if curvature is None:
            raise TypeError(
                f"exact line search needs a quadratic objective with .curvature(d); {type(f).__name__} "
                "has none: use ShortStep(L) or Backtracking() instead"
            )
        c = curvature(d)
        return _clip01(gap / c) if c > 0 else 0 * gap + 1


@dataclass
class Backtracking:
    """Short step with an estimated smoothness constant M, adapted every iteration.

    Start from M / eta_down; double M until the sufficient-decrease test holds:
    f(x + gamma d) <= f(x) - gamma gap + gamma^2 M ||d||^2 / 2, with gamma = min(1, gap / (M ||d||^2)).
    """

    M: float = 1.0
    eta_up: float = 2.0
    eta_down: float = 0.9
    evaluations: int = field(default=0, init=False)

    def __call__(self, t: int, x: Array, d: Array, gap: Scalar, f: Objective) -> Scalar:
        dd = inner(d, d)
        if dd == 0:
            return 0 * gap
        fx = f.value(x)
        M = self.M * self.eta_down
        while True:
            gamma = _clip01(gap / (M * dd))
            self.evaluations += 1
            if f.value(x + gamma * d) <= fx - gamma * gap + gamma * gamma * M * dd / 2:
                self.M = M
                return gamma
            M *= self.eta_up


# --- the algorithm ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Iteration:
    """One row of the primal-dual log, at iterate x_t (before the step that makes x_{t+1})."""

    t: int
    primal: Scalar  # f(x_t)
    gap: Scalar  # <grad f(x_t), x_t - v_t>, an upper bound on f(x_t) - f*
    dual_bound: Scalar  # max_{s <= t} f(x_s) - gap_s, a lower bound on f*
    gamma: Scalar  # the step taken from x_t


@dataclass
class Result:
    x: Array
    log: list[Iteration]
    iterates: list[Array] = field(default_factory=list)  # x_0 .. x_T when keep_iterates=True

    def primal_gaps(self, f_star: Scalar) -> list[Scalar]:
        return [row.primal - f_star for row in self.log]


def frank_wolfe(
    f: Objective,
    C: FeasibleSet,
    x0: Array,
    step: StepRule | Callable[..., Scalar],
    iters: int,
    gap_tol: float = 0.0,
    keep_iterates: bool = False,
) -> Result:
    """Run ``iters`` Frank-Wolfe steps from a feasible x0 and log every iterate x_0 .. x_iters.

    Stops early when the duality gap reaches ``gap_tol`` (x is then optimal to within gap_tol).
    """
    x = x0.copy()
    log: list[Iteration] = []
    iterates: list[Array] = []
    dual_bound: Scalar = None
    for t in range(iters + 1):
        g = f.gradient(x)
        v = C.lmo(g)
        d = v - x
        gap = -inner(g, d)
        fx = f.value(x)
        if keep_iterates:
            iterates.append(x)
        dual_bound = fx - gap if dual_bound is None else max(dual_bound, fx - gap)
        if t == iters or gap <= gap_tol:
            log.append(Iteration(t, fx, gap, dual_bound, 0 * gap))
            break
        gamma = step(t, x, d, gap, f)
        log.append(Iteration(t, fx, gap, dual_bound, gamma))
        x = x + gamma * d
    return Result(x=x, log=log, iterates=iterates)
