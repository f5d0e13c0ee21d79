"""Run every benchmark in turn: ``python -m tests.bench [NAME ...]`` (``make bench``).

Each benchmark is its own module (``python -m tests.bench.<name> --help`` lists its options) and
prints its own summary; this runner only sequences them and reports which ones failed.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = {
    "launch": ["--repeat", "20"],
    "dispatch": [],
    "ledger": ["--events", "1000000"],
    "audit": ["--sizes-mb", "100,1000"],
    "pruning_gpu": ["--size", "mini"],
}


def main(names: list[str]) -> int:
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        return 2
    failed = []
    for name in names or list(BENCHMARKS):
        print(f"== tests.bench.{name}", flush=True)
        result = subprocess.run([sys.executable, "-m", f"tests.bench.{name}", *BENCHMARKS[name]])
        if result.returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
