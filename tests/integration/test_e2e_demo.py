"""The main job: `python -m framework.demo` runs a whole session through the real dispatcher.

One demo run (about a minute) is shared by the tests of this module; each test checks one thing
it must have produced.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from framework.config import load_settings
from framework.demo import main
from framework.ledger import open_ledger
from framework.ledger.models import RunState
from framework.testing.research import FW_GROUP, PRUNING_GROUP, PRUNING_METHODS
from framework.workspace import Workspace
from tests.integration.test_audit_browser import browse, console_errors
from tests.support import require_binary, require_bwrap

pytestmark = [pytest.mark.agent_cli, pytest.mark.bwrap]


@dataclass
class Demo:
    root: Path
    exit_code: int
    out: str
    runs: list[RunState]
    kinds: dict[str, list[str]]

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    def group(self, name: str) -> list[RunState]:
        return sorted(
            (r for r in self.runs if r.experiment == name), key=lambda r: r.array_index or 0
        )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    require_bwrap()
    require_binary("claude", "agent CLIs (Claude Code)")
    # As with `make demo` in a clone of this project: the demo directory lies inside another
    # git repository, and the demo repo must still be a repository of its own.
    outer = tmp_path_factory.mktemp("clone")
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    root = outer / "demo-output"
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(root / "unused"))
        with contextlib.redirect_stdout(out):
            exit_code = main(["--dir", str(root)])
        repo = root / "repo"
        workspace = Workspace(root=repo, settings=load_settings(workspace=repo).settings)
        with open_ledger(workspace.ledger_url) as ledger:
            runs = ledger.runs()
            kinds = {r.run_id: [str(e.kind) for e in ledger.events(run_id=r.run_id)] for r in runs}
    yield Demo(root, exit_code, out.getvalue(), runs, kinds)


def test_demo_succeeds_and_prints_where_everything_is(demo: Demo) -> None:
    assert demo.exit_code == 0, demo.out
    for label in ("report", "ledger", "transcript", "audit"):
        assert f"\n{label:<12}" in demo.out, demo.out
    assert "audit findings: 0" in demo.out, demo.out


def test_every_experiment_went_through_the_broker_into_the_ledger(demo: Demo) -> None:
    sweep, fw = demo.group(PRUNING_GROUP), demo.group(FW_GROUP)
    assert [r.array_index for r in sweep] == list(range(len(PRUNING_METHODS)))
    assert len(fw) == 1 and len(demo.runs) == len(sweep) + 1
    for run in demo.runs:
        assert str(run.state) == "finished" and run.exit_code == 0, (run.run_id, run.reason)
        assert run.executor == "local" and run.git_commit is None  # dispatched before the commit
        assert demo.kinds[run.run_id] == ["run_submitted", "run_started", "run_finished"]
        assert run.extra.get("sandbox") == "bwrap", run.extra
    methods = [r.metrics["config"]["method"] for r in sweep]
    assert methods == list(PRUNING_METHODS)
    assert {r.metrics["sparsity"] for r in sweep} == {0.5}
    assert len({r.metrics["dense_perplexity"] for r in sweep}) == 1
    assert 0 < fw[0].metrics["final_fw_gap"] < 0.01 and fw[0].metrics["iterations_run"] == 1000


def test_report_holds_the_ledger_numbers_and_cites_their_runs(demo: Demo) -> None:
    report = (demo.repo / "report.tex").read_text()
    for run in demo.group(PRUNING_GROUP):
        method, perplexity = run.metrics["config"]["method"], run.metrics["perplexity"]
        assert f"{method} & {perplexity:.2f} & \\run{{{run.run_id}}}" in report
        assert f"{method:<10} perplexity {perplexity:.2f}" in demo.out
    (fw,) = demo.group(FW_GROUP)
    gap = f"{fw.metrics['final_fw_gap']:.6f}"
    assert f"Frank-Wolfe gap is {gap}" in report and f"\\run{{{fw.run_id}}}" in report
    assert f"Frank-Wolfe gap {gap}" in demo.out
    results = report.index("\\section{Results}")
    assert results < report.index("\\subsection{E001") < report.index("\\section{Negative results}")


def test_session_is_committed_and_recorded_with_its_transcript(demo: Demo) -> None:
    log = subprocess.run(
        ["git", "-C", str(demo.repo), "log", "--format=%s"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(log) == 1 and log[0].startswith("exp(E001):")
    todo = (demo.repo / "TODO.md").read_text()
    assert all(r.run_id in todo for r in demo.runs)
    transcript = Path(demo.out.split("\ntranscript  ")[1].split("\n")[0])
    assert transcript.is_file() and "remote-run --wait --array 0-2" in transcript.read_text()


@pytest.mark.browser
def test_audit_report_opens_in_headless_chromium(demo: Demo, tmp_path: Path) -> None:
    page = demo.root / "audit.html"
    done = browse(page, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_errors(done.stderr) == []
    assert "remote-run" in done.stdout and "<html" in done.stdout.lower()


def test_demo_refuses_to_overwrite_an_existing_repo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_bwrap()
    require_binary("claude", "agent CLIs (Claude Code)")
    (tmp_path / "demo" / "repo").mkdir(parents=True)
    assert main(["--dir", str(tmp_path / "demo")]) == 2
    assert "exists; remove it or pass --dir" in capsys.readouterr().err
