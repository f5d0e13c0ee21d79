"""``python -m framework.demo``: one complete research session on a fresh machine, no API key needed.

Creates a demo research repo, starts the scripted model server, and launches the real Claude Code
CLI in bubblewrap against it with the broker. The agent dispatches, through ``remote-run``, a
pruning sweep (magnitude vs Wanda vs SparseGPT at 50% on the tiny LM, one job array) and a
Frank-Wolfe run to the local executor; each job runs sandboxed on the host and lands in the ledger.
The agent then writes report.tex from the runs' output and commits, and the audit writes its HTML
report. ``--live`` plays the same task with the real model (ANTHROPIC_API_KEY) instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from framework.ledger.models import RunState
    from framework.sandbox.store import SessionRecord

CORPUS = Path("/usr/share/games/fortunes/literature")
JOB_HOME_CACHE = Path("/home/agent/.cache/agentic-researcher")
"""Where the LM cache is mounted for jobs: ``~/.cache/agentic-researcher`` of the sandbox user."""


def _say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class DemoResult:
    """What one demo run produced; ``ok`` when the session, every run and the audit completed."""

    repo: Path
    live: bool = False
    exit_code: int | None = None
    runs: list[RunState] = field(default_factory=list)
    transcript: Path | None = None
    audit_html: Path | None = None
    findings: list[str] = field(default_factory=list)
    script_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.exit_code == 0
            and not self.script_problems
            and (self.live or len(self.runs) == 4)
            and all(str(r.state) == "finished" for r in self.runs)
            and self.audit_html is not None
        )


def _preflight(live: bool) -> str | None:
    """What is missing for the demo, in words a person can act on; None when ready."""
    from framework.sandbox.runtime import get_runtime

    availability = get_runtime("bwrap").availability()
    if not availability.ok:
        return f"bubblewrap is not usable: {availability.detail}"
    if shutil.which("claude") is None:
        return "the Claude Code CLI is not installed: run `bash scripts/components.sh agent-clis` as root"
    if not CORPUS.is_file():
        return f"the LM corpus ({CORPUS}) is missing: run `bash scripts/components.sh lm-corpus` as root"
    if importlib.util.find_spec("torch") is None:
        return (
            f"torch is not installed for {sys.executable}: run `make venv` and use .venv/bin/python"
        )
    if live and not os.environ.get("ANTHROPIC_API_KEY"):
        return "--live needs ANTHROPIC_API_KEY in the environment"
    return None


def job_mounts() -> list[tuple[Path, Path]]:
    """(host path, path inside) that jobs need to run ``python -m experiments...`` sandboxed.

    Jobs see the host's /usr but not this virtual environment, its base interpreter, an editable
    checkout of ``experiments``, or the cache of trained LMs; all are mounted read-only.
    """
    from experiments.lm.cache import cache_root

    spec = importlib.util.find_spec("experiments")
    assert spec is not None and spec.submodule_search_locations is not None
    wanted = [Path(sys.prefix), Path(os.path.realpath(sys.base_prefix))]
    wanted += [Path(p).resolve() for p in spec.submodule_search_locations]
    mounts: list[tuple[Path, Path]] = []
    for path in wanted:
        covered = [path.is_relative_to(p) for p, _ in mounts]
        if not path.is_relative_to("/usr") and not any(covered):
            mounts.append((path, path))
    mounts.append((cache_root(), JOB_HOME_CACHE))
    return mounts


def _configure_jobs(repo: Path, mounts: list[tuple[Path, Path]]) -> None:
    """Write the job mounts into the workspace config, where broker, launcher and CLI all read them."""
    from framework.init import CONFIG_PATH

    config = repo / CONFIG_PATH
    text = config.read_text(encoding="utf-8")
    tables = ", ".join(
        f'{{ source = "{source}", target = "{target}", read_only = true }}'
        for source, target in mounts
    )
    placeholder = "# mounts = []"
    if placeholder not in text:
        raise RuntimeError(
            f"{config}: no '{placeholder}' line to replace; was the template changed?"
        )
    line = f"# Set by the demo: what jobs need to run the experiments.\nmounts = [{tables}]"
    config.write_text(text.replace(placeholder, line, 1), encoding="utf-8")


def _warm_up(directory: Path) -> None:
    """Train (or find cached) the tiny LM on the host, so sandboxed jobs read it from the cache."""
    out = directory / "warm-up"
    argv = [sys.executable, "-m", "experiments.pruning", "run", "--model", "tiny"]
    argv += ["--method", "magnitude", "--threads", "1", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            "preparing the tiny LM failed (`" + " ".join(argv) + "`):\n" + done.stderr[-2000:]
        )


def _launch(repo: Path, live: bool, result: DemoResult) -> SessionRecord:
    from framework.sandbox.launch import LaunchRequest, launch
    from framework.testing.clients import claude_env
    from framework.testing.research import PROMPT, demo_script
    from framework.testing.script import parse_script
    from framework.testing.server import RecordedRequest, ScriptedModelServer

    request: dict[str, Any] = {
        "workspace": repo,
        "tool": "claude",
        "runtime": "bwrap",
        "yolo": True,
        "capture_output": True,
        "broker": True,
    }
    if live:
        prompt = f"{PROMPT} Run jobs with the interpreter {sys.executable}."
        _say("launching Claude Code in bubblewrap with the real model")
        return launch(LaunchRequest(**request, prompt=prompt))

    script = parse_script(demo_script(sys.executable))

    def progress(entry: RecordedRequest) -> None:
        if entry.error:
            _say(f"scripted model: {entry.error}")
        elif entry.kind == "main" and entry.turn is not None:
            turn = script.turns[entry.turn]
            what = turn.text or ", ".join(entry.tools_called)
            _say(f"agent turn {entry.turn + 1}/{len(script.turns)}: {what}")

    _say("launching Claude Code in bubblewrap against the scripted model, with the broker")
    with ScriptedModelServer(script, on_request=progress) as server:
        record = launch(
            LaunchRequest(
                **request,
                prompt=PROMPT,
                model_endpoint=server.url,
                extra_env=claude_env(server.url),
            )
        )
        result.script_problems = list(server.failures)
        if not server.finished:
            result.script_problems.append(
                f"only {server.turns_served} of {len(script.turns)} script turns were played"
            )
    return record


def _audit(repo: Path, session_dir: Path, target: Path, result: DemoResult) -> None:
    from framework.audit.audit import resolve, run_audit
    from framework.audit.ledger import LedgerRuns
    from framework.audit.render.html import render_html
    from framework.config import load_settings
    from framework.workspace import Workspace

    settings = load_settings(workspace=repo).settings
    ledger_url = Workspace(root=repo, settings=settings).ledger_url
    report = run_audit(resolve(str(session_dir)), settings, repo, runs=LedgerRuns(ledger_url))
    target.write_text(render_html(report), encoding="utf-8")
    result.audit_html = target
    result.findings = [f"{f.severity}: {f.check}: {f.message}" for f in report.findings]


def run_demo(directory: Path, live: bool) -> DemoResult | str:
    """Run the whole demo under ``directory``; a string is the reason it could not start."""
    from framework.config import load_settings
    from framework.init import init_workspace
    from framework.ledger import open_ledger
    from framework.workspace import Workspace

    problem = _preflight(live)
    if problem:
        return problem
    directory = directory.resolve()
    repo = directory / "repo"
    if repo.exists():
        return f"{repo} exists; remove it or pass --dir with a new directory"
    os.environ["XDG_STATE_HOME"] = str(directory / "state")
    result = DemoResult(repo=repo, live=live)

    _say(f"creating the demo research repo in {repo}")
    # A repository of its own even when the demo directory lies inside another one (a clone of
    # this project): the agent commits there and the broker snapshots it.
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    init_workspace(repo, tool="claude", force=False)
    mounts = job_mounts()
    _configure_jobs(repo, mounts)
    _say("jobs will see, read-only: " + ", ".join(f"{s} at {t}" for s, t in mounts))
    started = time.monotonic()
    _say("preparing the tiny LM (trained once, then read from the cache)")
    _warm_up(directory)
    _say(f"tiny LM ready in {time.monotonic() - started:.1f} s")

    record = _launch(repo, live, result)
    result.exit_code = record.exit_code
    _say(f"session {record.id} ended with exit code {record.exit_code}")
    for problem in result.script_problems:
        _say(f"the session did not follow the script: {problem}")

    workspace = Workspace(root=repo, settings=load_settings(workspace=repo).settings)
    session_dir = workspace.sessions_dir / record.id
    if record.transcripts:
        result.transcript = session_dir / record.transcripts[0]
        _say("auditing the transcript against the methodology and the ledger")
        _audit(repo, session_dir, directory / "audit.html", result)
    with open_ledger(workspace.ledger_url) as ledger:
        result.runs = ledger.runs(session_id=record.id)
    _print_summary(result, workspace.ledger_url)
    return result


def _print_summary(result: DemoResult, ledger_url: str) -> None:
    print()
    print(f"report      {result.repo / 'report.tex'}")
    print(f"ledger      {ledger_url}")
    print(f"transcript  {result.transcript or '(none copied)'}")
    print(f"audit       {result.audit_html or '(not written)'}")
    print(f"runs        {len(result.runs)} in the ledger for this session")
    for run in result.runs:
        metrics = run.metrics
        if "perplexity" in metrics:
            method = metrics.get("config", {}).get("method", run.experiment)
            print(
                f"  {run.run_id:<28} {run.state!s:<9} {method:<10} perplexity "
                f"{metrics['perplexity']:.2f} (dense {metrics['dense_perplexity']:.2f})"
            )
        elif "final_fw_gap" in metrics:
            print(
                f"  {run.run_id:<28} {run.state!s:<9} Frank-Wolfe gap {metrics['final_fw_gap']:.6f} "
                f"after {metrics['iterations_run']} iterations"
            )
        else:
            print(f"  {run.run_id:<28} {run.state!s:<9} {run.reason or ''}")
    print(f"audit findings: {len(result.findings)}" + "".join(f"\n  {f}" for f in result.findings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m framework.demo", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("demo-output"),
        help="where to create the demo (default ./demo-output)",
    )
    parser.add_argument(
        "--live", action="store_true", help="use the real model (needs ANTHROPIC_API_KEY)"
    )
    args = parser.parse_args(argv)
    from framework.config import ConfigError

    started = time.monotonic()
    try:
        outcome = run_demo(args.dir, args.live)
    except (RuntimeError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if isinstance(outcome, str):
        print(f"error: {outcome}", file=sys.stderr)
        return 2
    print(f"total time {time.monotonic() - started:.1f} s")
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
