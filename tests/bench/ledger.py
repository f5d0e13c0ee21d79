"""Ledger benchmarks: durable append rates (one event per call, batches, and threads sharing
writes) at each SQLite sync level, filtered run listing over a large ledger, and chain
verification rate. Prints a JSON summary (and a markdown table on stderr).

    python -m tests.bench.ledger [--events 1000000] [--threads 8] [--url sqlite:///tmp/x.sqlite]
                                 [--postgres postgresql://user:pw@host/db]
                                 [--rounds 5] [--reference-only]

It starts with single appends against a reference loop (encode, hash and write each event under
``flock``, nothing else), alternated over ``--rounds`` on fresh files so that both see the same
load, and reports their ratio: on a shared machine the ratio is steadier than either rate.

Targets (issue 8): >= 20,000 durable appends/s, filtered list < 50 ms over 1,000,000 events,
verify >= 500,000 events/s. Every append is acknowledged only once durable: on SQLite its events
are written to the tail file (``sync=normal``, the default: in the OS page cache, which survives a
killed process; ``sync=full``: also fsync'ed). Each append rate includes folding those events into
the tables (the measured interval ends with a read, which folds what is left). Each rate is given
against wall time and against the CPU time of this process and its children (the verify helper),
because other jobs may share the machine: ``per_cpu_s`` is what the code costs, ``per_s`` what
this run got. With ``--postgres``, the append rates are also taken on that database (PostgreSQL's
own CPU time is not counted: it is another process).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from framework.ledger import Ledger, NewEvent, open_ledger

EXPERIMENTS = 50
BATCH = 999
SINGLE_EVENTS = 30_000
FULL_BATCHED_EVENTS = 150_000
POSTGRES_EVENTS = 6_000  # each of singles and threads; batches: 10x


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


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its children: those waited for, and those
    still running (the ledger's background folder, a verify helper), read from /proc."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + _live_children()


def _live_children() -> float:
    ticks = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            pids = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile: counted once waited for
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def measured(events: int, fn: Callable[[], Any]) -> dict[str, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn()
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return {
        "events": events,
        "per_s": events / wall,
        "per_cpu_s": events / cpu if cpu > 0 else float("inf"),
        "wall_s": wall,
        "cpu_s": cpu,
    }


def append_singles(ledger: Ledger, events: list[NewEvent]) -> None:
    for event in events:
        ledger.append(
            event.kind, run_id=event.run_id, session_id=event.session_id, payload=event.payload
        )


def reference_appends(path: Path, events: list[NewEvent]) -> None:
    """The least an acknowledged, chained append can cost in Python: per event, encode a body
    like the ledger's (sorted-key JSON naming the previous hash), hash it and ``write()`` it to a
    file under an exclusive ``flock``. No validation, no run states, no tables. Our single append
    is reported as a ratio to this, measured in the same run, because the machine may be loaded."""
    encode, sha256 = msgspec.json.Encoder(order="sorted").encode, hashlib.sha256
    flock, write, lock, unlock = fcntl.flock, os.write, fcntl.LOCK_EX, fcntl.LOCK_UN
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    prev = "0" * 64
    try:
        for seq, event in enumerate(events, 1):
            body = encode(
                {
                    "seq": seq,
                    "ts": "2026-11-23T12:00:00.000000+00:00",
                    "kind": event.kind,
                    "run_id": event.run_id,
                    "session_id": event.session_id,
                    "payload": event.payload,
                    "prev_hash": prev,
                }
            )
            prev = sha256(body).hexdigest()
            flock(fd, lock)
            write(fd, body + b"\n\n")
            flock(fd, unlock)
    finally:
        os.close(fd)


def single_vs_reference(
    directory: Path, events: int, rounds: int, offset: int
) -> tuple[dict[str, Any], int]:
    """Single appends (one event per call, ``sync=normal``, folds included) and the reference
    loop, alternated ``rounds`` times on fresh files so that both see the same load; the best
    round of each, and the ratio of their CPU costs per event."""
    ours: list[dict[str, float]] = []
    reference: list[dict[str, float]] = []
    for n in range(rounds):
        batch = run_events(events // 3, offset)
        offset += len(batch) // 3
        with open_ledger(f"sqlite:///{directory / f'single-{n}.sqlite'}") as ledger:
            ours.append(
                measured(
                    len(batch),
                    folded(
                        ledger, lambda ledger=ledger, batch=batch: append_singles(ledger, batch)
                    ),
                )
            )
        path = directory / f"reference-{n}"
        reference.append(
            measured(len(batch), lambda path=path, batch=batch: reference_appends(path, batch))
        )
    best = max(ours, key=lambda r: r["per_cpu_s"])
    best_reference = max(reference, key=lambda r: r["per_cpu_s"])
    return {
        "rounds": rounds,
        "single": best,
        "reference": best_reference,
        "us_per_event": 1e6 / best["per_cpu_s"],
        "reference_us_per_event": 1e6 / best_reference["per_cpu_s"],
        "cpu_ratio": best_reference["per_cpu_s"] / best["per_cpu_s"],
        "wall_ratio": best_reference["per_s"] / best["per_s"],
    }, offset


def append_batches(ledger: Ledger, events: list[NewEvent]) -> None:
    for start in range(0, len(events), BATCH):
        ledger.append_many(events[start : start + BATCH])


def append_from_threads(ledger: Ledger, events: list[NewEvent], threads: int) -> None:
    """Each thread appends one event per call, as the broker's request threads do."""
    # Each run's events stay in one thread, in order (a run is started after it is submitted).
    shares = [events[3 * i : 3 * i + 3] for i in range(len(events) // 3)]
    parts = [[e for share in shares[n::threads] for e in share] for n in range(threads)]
    workers = [threading.Thread(target=append_singles, args=(ledger, part)) for part in parts]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def folded(ledger: Ledger, appends: Callable[[], None]) -> Callable[[], None]:
    """The appends, then a read: it folds what they left in the tail into the tables."""

    def run() -> None:
        appends()
        ledger.head()

    return run


def bench_appends(
    url: str, threads: int, single_events: int, batched_events: int, offset: int
) -> tuple[dict[str, Any], int]:
    """Appends of fresh runs into the ledger at ``url``; returns the results and the next offset.
    Each measured interval ends with ``head()``, which folds the events still in the tail."""
    results: dict[str, Any] = {}
    with open_ledger(url) as ledger:
        singles = run_events(single_events // 3, offset)
        offset += len(singles) // 3
        results["single"] = measured(
            len(singles), folded(ledger, lambda: append_singles(ledger, singles))
        )

        grouped = run_events(single_events // 3, offset)
        offset += len(grouped) // 3
        before = ledger.head()[0]
        group = measured(
            len(grouped), folded(ledger, lambda: append_from_threads(ledger, grouped, threads))
        )
        # Events written together (one write to the tail, or one transaction) share their time.
        writes = len({event.ts for event in ledger.events(after_seq=before)})
        group["events_per_write"] = len(grouped) / writes
        results[f"{threads}_threads"] = group

        batched = run_events(batched_events // 3, offset)
        offset += len(batched) // 3
        results[f"batches_of_{BATCH}"] = measured(
            len(batched), folded(ledger, lambda: append_batches(ledger, batched))
        )
    return results, offset


def fill(ledger: Ledger, total_events: int, offset: int) -> None:
    while (head := ledger.head()[0]) < total_events:
        n_runs = min(BATCH // 3, max(1, (total_events - head) // 3))
        ledger.append_many(run_events(n_runs, offset))
        offset += n_runs


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    samples, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


def bench_reads(ledger: Ledger) -> dict[str, Any]:
    results: dict[str, Any] = {"events": ledger.head()[0], "list_ms": {}}
    queries: dict[str, Callable[[], Any]] = {
        "experiment+state, latest 50": lambda: ledger.runs(
            experiment="exp-7", state="finished", limit=50
        ),
        "tag, latest 50": lambda: ledger.runs(tag="sweep-3", limit=50),
        "session, latest 50": lambda: ledger.runs(session_id="sess-5", limit=50),
        "state=failed, latest 200": lambda: ledger.runs(state="failed", limit=200),
    }
    for name, query in queries.items():
        seconds, runs = timed(query, repeats=15)
        assert runs, f"query {name!r} found nothing"
        results["list_ms"][name] = seconds * 1000

    reports: list[Any] = []
    samples = [
        measured(results["events"], lambda: reports.append(ledger.verify())) for _ in range(3)
    ]
    assert all(report.ok for report in reports), reports[-1].problems
    results["verify"] = max(samples, key=lambda sample: sample["per_s"])
    results["verify"]["runs"] = len(samples)
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| measure | wall rate | CPU rate (process + children) | target |",
        "|---|---|---|---|",
    ]
    if "reference" in results:
        ref = results["reference"]
        for name in ("single", "reference"):
            r = ref[name]
            label = (
                "append, normal, single (best of rounds)"
                if name == "single"
                else "reference loop: encode + sha256 + flock + write"
            )
            lines.append(
                f"| {label} ({r['events']:,} events, {1e6 / r['per_cpu_s']:.1f} us CPU/event) "
                f"| {r['per_s']:,.0f} events/s | {r['per_cpu_s']:,.0f} events/CPU-s | |"
            )
        lines.append(
            f"| single append cost / reference cost | {ref['wall_ratio']:.2f}x wall "
            f"| {ref['cpu_ratio']:.2f}x CPU | |"
        )
    for sync, appends in results["append"].items():
        for name, r in appends.items():
            per_commit = (
                f", {r['events_per_write']:.1f} events/write" if "events_per_write" in r else ""
            )
            lines.append(
                f"| append, {sync}, {name.replace('_', ' ')} ({r['events']:,} events{per_commit}) "
                f"| {r['per_s']:,.0f} events/s | {r['per_cpu_s']:,.0f} events/CPU-s | >= 20,000 |"
            )
    for name, ms in results.get("list_ms", {}).items():
        lines.append(
            f"| filtered list over {results['events']:,} events ({name}) | {ms:.1f} ms | | < 50 ms |"
        )
    if "verify" not in results:
        return "\n".join(lines)
    v = results["verify"]
    lines.append(
        f"| verify {results['events']:,} events (best of {v['runs']}) | {v['per_s']:,.0f} events/s "
        f"| {v['per_cpu_s']:,.0f} events/CPU-s | >= 500,000 |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=8, help="appending threads (group commit)")
    parser.add_argument(
        "--url", help="ledger URL for the read benchmarks (default: a fresh SQLite file)"
    )
    parser.add_argument(
        "--postgres", help="also measure appends on this PostgreSQL database (an empty schema)"
    )
    parser.add_argument(
        "--reference-only",
        action="store_true",
        help="only single appends against the reference loop (quick; see single_vs_reference)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of single vs reference")
    args = parser.parse_args()
    results: dict[str, Any] = {"load_average_before": os.getloadavg(), "append": {}}
    with tempfile.TemporaryDirectory() as tmp:
        base = f"sqlite:///{Path(tmp) / 'ledger.sqlite'}"
        url = args.url or base
        offset = 0
        results["reference"], offset = single_vs_reference(
            Path(tmp), SINGLE_EVENTS, args.rounds, offset
        )
        if args.reference_only:
            results["load_average_after"] = os.getloadavg()
            print(json.dumps(results, indent=2))
            print(markdown(results), file=sys.stderr)
            return
        full, offset = bench_appends(
            f"sqlite:///{Path(tmp) / 'full.sqlite'}?sync=full",
            args.threads,
            SINGLE_EVENTS // 5,
            min(FULL_BATCHED_EVENTS, args.events),
            offset,
        )
        normal, offset = bench_appends(url, args.threads, SINGLE_EVENTS, args.events, offset)
        results["append"] = {"normal": normal, "full": full}
        if args.postgres:
            results["append"]["postgres"], offset = bench_appends(
                args.postgres, args.threads, POSTGRES_EVENTS, 10 * POSTGRES_EVENTS, offset
            )
        with open_ledger(url) as ledger:
            fill(ledger, args.events, offset)
            results |= bench_reads(ledger)
    results["url_scheme"] = url.split("://")[0]
    results["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    print(markdown(results), file=sys.stderr)


if __name__ == "__main__":
    main()
