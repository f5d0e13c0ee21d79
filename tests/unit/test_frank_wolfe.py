"""Frank-Wolfe library: every LMO is a true minimizer, the gap bounds the error, known rates hold."""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import pytest

from experiments.optimization.frank_wolfe import (
    Backtracking,
    Ellipsoid,
    EuclideanBall,
    ExactLineSearch,
    L1Ball,
    LpBall,
    OpenLoop,
    Polytope,
    Quadratic,
    RowCardinalitySet,
    ShortStep,
    Simplex,
    SquaredDistance,
    frank_wolfe,
    mp_array,
)
from experiments.optimization.rates import fit_linear_rate, fit_power_law, run_rates

RNG = np.random.default_rng(1234)
DIRECTIONS = [RNG.standard_normal(4) for _ in range(20)]


def random_feasible_points(C, dim: int, n: int = 4000) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Random points of C: convex combinations of LMO answers (always feasible)."""
    anchors = np.array([C.lmo(RNG.standard_normal(dim)) for _ in range(64)])
    weights = RNG.dirichlet(np.full(len(anchors), 0.3), size=n)
    return weights @ anchors


def sphere_points(dim: int, n: int = 20000) -> np.ndarray:
    u = RNG.standard_normal((n, dim))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


@pytest.mark.parametrize("g", DIRECTIONS[:8])
def test_euclidean_ball_lmo_beats_every_point_of_the_sphere(g: np.ndarray) -> None:
    center = np.array([0.5, -1.0, 0.0, 2.0])
    C = EuclideanBall(dim=4, radius=1.5, center=center)
    v = C.lmo(g)
    assert C.contains(v)
    sampled = center + 1.5 * sphere_points(4)
    assert g @ v <= (sampled @ g).min() + 1e-12
    assert g @ v == pytest.approx(g @ center - 1.5 * np.linalg.norm(g))


@pytest.mark.parametrize("p", [1.5, 3.0, math.inf])
@pytest.mark.parametrize("g", DIRECTIONS[:5])
def test_lp_ball_lmo_attains_holder_bound_and_beats_samples(p: float, g: np.ndarray) -> None:
    C = LpBall(dim=4, p=p, radius=2.0)
    v = C.lmo(g)
    q = 1.0 if math.isinf(p) else p / (p - 1)
    assert C.contains(v, tol=1e-9)
    assert g @ v == pytest.approx(-2.0 * np.linalg.norm(g, ord=q))
    u = sphere_points(4)
    on_sphere = 2.0 * u / np.linalg.norm(u, ord=p, axis=1, keepdims=True)  # points with ||x||_p = 2
    assert g @ v <= (on_sphere @ g).min() + 1e-12


def test_lp_ball_rejects_p_at_most_one() -> None:
    with pytest.raises(ValueError, match="use L1Ball"):
        LpBall(dim=3, p=1.0)


@pytest.mark.parametrize("g", DIRECTIONS[:8])
def test_l1_ball_lmo_equals_best_vertex(g: np.ndarray) -> None:
    C = L1Ball(dim=4, radius=3.0)
    vertices = [s * 3.0 * e for e in np.eye(4) for s in (1, -1)]
    assert g @ C.lmo(g) == pytest.approx(min(g @ w for w in vertices))


@pytest.mark.parametrize("g", DIRECTIONS[:8])
def test_simplex_lmo_equals_best_vertex(g: np.ndarray) -> None:
    C = Simplex(dim=4, radius=2.0)
    v = C.lmo(g)
    assert C.contains(v)
    assert g @ v == pytest.approx(min(g @ (2.0 * e) for e in np.eye(4)))


@pytest.mark.parametrize("g", DIRECTIONS[:8])
def test_polytope_lmo_equals_best_vertex_and_beats_interior_points(g: np.ndarray) -> None:
    vertices = RNG.standard_normal((7, 4))
    C = Polytope(vertices=vertices)
    v = C.lmo(g)
    assert g @ v == pytest.approx((vertices @ g).min())
    inside = RNG.dirichlet(np.ones(7), size=2000) @ vertices
    assert g @ v <= (inside @ g).min() + 1e-12


@pytest.mark.parametrize("g", DIRECTIONS[:8])
def test_ellipsoid_lmo_beats_every_boundary_point(g: np.ndarray) -> None:
    Q, _ = np.linalg.qr(RNG.standard_normal((4, 4)))
    A = Q.T @ np.diag([1.0, 2.0, 5.0, 9.0]) @ Q
    center = np.array([1.0, 0.0, -1.0, 0.5])
    C = Ellipsoid(A=A, center=center)
    v = C.lmo(g)
    assert C.contains(v)
    # boundary points: center + A^{-1/2} u for unit u
    w, U = np.linalg.eigh(A)
    boundary = center + sphere_points(4) @ (U @ np.diag(w**-0.5) @ U.T)
    assert g @ v <= (boundary @ g).min() + 1e-12


def test_row_cardinality_lmo_equals_brute_force_over_all_masks() -> None:
    rows, cols, k = 3, 5, 2
    C = RowCardinalitySet(rows=rows, cols=cols, k=k)
    row_masks = [
        np.isin(np.arange(cols), keep).astype(float)
        for keep in itertools.combinations(range(cols), k)
    ]
    for _ in range(10):
        G = RNG.standard_normal((rows, cols))
        M = C.lmo(G)
        assert C.contains(M)
        best = min(
            float((G * np.array(choice)).sum())
            for choice in itertools.product(row_masks, repeat=rows)
        )
        assert float((G * M).sum()) == pytest.approx(best)
        assert set(np.unique(M)) <= {0.0, 1.0}


def test_row_cardinality_lmo_on_torch_tensors_matches_numpy() -> None:
    torch = pytest.importorskip("torch")
    C = RowCardinalitySet(rows=4, cols=6, k=3)
    G = RNG.standard_normal((4, 6))
    M_torch = C.lmo(torch.tensor(G))
    assert np.array_equal(M_torch.numpy(), C.lmo(G))


def test_row_cardinality_rejects_wrong_shape_and_k() -> None:
    with pytest.raises(ValueError, match=r"k <= cols"):
        RowCardinalitySet(rows=2, cols=3, k=4)
    with pytest.raises(ValueError, match=r"got a gradient of shape \(3, 2\)"):
        RowCardinalitySet(rows=2, cols=3, k=1).lmo(np.zeros((3, 2)))


@pytest.mark.parametrize(
    ("C", "dim"),
    [(EuclideanBall(dim=5), 5), (Simplex(dim=5), 5), (L1Ball(dim=5), 5), (LpBall(dim=5, p=3.0), 5)],
    ids=["ball", "simplex", "l1", "lp3"],
)
@pytest.mark.parametrize(
    "step", [OpenLoop(), ShortStep(L=2.0), ExactLineSearch(), Backtracking()], ids=type
)
def test_duality_gap_upper_bounds_primal_gap_every_iteration(C, dim: int, step) -> None:  # type: ignore[no-untyped-def]
    p = RNG.standard_normal(dim) * 0.3
    f = SquaredDistance(p)
    # f* from a long exact-line-search run, certified by its own duality gap
    reference = frank_wolfe(f, C, C.lmo(np.ones(dim)), ExactLineSearch(), 4000)
    f_star_upper = min(row.primal for row in reference.log)
    f_star_lower = max(row.dual_bound for row in reference.log)
    assert f_star_upper - f_star_lower < 1e-3
    result = frank_wolfe(f, C, C.lmo(np.ones(dim)), step, 200)
    for row in result.log:
        assert row.gap >= row.primal - f_star_upper - 1e-12
        assert row.dual_bound <= f_star_upper + 1e-12


def test_open_loop_on_simplex_obeys_the_1_over_t_bound() -> None:
    # f(x_t) - f* <= 2 L diam^2 / (t + 2) with L = 2 and diam^2 = 2 on the probability simplex
    for _ in range(5):
        p = RNG.standard_normal(6)
        f = SquaredDistance(p)
        result = frank_wolfe(f, Simplex(dim=6), np.eye(6)[0], OpenLoop(), 500)
        f_star = max(
            row.dual_bound
            for row in frank_wolfe(f, Simplex(dim=6), np.eye(6)[0], ExactLineSearch(), 5000).log
        )
        for row in result.log[1:]:
            assert row.primal - f_star <= 8 / (row.t + 2) + 1e-12


def test_open_loop_on_simplex_is_exactly_order_1_over_t_on_the_sparse_instance() -> None:
    # f(x) = ||x||^2 on a large simplex: x_t has at most t+1 nonzeros, so f(x_t) >= 1/(t+1).
    n = 5000
    f = SquaredDistance(np.zeros(n))
    result = frank_wolfe(f, Simplex(dim=n), np.eye(n)[0], OpenLoop(), 400)
    ts = list(range(20, 401))
    gaps = [result.log[t].primal - 1 / n for t in ts]
    assert fit_power_law(ts, gaps) == pytest.approx(-1.0, abs=0.05)
    assert all(result.log[t].primal >= 1 / (t + 1) - 1e-12 for t in ts)


@pytest.mark.parametrize("step", [ShortStep(L=2.0), ExactLineSearch(), Backtracking()], ids=type)
def test_linear_convergence_on_ball_when_gradient_is_bounded_away_from_zero(step) -> None:  # type: ignore[no-untyped-def]
    p = np.array([1.5, 0.8, 0.2, -0.4])  # outside the unit ball: ||grad f(x*)|| = 2 (||p|| - 1) > 0
    f_star = (np.linalg.norm(p) - 1) ** 2
    mpmath.mp.dps = 80
    result = frank_wolfe(
        SquaredDistance(mp_array(p)), EuclideanBall(dim=4), mp_array([0, 0, 0, 1]), step, 40
    )
    gaps = [float(row.primal - mpmath.mpf(f_star)) for row in result.log]
    ts = [t for t in range(1, len(gaps)) if gaps[t] > 1e-60]
    assert len(ts) >= 10
    assert fit_linear_rate(ts, [gaps[t] for t in ts]) < 0.5


def test_open_loop_on_ball_with_boundary_optimum_is_sublinear() -> None:
    metrics = run_rates("ball", "open-loop", "boundary", dim=5, iters=400)
    assert -2.3 < metrics["fits"]["power_law_exponent"] < -1.5


def test_mpmath_and_float64_runs_agree_on_short_runs() -> None:
    p = np.array([0.3, -1.2, 0.7])
    x0 = np.array([0.0, 0.0, 1.0])
    for step in (OpenLoop(), ExactLineSearch(), ShortStep(L=2.0)):
        in_float = frank_wolfe(SquaredDistance(p), EuclideanBall(dim=3), x0, step, 30)
        in_mp = frank_wolfe(
            SquaredDistance(mp_array(p, digits=60)), EuclideanBall(dim=3), mp_array(x0), step, 30
        )
        assert isinstance(in_mp.log[-1].primal, mpmath.mpf)
        for a, b in zip(in_float.log, in_mp.log, strict=True):
            assert float(b.primal) == pytest.approx(a.primal, rel=1e-10, abs=1e-14)


def test_exact_line_search_refuses_a_non_quadratic_objective() -> None:
    class Quartic:
        def value(self, x: np.ndarray) -> float:
            return float((x**4).sum())

        def gradient(self, x: np.ndarray) -> np.ndarray:
            return 4 * x**3

    with pytest.raises(TypeError, match="use ShortStep"):
        frank_wolfe(Quartic(), Simplex(dim=3), np.eye(3)[0], ExactLineSearch(), 5)


def test_quadratic_and_squared_distance_agree() -> None:
    p = np.array([0.2, -0.5, 1.0])
    quad = Quadratic(Q=2 * np.eye(3), b=-2 * p, c=float(p @ p))
    x = RNG.standard_normal(3)
    assert quad.value(x) == pytest.approx(SquaredDistance(p).value(x))
    assert np.allclose(quad.gradient(x), SquaredDistance(p).gradient(x))
