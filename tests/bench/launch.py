"""Launch overhead: our ``launch`` of a no-op command vs the raw runtime doing the same, in one run.

    python -m tests.bench.launch [--repeat 10] [--runtimes bwrap,docker]

For each runtime, alternating rounds time (a) the raw runtime command running ``true`` with the
same kind of isolation (a hand-written ``bwrap`` line; ``docker run --rm --network none``), (b)
:func:`framework.sandbox.launch.launch` from Python (settings, git state, session store, ledger
events, cgroup/container setup and teardown), and (c) the same call in a fresh Python process
(adds interpreter start-up and imports, as each CLI invocation does). Prints JSON on stdout and a markdown table on
stderr. Targets (issue 4): (b) - (a) < 0.3 s for bwrap; (b) / (a) < 1.2 for docker.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from framework.config import SandboxSettings, Settings
from framework.sandbox.launch import LaunchRequest, launch

IMAGE = os.environ.get("AR_TEST_IMAGE", "agentic-researcher:latest")


def raw_bwrap() -> None:
    args = ["bwrap", "--die-with-parent", "--new-session", "--unshare-all", "--uid", "1000"]
    for name in ("usr", "bin", "lib", "lib64", "sbin"):
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--clearenv", "true"]
    subprocess.run(args, check=True)


def raw_docker() -> None:
    docker = shutil.which("docker")
    assert docker, "the docker CLI is needed for the raw baseline"
    subprocess.run(
        [docker, "run", "--rm", "--network", "none", "--cap-drop", "ALL", IMAGE, "true"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def ours(workspace: Path, runtime: str) -> Callable[[], None]:
    settings = Settings(
        state_dir=workspace.parent / "state",
        sandbox=SandboxSettings(runtime=runtime, image=IMAGE, network="none"),  # type: ignore[arg-type]
    )

    def run() -> None:
        record = launch(
            LaunchRequest(
                workspace=workspace, command=["true"], settings=settings, broker=False,
                render_methodology=False, capture_output=True,
            )
        )  # fmt: skip
        assert record.exit_code == 0, record

    return run


def ours_new_process(workspace: Path, runtime: str) -> Callable[[], None]:
    """launch() in a fresh interpreter: what a user pays per CLI invocation, minus typer."""
    env = {**os.environ, "XDG_STATE_HOME": str(workspace.parent / "xdg")}
    code = (
        "from pathlib import Path; from framework.sandbox.launch import LaunchRequest, launch;"
        f"launch(LaunchRequest(workspace=Path({str(workspace)!r}), runtime={runtime!r}, "
        "network='none', command=['true'], broker=False, render_methodology=False))"
    )

    def run() -> None:
        subprocess.run([sys.executable, "-c", code], check=True, env=env, stdout=subprocess.DEVNULL)

    return run


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(runtime: str, repeat: int, workspace: Path) -> dict[str, Any]:
    cases = {
        "raw": raw_bwrap if runtime == "bwrap" else raw_docker,
        "launch()": ours(workspace, runtime),
        "new process + launch()": ours_new_process(workspace, runtime),
    }
    for fn in cases.values():
        fn()  # warm caches (image layers, imports, page cache)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            samples[name].append(timed(fn))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    raw = medians["raw"]
    return {
        "runtime": runtime,
        "repeat": repeat,
        "median_s": {k: round(v, 4) for k, v in medians.items()},
        "overhead_s": round(medians["launch()"] - raw, 4),
        "ratio": round(medians["launch()"] / raw, 3),
        "target": "overhead < 0.3 s" if runtime == "bwrap" else "ratio < 1.2",
        "met": (medians["launch()"] - raw < 0.3)
        if runtime == "bwrap"
        else (medians["launch()"] / raw < 1.2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--runtimes", default="bwrap,docker")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="ar-bench-launch-") as tmp:
        workspace = Path(tmp) / "ws"
        workspace.mkdir()
        subprocess.run(["git", "init", "-q", str(workspace)], check=True)
        for runtime in args.runtimes.split(","):
            if runtime == "docker" and os.getuid() == 0:
                os.chown(workspace, 1000, 1000)
            results.append(bench(runtime, args.repeat, workspace))
    print(json.dumps(results, indent=2))
    print(
        "| runtime | raw (s) | launch() (s) | new process + launch() (s) | overhead | ratio | target met |",
        file=sys.stderr,
    )
    print("|---|---|---|---|---|---|---|", file=sys.stderr)
    for r in results:
        m = r["median_s"]
        print(
            f"| {r['runtime']} | {m['raw']:.3f} | {m['launch()']:.3f} | {m['new process + launch()']:.3f} "
            f"| {r['overhead_s']:+.3f} s | {r['ratio']:.2f}x | {r['met']} ({r['target']}) |",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
