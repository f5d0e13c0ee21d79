"""An optimizer sweep submitted as ONE job array through the real broker, collected from the ledger.

The broker runs the local executor with jobs sandboxed by bwrap (the default), on a temporary git
workspace holding a copy of experiments/; every task trains the real tiny LM for a few steps on the
fortunes corpus (installed in CI by .ci/components/30-lm-corpus.sh).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from framework.config import load_settings
from framework.dispatch.broker import BrokerHandle, start_broker
from tests.support import require_bwrap, unavailable

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path("/usr/share/games/fortunes/literature")

SWEEP = """\
name: opt-dispatch-test
mode: grid
fixed: {size: tiny, steps: 6, seq_len: 32, batch_size: 4, warmup: 1, eval_every: 3,
        optimizer: adamw, lr: 0.003}
search:
  schedule: [constant, cosine, wsd]
"""

pytestmark = pytest.mark.bwrap


def _python_mounts() -> list[dict[str, object]]:
    """The interpreter and its packages (torch, transformers) are outside the temp workspace."""
    roots = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    return [
        {"source": str(root), "read_only": True}
        for root in sorted(roots)
        if not root.is_relative_to("/usr")
    ]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    (workspace / "experiments").mkdir(parents=True)
    shutil.copy(REPO / "experiments" / "__init__.py", workspace / "experiments")
    for package in ("lm", "optimization"):
        shutil.copytree(
            REPO / "experiments" / package,
            workspace / "experiments" / package,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    (workspace / "sweep.yaml").write_text(SWEEP)
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    for args in (
        ["add", "-A"],
        ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "sweep"],
    ):
        subprocess.run(["git", "-C", str(workspace), *args], check=True)
    return workspace


@pytest.fixture
def broker(workspace: Path, tmp_path: Path) -> Iterator[BrokerHandle]:
    require_bwrap()
    if not CORPUS.is_file():
        unavailable("lm corpus", f"{CORPUS} is missing; run .ci/components/30-lm-corpus.sh")
    flags = {
        "state_dir": str(tmp_path / "state"),
        "cluster": {"local_workers": 2},
        "sandbox": {"mounts": _python_mounts()},
    }
    settings = load_settings(
        workspace=workspace, flags=flags, environ={"HOME": str(tmp_path / "state")}
    ).settings
    handle = start_broker(workspace, settings, "s-opt")
    yield handle
    handle.stop()


def sweep_cli(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REMOTE_RUN_SOCKET"}
    return subprocess.run(
        [sys.executable, "-m", "experiments.optimization", "sweep", "sweep.yaml", *args],
        cwd=workspace,
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=420,
    )


def test_sweep_runs_as_one_job_array_and_its_table_comes_from_the_ledger(
    broker: BrokerHandle, workspace: Path, tmp_path: Path
) -> None:
    socket = broker.env["REMOTE_RUN_SOCKET"]
    client = str(broker.client_path)
    submitted = sweep_cli(workspace, "--submit", "--wait", "--socket", socket, "--client", client)
    assert submitted.returncode == 0, submitted.stderr
    answer = json.loads(submitted.stdout)
    # one submission: one group, one run per config, indexed like the array
    assert answer["runs"] == [f"{answer['group']}.{i}" for i in range(3)]
    assert set(answer["states"].values()) == {"finished"}

    ledger = f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}"
    out = tmp_path / "collected"
    collected = sweep_cli(
        workspace, "--collect", "--ledger", ledger, "--group", answer["group"], "--out", str(out)
    )
    assert collected.returncode == 0, collected.stderr
    assert "warning" not in collected.stderr

    rows = json.loads((out / "sweep_summary.json").read_text())
    assert sorted(row["schedule"] for row in rows) == ["constant", "cosine", "wsd"]
    assert all(math.isfinite(row["final_val_loss"]) and row["final_val_loss"] > 0 for row in rows)
    assert all(row["optimizer"] == "adamw" and row["lr"] == 0.003 for row in rows)
    table = (out / "sweep_table.md").read_text().splitlines()
    assert len(table) == 2 + 3  # header, rule, one row per config
    assert (out / "sweep.png").stat().st_size > 10_000

    # the rows came from the ledger: each run's recorded metrics carry its sweep index
    from framework.ledger import open_ledger

    with open_ledger(ledger) as opened:
        runs = opened.runs(experiment="opt-dispatch-test")
    assert sorted(run.metrics["sweep"]["index"] for run in runs) == [0, 1, 2]
    assert all(run.session_id == "s-opt" for run in runs)


def test_collect_names_the_missing_experiment(
    broker: BrokerHandle, workspace: Path, tmp_path: Path
) -> None:
    ledger = f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}"
    result = sweep_cli(workspace, "--collect", "--ledger", ledger, "--experiment", "nothing-here")
    assert result.returncode == 2
    assert "no runs of experiment 'nothing-here'" in result.stderr
