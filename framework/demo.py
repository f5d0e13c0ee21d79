"""``python -m framework.demo``: one complete session on a fresh machine, no API key needed.

Creates a demo research repo, starts the scripted model server, launches the real Claude Code CLI
in bubblewrap against it, lets it run a small research loop (write an experiment, run it, write
report.tex and TODO.md, commit), then audits the transcript to HTML. ``--live`` uses the real
model (ANTHROPIC_API_KEY) with the same prompt instead of the script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

PROMPT = "Follow the research plan in TODO.md: run the Frank-Wolfe experiment and report it."

FRANK_WOLFE = """\
# Frank-Wolfe on the probability simplex: minimise f(x) = ||x - c||^2 with step 2/(k+2).
import json, os
c = [0.9, 0.4, -0.2, 0.1, 0.6]
x = [1.0, 0.0, 0.0, 0.0, 0.0]
gaps = []
for k in range(200):
    grad = [2 * (xi - ci) for xi, ci in zip(x, c)]
    vertex = min(range(len(x)), key=lambda i: grad[i])
    gap = sum(g * xi for g, xi in zip(grad, x)) - grad[vertex]
    gaps.append(gap)
    step = 2 / (k + 2)
    x = [(1 - step) * xi + (step if i == vertex else 0.0) for i, xi in enumerate(x)]
loss = sum((xi - ci) ** 2 for xi, ci in zip(x, c))
os.makedirs("runs/fw", exist_ok=True)
json.dump({"loss": round(loss, 6), "final_gap": round(gaps[-1], 6), "iterations": 200},
          open("runs/fw/metrics.json", "w"))
print("loss", round(loss, 6), "final_gap", round(gaps[-1], 6))
"""

WRITE_REPORT = """\
# Put the numbers of runs/fw into report.tex, before \\end{document}.
import json
m = json.load(open("runs/fw/metrics.json"))
section = (
    "\\\\section{Frank-Wolfe}\\n"
    f"After {m['iterations']} iterations the loss is {m['loss']} and the duality gap "
    f"{m['final_gap']} (run fw).\\n\\n"
)
text = open("report.tex").read()
open("report.tex", "w").write(text.replace("\\\\end{document}", section + "\\\\end{document}"))
"""

DEMO_SCRIPT: dict[str, Any] = {
    "description": "demo research loop: read the methodology, run Frank-Wolfe, report, commit",
    "expect": {"context_contains": ["How research is done in this repository"]},
    "turns": [
        {
            "text": "I will read the methodology first.",
            "actions": [{"bash": "head -n 12 CLAUDE.md"}],
        },
        {
            "text": "Writing the Frank-Wolfe experiment.",
            "actions": [{"write": {"path": "experiments/frank_wolfe.py", "content": FRANK_WOLFE}}],
        },
        {"actions": [{"bash": "python3 experiments/frank_wolfe.py"}]},
        {
            "expect": {"tool_result_contains": ["final_gap"]},
            "text": "Writing the result into report.tex from the run's metrics.",
            "actions": [
                {"write": {"path": "experiments/write_report.py", "content": WRITE_REPORT}},
                {
                    "bash": "python3 experiments/write_report.py && "
                    "printf '%s\\n' '- [x] Frank-Wolfe on the simplex (runs/fw)' >> TODO.md"
                },
            ],
        },
        {
            "actions": [
                {
                    "bash": "git add experiments/frank_wolfe.py experiments/write_report.py report.tex TODO.md && git -c user.name=agent "
                    "-c user.email=agent@example.invalid commit -q -m 'exp(fw): Frank-Wolfe on the simplex' "
                    "&& git log -1 --format=%s"
                }
            ]
        },
        {
            "text": "Done: the Frank-Wolfe run is in runs/fw, summarised in report.tex and committed."
        },
    ],
}


def _say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _preflight() -> str | None:
    """What is missing for the demo, in words a person can act on; None when ready."""
    from framework.sandbox.runtime import get_runtime

    availability = get_runtime("bwrap").availability()
    if not availability.ok:
        return f"bubblewrap is not usable: {availability.detail}"
    if shutil.which("claude") is None:
        return "the Claude Code CLI is not installed: run `bash .ci/components/60-agent-clis.sh` as root"
    return None


def run_demo(directory: Path, live: bool) -> int:
    from framework.init import init_workspace
    from framework.sandbox.launch import LaunchRequest, launch
    from framework.testing.clients import claude_env
    from framework.testing.script import parse_script
    from framework.testing.server import RecordedRequest, ScriptedModelServer

    problem = _preflight()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if live and not os.environ.get("ANTHROPIC_API_KEY"):
        print("error: --live needs ANTHROPIC_API_KEY in the environment", file=sys.stderr)
        return 2
    started = time.monotonic()
    directory = directory.resolve()
    repo = directory / "repo"
    if repo.exists():
        print(
            f"error: {repo} exists; remove it or pass --dir with a new directory", file=sys.stderr
        )
        return 2
    os.environ["XDG_STATE_HOME"] = str(directory / "state")
    _say(f"creating the demo research repo in {repo}")
    init_workspace(repo, tool="claude", force=False)

    script = parse_script(DEMO_SCRIPT)

    def progress(entry: RecordedRequest) -> None:
        if entry.error:
            _say(f"scripted model: {entry.error}")
        elif entry.kind == "main" and entry.turn is not None:
            what = ", ".join(entry.tools_called) or "final answer"
            _say(f"model turn {entry.turn + 1}/{len(script.turns)}: {what}")

    request: dict[str, Any] = {
        "workspace": repo,
        "tool": "claude",
        "runtime": "bwrap",
        "prompt": PROMPT,
        "yolo": True,
        "capture_output": True,
        "broker": False,
    }
    _say(
        "launching Claude Code in bubblewrap"
        + (" with the real model" if live else " against the scripted model")
    )
    if live:
        record = launch(LaunchRequest(**request))
    else:
        with ScriptedModelServer(script, on_request=progress) as server:
            record = launch(
                LaunchRequest(
                    **request, model_endpoint=server.url, extra_env=claude_env(server.url)
                )
            )
            if server.failures:
                _say("the session did not follow the script: " + "; ".join(server.failures))
    _say(f"session {record.id} ended with exit code {record.exit_code}")

    from framework.audit.audit import resolve, run_audit
    from framework.audit.render.html import render_html
    from framework.config import load_settings
    from framework.workspace import Workspace

    settings = load_settings(workspace=repo).settings
    workspace = Workspace(root=repo, settings=settings)
    session_dir = workspace.sessions_dir / record.id
    transcript = session_dir / record.transcripts[0] if record.transcripts else None
    audit_html = directory / "audit.html"
    findings: list[str] = []
    if transcript is not None:
        _say("auditing the transcript")
        report = run_audit(resolve(str(transcript)), settings, repo)
        audit_html.write_text(render_html(report), encoding="utf-8")
        findings = [f"{f.severity}: {f.message}" for f in report.findings]

    metrics_file = repo / "runs" / "fw" / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    print()
    print(f"report      {repo / 'report.tex'}")
    print(f"ledger      {workspace.ledger_url}")
    print(f"transcript  {transcript or '(none copied)'}")
    print(f"audit       {audit_html if transcript else '(not written)'}")
    if metrics:
        print(
            f"Frank-Wolfe after {metrics['iterations']} iterations: loss {metrics['loss']}, duality gap {metrics['final_gap']}"
        )
    print(f"audit findings: {len(findings)}" + "".join(f"\n  {f}" for f in findings))
    print(f"total time {time.monotonic() - started:.1f} s")
    return 0 if record.exit_code == 0 and metrics else 1


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
    return run_demo(args.dir, args.live)


if __name__ == "__main__":
    sys.exit(main())
