"""Audit throughput and peak memory on large transcripts built by repeating real sessions.

    python -m tests.bench.audit [--sizes-mb 100,1000] [--formats claude,codex,gemini,opencode]
                                [--keep DIR] [--profile]

For each format and size it writes a transcript of that size by repeating the session transcripts
under tests/fixtures/transcripts/real/<format>/ (falling back to our written fixtures when no real
one exists), then runs the full pipeline (file -> events -> checks -> summary -> report) in a fresh
child process and prints MB/s and events/s of wall-clock and of CPU time, the child's peak RSS and
the load average as a JSON list and a markdown table. A large file is read by worker processes
(framework/audit/parallel.py): CPU time is the child's and its workers' together, and the
workers' CPU time and peak RSS are shown apart. Other jobs on the machine slow the wall clock
more than the CPU time, so compare CPU rates across runs. ``--profile`` adds the functions that
took the most time (cProfile, which roughly doubles the run time) for each file.

The machine's speed varies from minute to minute (shared hosts), so each JSONL file is also read by a
reference in its own child process right after the audit: msgspec decoding every line into plain
Python objects in one process, and nothing else (the issue's "a fast JSON library reads such
lines"). The table gives the audit's wall-clock rate as a ratio of the reference's, measured in the
same run: that ratio, unlike MB/s, holds from one minute to the next.

Claude Code, Codex and Gemini CLI transcripts are JSONL files: the real session is repeated whole,
line for line (a Gemini session is an upsert log, so its repeats rewrite the same messages: the
reader decodes every line and folds them into one session's events). OpenCode keeps sessions in a
SQLite database: the real session's rows are inserted again under new ids until the database file
reaches the size, with the indexes OpenCode creates (the fixture is a dump of the rows alone).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "transcripts"
FALLBACK = {fmt: FIXTURES / fmt for fmt in ("claude", "codex", "gemini", "opencode")}


OPENCODE_INDEXES = """
CREATE INDEX IF NOT EXISTS message_session_idx ON message (session_id);
CREATE INDEX IF NOT EXISTS part_message_idx ON part (message_id);
CREATE INDEX IF NOT EXISTS part_session_idx ON part (session_id);
"""
"""The indexes OpenCode's schema declares on its message and part tables."""


def sources(fmt: str) -> list[Path]:
    pattern = "*.sql" if fmt == "opencode" else "*.jsonl"
    real = sorted((FIXTURES / "real" / fmt).glob(pattern))
    return real or sorted(p for p in FALLBACK[fmt].rglob(pattern) if "subagents" not in p.parts)


def build(fmt: str, size_mb: int, out: Path) -> Path:
    """Repeat the source sessions (whole sessions, in order) until the file reaches ``size_mb``."""
    target = size_mb * 1_000_000
    path = out / f"{fmt}-{size_mb}MB.{'db' if fmt == 'opencode' else 'jsonl'}"
    if path.exists() and path.stat().st_size >= target:
        return path
    if fmt == "opencode":
        return build_database(sources(fmt), target, path)
    blob = b"".join(p.read_bytes() for p in sources(fmt))
    if not blob.endswith(b"\n"):
        blob += b"\n"
    with path.open("wb") as fh:
        written = 0
        chunk = blob * max(1, (8 << 20) // len(blob))
        while written < target:
            fh.write(chunk)
            written += len(chunk)
    return path


def build_database(dumps: list[Path], target: int, path: Path) -> Path:
    """An OpenCode database of about ``target`` bytes: the dumped sessions, then their rows again
    and again, each copy under new session, message and part ids."""
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    for dump in dumps:
        db.executescript(dump.read_text())
    db.executescript(OPENCODE_INDEXES)
    sessions = db.execute("SELECT * FROM session").fetchall()
    messages = db.execute("SELECT id, session_id, time_created, time_updated, data FROM message")
    messages_rows = messages.fetchall()
    parts = db.execute(
        "SELECT id, message_id, session_id, time_created, time_updated, data FROM part"
    ).fetchall()
    session_values = f"({','.join('?' * len(sessions[0]))})" if sessions else ""
    copy = 1
    while path.stat().st_size < target:
        batch = range(copy, copy + 500)
        copy += 500
        if sessions:
            db.executemany(
                f"INSERT INTO session VALUES {session_values}",
                [(f"{row[0]}-{n}", *row[1:]) for n in batch for row in sessions],
            )
        db.executemany(
            "INSERT INTO message (id, session_id, time_created, time_updated, data) "
            "VALUES (?, ?, ?, ?, ?)",
            [(f"{i}-{n}", f"{s}-{n}", *rest) for n in batch for i, s, *rest in messages_rows],
        )
        db.executemany(
            "INSERT INTO part (id, message_id, session_id, time_created, time_updated, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (f"{i}-{n}", f"{m}-{n}", f"{s}-{n}", *rest)
                for n in batch
                for i, m, s, *rest in parts
            ],
        )
        db.commit()
    db.close()
    return path


def measure_one(path: str, profile: bool) -> None:
    """Child process: audit ``path`` and print seconds, bytes, events, findings, peak RSS."""
    from framework.audit.audit import resolve, run_audit
    from framework.config import Settings

    profiler = cProfile.Profile() if profile else None
    start, cpu_start = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    report = run_audit(resolve(path), Settings(), Path("/work/project"))
    if profiler is not None:
        profiler.disable()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)  # the reader's worker processes
    top = ""
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
        top = out.getvalue()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds + workers.ru_utime + workers.ru_stime,
                "main_cpu_seconds": cpu_seconds,
                "worker_cpu_seconds": workers.ru_utime + workers.ru_stime,
                "checks_hit": sorted({f.check for f in report.findings}),
                "bytes": report.reader.bytes_read,
                "lines": report.reader.lines,
                "events": report.reader.events,
                "findings": len(report.findings),
                "peak_rss_mb": peak_kb / 1024,
                "worker_peak_rss_mb": workers.ru_maxrss / 1024,
                "worker_page_faults": workers.ru_minflt,
                "profile": top,
            }
        )
    )


def measure_reference(path: str) -> None:
    """Child process: decode every line of the JSONL file ``path`` with msgspec into plain Python
    objects, a megabyte of whole lines at a time, and print seconds and bytes."""
    import msgspec

    decode = msgspec.json.Decoder().decode_lines
    start, cpu_start = time.perf_counter(), time.process_time()
    size = records = 0
    rest = b""
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            size += len(chunk)
            cut = chunk.rfind(b"\n") + 1
            if cut == 0:
                rest += chunk
                continue
            records += len(decode(rest + chunk[:cut]))
            rest = chunk[cut:]
    if rest.strip():
        records += len(decode(rest))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    print(
        json.dumps(
            {"seconds": seconds, "cpu_seconds": cpu_seconds, "bytes": size, "records": records}
        )
    )


def reference(path: Path) -> dict[str, float] | None:
    """The reference's MB/s (wall and CPU) on ``path``, in a fresh process; None for OpenCode's
    SQLite database, which has no lines to decode."""
    if path.suffix != ".jsonl":
        return None
    command = [sys.executable, "-m", "tests.bench.audit", "--child-reference", str(path)]
    proc = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "mb_per_s": row["bytes"] / 1e6 / row["seconds"],
        "mb_per_cpu_s": row["bytes"] / 1e6 / row["cpu_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-mb", default="100,1000")
    parser.add_argument("--formats", default="claude,codex,gemini,opencode")
    parser.add_argument(
        "--keep", type=Path, default=None, help="directory for the generated files (kept)"
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary per file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-reference", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure_one(args.child, args.profile)
        return
    if args.child_reference:
        measure_reference(args.child_reference)
        return
    out = args.keep or Path(tempfile.mkdtemp(prefix="audit-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for fmt in args.formats.split(","):
        for size in (int(s) for s in args.sizes_mb.split(",")):
            path = build(fmt, size, out)
            load_before = os.getloadavg()[0]
            command = [sys.executable, "-m", "tests.bench.audit", "--child", str(path)]
            proc = subprocess.run(
                command + (["--profile"] if args.profile else []),
                capture_output=True, text=True, check=True, cwd=ROOT,
            )  # fmt: skip
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["load_avg"] = round((load_before + os.getloadavg()[0]) / 2, 1)
            row.update(format=fmt, size_mb=size, mb_per_s=row["bytes"] / 1e6 / row["seconds"])
            row["mb_per_cpu_s"] = row["bytes"] / 1e6 / row["cpu_seconds"]
            row["events_per_s"] = row["events"] / row["seconds"]
            row["events_per_cpu_s"] = row["events"] / row["cpu_seconds"]
            row["source"] = ", ".join(p.relative_to(ROOT).as_posix() for p in sources(fmt))
            ref = reference(path)
            row["reference_mb_per_s"] = ref and ref["mb_per_s"]
            row["reference_mb_per_cpu_s"] = ref and ref["mb_per_cpu_s"]
            row["ratio_to_reference"] = ref and row["mb_per_s"] / ref["mb_per_s"]
            results.append(row)
            if args.keep is None:
                path.unlink()
    if args.keep is None:
        out.rmdir()
    profiles = {f"{r['format']} {r['size_mb']} MB": r.pop("profile") for r in results}
    print(json.dumps(results, indent=2))
    print(f"\ninterpreter: {sys.executable} (Python {sys.version.split()[0]})")
    print(
        "\n| format | file | MB/s (wall) | MB/s (CPU time) | events/s (CPU time) | peak RSS (MB) "
        "| workers' CPU (s) | workers' peak RSS (MB) | lines | events | findings | load avg "
        "| reference MB/s (wall) | audit / reference (wall) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ref = r["reference_mb_per_s"]
        ref_text = f"{ref:.0f} | {r['ratio_to_reference']:.2f}" if ref else "– | –"
        print(
            f"| {r['format']} | {r['size_mb']} MB | {r['mb_per_s']:.0f} | {r['mb_per_cpu_s']:.0f} | "
            f"{r['events_per_cpu_s']:,.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['worker_cpu_seconds']:.1f} | {r['worker_peak_rss_mb']:.0f} | {r['lines']:,} | "
            f"{r['events']:,} | {r['findings']} | {r['load_avg']} | {ref_text} |"
        )
    for name, text in profiles.items():
        if text:
            print(f"\n## {name}\n\n{text}")


if __name__ == "__main__":
    main()
