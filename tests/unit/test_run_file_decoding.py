"""What a job writes in its run dir is decoded with a bound: deep or broken JSON is ignored, never
an exception in the broker (a RecursionError there once left runs 'running' in the ledger and
killed the thread that finishes Slurm runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from framework.dispatch.broker import _results
from framework.dispatch.models import MAX_NESTING, RequestError, decode_bounded


@pytest.mark.parametrize(
    "text",
    [
        "[" * 500_000,
        "[" * 700 + "]" * 700,
        '{"a": ' * (MAX_NESTING + 1) + "1" + "}" * (MAX_NESTING + 1),
        "NaN",
        '{"loss": 1',
    ],
    ids=["unclosed-500k", "valid-700-deep", "one-past-the-bound", "nan", "cut-off"],
)
def test_job_written_json_past_the_bound_is_refused_by_name_never_raised_otherwise(
    text: str,
) -> None:
    with pytest.raises(RequestError, match=r"metrics\.json"):
        decode_bounded(text, "metrics.json")


def test_metrics_nested_too_deep_are_dropped_and_the_artifacts_still_listed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "artifacts").mkdir(parents=True)
    (run_dir / "artifacts" / "model.pt").write_bytes(b"x")
    (run_dir / "metrics.json").write_text("[" * 700 + "]" * 700)
    assert _results(run_dir) == (None, ["artifacts/model.pt"])
    (run_dir / "metrics.json").write_text('{"loss": 0.5, "per_layer": {"0": [1, 2]}}')
    assert _results(run_dir) == ({"loss": 0.5, "per_layer": {"0": [1, 2]}}, ["artifacts/model.pt"])
