"""Audit throughput and peak memory on large transcripts built by repeating real sessions.

    python -m tests.bench.audit [--sizes-mb 100,1000] [--formats claude,codex] [--keep DIR]
                                [--profile]

For each format and size it writes a transcript of that size by repeating the session transcripts
under tests/fixtures/transcripts/real/<format>/ (falling back to our written fixtures when no real
one exists), then runs the full pipeline (file -> events -> checks -> summary -> report) in a fresh
child process and prints MB/s of wall-clock and of CPU time, the child's peak RSS and the load
average as a JSON list and a markdown table. Other jobs on the machine slow the wall clock, not the
CPU time, so compare CPU rates across runs. ``--profile`` adds the functions that took the most
time (cProfile, which roughly doubles the run time) for each file.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "transcripts"
FALLBACK = {"claude": FIXTURES / "claude", "codex": FIXTURES / "codex"}


def sources(fmt: str) -> list[Path]:
    real = sorted((FIXTURES / "real" / fmt).glob("*.jsonl"))
    return real or sorted(p for p in FALLBACK[fmt].rglob("*.jsonl") if "subagents" not in p.parts)


def build(fmt: str, size_mb: int, out: Path) -> Path:
    """Repeat the source sessions (whole sessions, in order) until the file reaches ``size_mb``."""
    blob = b"".join(p.read_bytes() for p in sources(fmt))
    if not blob.endswith(b"\n"):
        blob += b"\n"
    target = size_mb * 1_000_000
    path = out / f"{fmt}-{size_mb}MB.jsonl"
    if path.exists() and path.stat().st_size >= target:
        return path
    with path.open("wb") as fh:
        written = 0
        chunk = blob * max(1, (8 << 20) // len(blob))
        while written < target:
            fh.write(chunk)
            written += len(chunk)
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
    top = ""
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
        top = out.getvalue()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "checks_hit": sorted({f.check for f in report.findings}),
                "bytes": report.reader.bytes_read,
                "lines": report.reader.lines,
                "events": report.reader.events,
                "findings": len(report.findings),
                "peak_rss_mb": peak_kb / 1024,
                "profile": top,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-mb", default="100,1000")
    parser.add_argument("--formats", default="claude,codex")
    parser.add_argument(
        "--keep", type=Path, default=None, help="directory for the generated files (kept)"
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary per file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure_one(args.child, args.profile)
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
            row["source"] = ", ".join(p.relative_to(ROOT).as_posix() for p in sources(fmt))
            results.append(row)
            if args.keep is None:
                path.unlink()
    if args.keep is None:
        out.rmdir()
    profiles = {f"{r['format']} {r['size_mb']} MB": r.pop("profile") for r in results}
    print(json.dumps(results, indent=2))
    print(
        "\n| format | file | MB/s (wall) | MB/s (CPU time) | peak RSS (MB) | lines | events "
        "| findings | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['format']} | {r['size_mb']} MB | {r['mb_per_s']:.0f} | {r['mb_per_cpu_s']:.0f} | "
            f"{r['peak_rss_mb']:.0f} | {r['lines']:,} | {r['events']:,} | {r['findings']} | "
            f"{r['load_avg']} |"
        )
    for name, text in profiles.items():
        if text:
            print(f"\n## {name}\n\n{text}")


if __name__ == "__main__":
    main()
