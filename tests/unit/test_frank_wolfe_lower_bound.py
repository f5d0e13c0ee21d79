"""The Omega(1/sqrt(eps)) lower bound: the constructed start keeps t^2 (f(x_t) - f*) near 9/16."""

from __future__ import annotations

import json
import random
import warnings

import mpmath
import pytest

from experiments.optimization.__main__ import main
from experiments.optimization.lower_bound import (
    LIMIT_CONSTANT,
    PrecisionWarning,
    constant_table,
    digits_needed,
    forward_run,
    max_iters,
    objective,
    predecessors,
    random_start,
    run_lower_bound,
    steps_followed,
    tracking_horizon,
    working_digits,
    worst_case_trajectory,
)


@pytest.fixture(scope="module")
def worst_case_1000() -> list:  # type: ignore[type-arg]
    mpmath.mp.dps = digits_needed(1000)
    return worst_case_trajectory(1000)


def test_every_constructed_point_is_a_frank_wolfe_predecessor_of_the_next(worst_case_1000) -> None:  # type: ignore[no-untyped-def]
    forward = forward_run(worst_case_1000[0], 1000)
    assert tracking_horizon(forward, worst_case_1000) == 1000
    for x in worst_case_1000:
        assert x[0] ** 2 + x[1] ** 2 <= 1


def test_predecessor_maps_back_onto_the_point() -> None:
    mpmath.mp.dps = 50
    x = (mpmath.mpf("0.9"), mpmath.mpf("0.05"))
    for z in predecessors(x):
        (step,) = [y for y in forward_run(z, 1)[1:]]
        assert abs(step[0] - x[0]) < mpmath.mpf(10) ** -40
        assert abs(step[1] - x[1]) < mpmath.mpf(10) ** -40


def test_lower_bound_constant_is_stable_to_several_digits_as_t_doubles(worst_case_1000) -> None:  # type: ignore[no-untyped-def]
    rows = {
        row.t: row
        for row in constant_table([objective(x) for x in worst_case_1000], [125, 250, 500, 1000])
    }
    # raw t^2 f stays bounded away from zero and approaches 9/16 from below
    assert all(0.5 < rows[t].t2_gap < LIMIT_CONSTANT for t in (125, 250, 500, 1000))
    # the offset-free estimate moves by less than 1e-3 relative when t doubles ...
    assert abs(rows[500].increment_constant / rows[250].increment_constant - 1) < 1e-3
    # ... and its Richardson extrapolation agrees with 9/16 to 5 digits
    assert rows[500].extrapolated == pytest.approx(LIMIT_CONSTANT, abs=1e-5)


def test_random_starts_converge_faster_than_the_worst_case() -> None:
    mpmath.mp.dps = 60
    rng = random.Random(7)
    for _ in range(3):
        f = [objective(x) for x in forward_run(random_start(rng), 400)]
        assert 400**2 * f[400] < 0.05


def test_float64_random_starts_are_exact_frank_wolfe_steps_up_to_rounding() -> None:
    """Each float64 step is, to ~1e-12 of the distance to p, the exact step from its own start:
    a pseudo-orbit of the map that the chaotic dynamics shadow, so float64 samples random starts."""
    mpmath.mp.dps = 50
    rng = random.Random(3)
    for _ in range(2):
        trajectory = forward_run(random_start(rng), 300, float64=True)
        assert 300**2 * objective(trajectory[300]) < 0.05  # still far below the worst case
        for t in range(300):
            x = (mpmath.mpf(float(trajectory[t][0])), mpmath.mpf(float(trajectory[t][1])))
            exact = forward_run(x, 1)[1]
            error = mpmath.sqrt(
                (exact[0] - trajectory[t + 1][0]) ** 2 + (exact[1] - trajectory[t + 1][1]) ** 2
            )
            assert error < 1e-9 * mpmath.sqrt(objective(exact))


def test_too_few_digits_are_raised_to_what_the_run_needs_with_a_note() -> None:
    digits, note = working_digits(2000, 400)
    assert digits == digits_needed(2000) == 637
    assert note is not None and "t = 1328" in note and "637 digits" in note
    assert "--iters 1215 or fewer" in note
    assert steps_followed(400) == 1328
    assert max_iters(400) == 1215 and digits_needed(1215) <= 400 < digits_needed(1216)
    assert working_digits(2000, None) == (637, None)
    assert working_digits(2000, 700) == (700, None)  # more than needed is kept
    with pytest.raises(ValueError, match="at least 15"):
        working_digits(2000, 5)


def test_too_little_precision_loses_the_worst_case_forward() -> None:
    mpmath.mp.dps = 60  # about 200 bits: the doubling of errors wins after about 150 steps
    with pytest.warns(PrecisionWarning, match=rf"mp.dps >= {digits_needed(400)}"):
        constructed = worst_case_trajectory(400)
    horizon = tracking_horizon(forward_run(constructed[0], 400), constructed)
    assert 100 < horizon < 250


def test_the_library_warns_with_the_digits_needed_and_is_silent_at_enough() -> None:
    mpmath.mp.dps = 40
    with pytest.warns(PrecisionWarning, match=r"only to about t = 132 of 200.*>= 95"):
        worst_case_trajectory(200)
    mpmath.mp.dps = digits_needed(200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        worst_case_trajectory(200)


def test_lower_bound_entry_point_writes_metrics_and_plots(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert (
        main(["fw-lower-bound", "--iters", "200", "--random-starts", "2", "--out", str(tmp_path)])
        == 0
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["forward_tracks_construction_until"] == 200
    assert (tmp_path / "lower_bound_constant.png").stat().st_size > 10_000
    assert (tmp_path / "lower_bound_rates.png").stat().st_size > 10_000
    positions = metrics["optimum_positions"]
    assert positions["interior"]["linear_rate_per_iteration"] < 0.5
    assert positions["exterior"]["linear_rate_per_iteration"] < 0.5


def test_lower_bound_rejects_too_few_iterations() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        run_lower_bound(iters=5)
