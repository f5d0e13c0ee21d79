"""Ledger benchmarks: durable append rate (single and batched), filtered run listing over a large
ledger, and chain verification rate. Prints a JSON summary (and a markdown table on stderr).

    python -m tests.bench.ledger [--events 1000000] [--url sqlite:///tmp/x.sqlite]

Targets (issue 8): >= 20,000 durable appends/s, filtered list < 50 ms over 1,000,000 events,
verify >= 500,000 events/s. Every append here is acknowledged only after its commit (SQLite WAL,
synchronous=FULL: fsync before returning).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from framework.ledger import Ledger, NewEvent, open_ledger

EXPERIMENTS = 50
BATCH = 1000


def run_events(n_runs: int, offset: int) -> list[NewEvent]:
    """Three events per run (submitted, started, finished or failed), like a real sweep."""
    events = []
    for r in range(offset, offset + n_runs):
        run_id = f"run-{r:08d}"
        events.append(
            NewEvent(
                "run_submitted",
                run_id,
                f"sess-{r % 97}",
                {
                    "experiment": f"exp-{r % EXPERIMENTS}",
                    "argv": ["python", "prune.py", "--sparsity", str(r % 10 / 10)],
                    "params": {"sparsity": r % 10 / 10, "method": "wanda"},
                    "executor": "slurm",
                    "tags": [f"sweep-{r % 20}"],
                },
            )
        )
        events.append(
            NewEvent("run_started", run_id, None, {"slurm_job_id": str(r), "nodes": ["n1"]})
        )
        final = "run_failed" if r % 7 == 0 else "run_finished"
        events.append(
            NewEvent(
                final, run_id, None, {"exit_code": int(r % 7 == 0), "metrics": {"ppl": 10 + r % 13}}
            )
        )
    return events


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    samples, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


def bench(ledger: Ledger, total_events: int) -> dict[str, Any]:
    results: dict[str, Any] = {}

    singles = run_events(300, offset=10_000_000)
    start = time.perf_counter()
    for event in singles:
        ledger.append(
            event.kind, run_id=event.run_id, session_id=event.session_id, payload=event.payload
        )
    results["append_single_events_per_s"] = len(singles) / (time.perf_counter() - start)

    written, batch_seconds, offset = len(singles), 0.0, 0
    while written < total_events:
        n_runs = min(BATCH // 3, max(1, (total_events - written) // 3))
        batch = run_events(n_runs, offset)
        offset += n_runs
        start = time.perf_counter()
        ledger.append_many(batch)
        batch_seconds += time.perf_counter() - start
        written += len(batch)
    results["append_batched_events_per_s"] = (written - len(singles)) / batch_seconds
    results["batch_size"] = BATCH - BATCH % 3
    results["events"] = written

    queries: dict[str, Callable[[], Any]] = {
        "experiment+state, latest 50": lambda: ledger.runs(
            experiment="exp-7", state="finished", limit=50
        ),
        "tag, latest 50": lambda: ledger.runs(tag="sweep-3", limit=50),
        "session, latest 50": lambda: ledger.runs(session_id="sess-5", limit=50),
        "state=failed, latest 200": lambda: ledger.runs(state="failed", limit=200),
    }
    results["list_ms"] = {}
    for name, query in queries.items():
        seconds, runs = timed(query, repeats=15)
        assert runs, f"query {name!r} found nothing"
        results["list_ms"][name] = seconds * 1000

    seconds, report = timed(ledger.verify, repeats=1)
    assert report.ok, report.problems
    results["verify_events_per_s"] = report.events / seconds
    results["verify_seconds"] = seconds
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| measure | result | target |",
        "|---|---|---|",
        f"| durable append, one event per transaction | {results['append_single_events_per_s']:,.0f} events/s | >= 20,000 |",
        f"| durable append, batches of {results['batch_size']} | {results['append_batched_events_per_s']:,.0f} events/s | >= 20,000 |",
    ]
    for name, ms in results["list_ms"].items():
        lines.append(
            f"| filtered list over {results['events']:,} events ({name}) | {ms:.1f} ms | < 50 ms |"
        )
    lines.append(f"| verify | {results['verify_events_per_s']:,.0f} events/s | >= 500,000 |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--url", help="ledger URL (default: a fresh SQLite file in a temporary directory)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'ledger.sqlite'}"
        with open_ledger(url) as ledger:
            results = bench(ledger, args.events)
    results["url_scheme"] = url.split("://")[0]
    print(json.dumps(results, indent=2))
    print(markdown(results), file=sys.stderr)


if __name__ == "__main__":
    main()
