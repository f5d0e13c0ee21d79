"""The local scheduler never gives a GPU to two running jobs and starts queued jobs as others end."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from framework.dispatch.local import LocalScheduler, LocalSchedulerError
from framework.dispatch.runner import write_json_atomic


def _task(run_dir: Path, run_id: str, seconds: float) -> None:
    code = (
        f"import json, os, time; t0 = time.time(); time.sleep({seconds!r}); "
        "json.dump({'devices': os.environ['CUDA_VISIBLE_DEVICES'], 'start': t0, 'end': time.time()}, "
        "open(os.path.join(os.environ['RUN_DIR'], 'probe.json'), 'w'))"
    )
    task = {
        "run_id": run_id,
        "run_dir": str(run_dir),
        "argv": [sys.executable, "-c", code],
        "cwd": str(run_dir),
        "env": {},
        "master_port": 29500,
    }
    write_json_atomic(run_dir / "task.json", task)


def test_gpu_jobs_queue_for_free_devices_and_never_share_one(tmp_path: Path) -> None:
    done = threading.Semaphore(0)
    scheduler = LocalScheduler(["0", "1"], 2, lambda *_: None, lambda *_: done.release())
    jobs = {"a": 2, "b": 1, "c": 1, "d": 1, "e": 2}
    try:
        for run_id, gpus in jobs.items():
            run_dir = tmp_path / run_id
            run_dir.mkdir()
            _task(run_dir, run_id, 0.4)

            def prepare(devices: list[str], run_dir: Path = run_dir, run_id: str = run_id) -> None:
                task = json.loads((run_dir / "task.json").read_text())
                write_json_atomic(run_dir / "task.json", {**task, "devices": devices})

            scheduler.submit(run_id, run_dir, gpus, prepare)
        for _ in jobs:
            assert done.acquire(timeout=30)
    finally:
        scheduler.stop()
    probes = {r: json.loads((tmp_path / r / "probe.json").read_text()) for r in jobs}
    for run_id, gpus in jobs.items():
        assert len(probes[run_id]["devices"].split(",")) == gpus
    # No device is held by two jobs whose lifetimes overlap.
    for a in jobs:
        for b in jobs:
            if a >= b:
                continue
            shared = set(probes[a]["devices"].split(",")) & set(probes[b]["devices"].split(","))
            overlap = (
                probes[a]["start"] < probes[b]["end"] and probes[b]["start"] < probes[a]["end"]
            )
            assert not (shared and overlap), (a, b, probes[a], probes[b])
    # The second two-GPU job had to wait for the whole machine.
    assert probes["e"]["start"] >= max(probes[r]["end"] for r in ("a", "b", "c", "d")) - 0.05


def test_request_for_more_gpus_than_the_machine_has_is_refused(tmp_path: Path) -> None:
    scheduler = LocalScheduler(["0"], 1, lambda *_: None, lambda *_: None)
    try:
        with pytest.raises(LocalSchedulerError, match="asks for 2 GPUs"):
            scheduler.check(2)
    finally:
        scheduler.stop()


def test_duplicate_device_ids_are_a_configuration_error() -> None:
    with pytest.raises(LocalSchedulerError, match="twice"):
        LocalScheduler(["0", "0"], 1, lambda *_: None, lambda *_: None)


def test_cancelling_a_queued_job_removes_it_before_it_starts(tmp_path: Path) -> None:
    started: list[str] = []
    scheduler = LocalScheduler(["0"], 1, lambda run_id, *_: started.append(run_id), lambda *_: None)
    try:
        for run_id in ("first", "second"):
            run_dir = tmp_path / run_id
            run_dir.mkdir()
            _task(run_dir, run_id, 0.3)
            scheduler.submit(run_id, run_dir, 1, lambda devices: None)
        assert scheduler.cancel("second")
        time.sleep(1.0)
    finally:
        scheduler.stop()
    assert started == ["first"]


def _submit(scheduler: LocalScheduler, run_dir: Path, seconds: float) -> None:
    run_dir.mkdir()
    _task(run_dir, run_dir.name, seconds)

    def prepare(devices: list[str]) -> None:
        task = json.loads((run_dir / "task.json").read_text())
        write_json_atomic(run_dir / "task.json", {**task, "devices": devices})

    scheduler.submit(run_dir.name, run_dir, 0, prepare)


def test_a_job_ending_after_stop_is_not_reported_to_the_stopped_owner(tmp_path: Path) -> None:
    started, exited = threading.Event(), []
    scheduler = LocalScheduler(
        [], 1, lambda *_: started.set(), lambda run_id, code: exited.append(run_id)
    )
    _submit(scheduler, tmp_path / "late", 0.5)
    assert started.wait(timeout=30)
    scheduler.stop()
    time.sleep(1.5)  # the job ends after the stop; its waiter thread must stay silent
    assert exited == []
    assert (tmp_path / "late" / "probe.json").is_file()  # the job itself ran to its end


def test_stop_waits_for_an_exit_report_under_way(tmp_path: Path) -> None:
    in_callback, release, finished = threading.Event(), threading.Event(), []

    def on_exited(run_id: str, code: int | None) -> None:
        in_callback.set()
        release.wait(timeout=30)
        finished.append(run_id)

    scheduler = LocalScheduler([], 1, lambda *_: None, on_exited)
    _submit(scheduler, tmp_path / "quick", 0.0)
    assert in_callback.wait(timeout=30)
    stopper = threading.Thread(target=scheduler.stop)
    stopper.start()
    time.sleep(0.3)
    assert stopper.is_alive()  # still waiting: the owner's ledger must stay open until it returns
    release.set()
    stopper.join(timeout=10)
    assert not stopper.is_alive() and finished == ["quick"]
