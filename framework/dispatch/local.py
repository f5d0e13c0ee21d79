"""Local executor: a small scheduler for one workstation with several GPUs.

Jobs wait in submission order for the GPUs they ask for (from ``cluster.local_devices``); the first
queued job that fits starts, so a small job can pass a large one that is still waiting. Each job
gets its own ``CUDA_VISIBLE_DEVICES``; no device is ever given to two running jobs. CPU-only jobs
are limited to ``cluster.local_workers`` at a time (0 = one per CPU).

We drive the processes ourselves rather than through submitit's LocalExecutor: that one polls once a
second (about 1 s submit-to-result for a trivial job) and has no notion of a GPU pool. Each job is
a runner process in its own session, so it outlives a broker that is killed; a restarted broker
adopts it by pid (:meth:`LocalScheduler.adopt`) and reads its ``exit.0.json``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from framework import checkout_env, safefs

OnStarted = Callable[[str, list[str], int], None]
OnExited = Callable[[str, int | None], None]


class LocalSchedulerError(ValueError):
    pass


@dataclass
class _Pending:
    run_id: str
    run_dir: Path
    gpus: int
    prepare: Callable[[list[str]], None] = field(repr=False)


@dataclass
class _Running:
    run_id: str
    devices: list[str]
    pid: int
    proc: subprocess.Popen[bytes] | None
    reaping: bool = False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:  # host-path: /proc
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class LocalScheduler:
    def __init__(
        self, devices: list[str], workers: int, on_started: OnStarted, on_exited: OnExited
    ) -> None:
        if len(set(devices)) != len(devices):
            raise LocalSchedulerError(f"cluster.local_devices lists a device twice: {devices}")
        self.devices = list(devices)
        self.workers = workers or os.cpu_count() or 1
        self._on_started = on_started
        self._on_exited = on_exited
        self._pending: list[_Pending] = []
        self._running: dict[str, _Running] = {}
        self._free = list(devices)
        self._starting: set[str] = set()
        self._cancel_on_start: set[str] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self._reporting = 0  # exit callbacks under way: stop() waits for them
        self._thread = threading.Thread(target=self._loop, name="local-scheduler", daemon=True)
        self._thread.start()

    def check(self, gpus: int) -> None:
        """Reject at submit time what could never start here."""
        if gpus > len(self.devices):
            have = (
                f"{len(self.devices)} ({', '.join(self.devices)})"
                if self.devices
                else "none (set cluster.local_devices)"
            )
            raise LocalSchedulerError(
                f"asks for {gpus} GPUs; this machine's local executor has {have}"
            )

    def submit(
        self, run_id: str, run_dir: Path, gpus: int, prepare: Callable[[list[str]], None]
    ) -> None:
        """Queue a run. ``prepare(devices)`` is called just before its process starts."""
        self.check(gpus)
        with self._cond:
            self._pending.append(_Pending(run_id, run_dir, gpus, prepare))
            self._cond.notify_all()

    def adopt(self, run_id: str, pid: int, devices: list[str]) -> None:
        """Track a runner started by an earlier broker process (or mark it exited at once)."""
        with self._cond:
            for device in devices:
                if device in self._free:
                    self._free.remove(device)
            self._running[run_id] = _Running(run_id, list(devices), pid, None)
            self._cond.notify_all()

    def cancel(self, run_id: str) -> bool:
        """Remove a queued run or kill a running one's process group (True); False if unknown."""
        dequeued, killed = self.cancel_many([run_id])
        return bool(dequeued or killed)

    def cancel_many(self, run_ids: list[str]) -> tuple[set[str], set[str]]:
        """Cancel several runs at once: (ids removed from the queue, ids being killed).

        The queue is emptied of all of them first, under one lock, so none starts meanwhile; the
        running ones are then killed in the background (SIGTERM, SIGKILL after a grace period)."""
        wanted = set(run_ids)
        with self._cond:
            dequeued = {item.run_id for item in self._pending if item.run_id in wanted}
            self._pending = [item for item in self._pending if item.run_id not in dequeued]
            starting = wanted & self._starting  # between the queue and its pid: kill once started
            self._cancel_on_start |= starting
            pids = [r.pid for r in self._running.values() if r.run_id in wanted]
            killed = {r.run_id for r in self._running.values() if r.run_id in wanted} | starting
        if pids:
            threading.Thread(target=_kill_groups, args=(pids,), daemon=True).start()
        return dequeued, killed

    def busy_devices(self) -> list[str]:
        with self._cond:
            return [d for d in self.devices if d not in self._free]

    def counts(self) -> tuple[int, int]:
        with self._cond:
            return len(self._pending), len(self._running)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop starting runs and reporting exits. Running jobs go on: a broker started later
        adopts them and records how they ended (the runner writes that to the run dir). Returns
        once no exit callback is under way, so the caller may close what they write to."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._reporting == 0, timeout=timeout_s)
        self._thread.join(timeout=5)

    def _cpu_slots_free(self) -> int:
        cpu_jobs = sum(1 for r in self._running.values() if not r.devices)
        return self.workers - cpu_jobs

    def _next_startable(self) -> _Pending | None:
        cpu_free = self._cpu_slots_free()
        for item in self._pending:
            if item.gpus == 0 and cpu_free > 0:
                return item
            if 0 < item.gpus <= len(self._free):
                return item
        return None

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                item = self._next_startable()
                if item is None:
                    adopted = any(r.proc is None and not r.reaping for r in self._running.values())
                    self._cond.wait(timeout=0.1 if adopted else 1.0)
                    self._reap_adopted()
                    continue
                self._pending.remove(item)
                self._starting.add(item.run_id)
                devices = self._free[: item.gpus]
                del self._free[: item.gpus]
            self._start(item, devices)

    def _start(self, item: _Pending, devices: list[str]) -> None:
        try:
            item.prepare(devices)
            # The run dir is the job's to write: never append through a link planted there.
            log = safefs.open_append(item.run_dir, "runner.log")
            try:
                proc = subprocess.Popen(
                    # -S: the runner needs only the standard library and this checkout
                    # (PYTHONPATH); skipping site-packages start-up saves tens of ms per job.
                    [sys.executable, "-S", "-m", "framework.dispatch.runner", str(item.run_dir)],
                    cwd=item.run_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,
                    env=checkout_env(),  # the runner resolves to this checkout
                )
            finally:
                os.close(log)
        except OSError:
            with self._cond:
                self._starting.discard(item.run_id)
                self._cancel_on_start.discard(item.run_id)
            self._release(item.run_id, devices)
            self._on_exited(item.run_id, None)
            return
        with self._cond:
            self._running[item.run_id] = _Running(item.run_id, devices, proc.pid, proc)
            self._starting.discard(item.run_id)
            cancelled = item.run_id in self._cancel_on_start
            self._cancel_on_start.discard(item.run_id)
        self._on_started(item.run_id, devices, proc.pid)
        if cancelled:
            threading.Thread(target=_kill_group, args=(proc.pid,), daemon=True).start()
        threading.Thread(target=self._wait, args=(item.run_id, proc), daemon=True).start()

    def _wait(self, run_id: str, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        self._finish(run_id, code)

    def _reap_adopted(self) -> None:
        for running in list(self._running.values()):
            if running.proc is None and not running.reaping and not pid_alive(running.pid):
                running.reaping = True
                threading.Thread(
                    target=self._finish, args=(running.run_id, None), daemon=True
                ).start()

    def _finish(self, run_id: str, code: int | None) -> None:
        with self._cond:
            running = self._running.pop(run_id, None)
            if running is not None:
                self._free.extend(running.devices)
                self._free.sort(key=self.devices.index)
            self._cond.notify_all()
            if self._stopped:  # the broker is closing its ledger; the next one records the end
                return
            self._reporting += 1
        try:
            self._on_exited(run_id, code)
        finally:
            with self._cond:
                self._reporting -= 1
                self._cond.notify_all()

    def _release(self, run_id: str, devices: list[str]) -> None:
        with self._cond:
            self._free.extend(devices)
            self._free.sort(key=self.devices.index)
            self._cond.notify_all()


def _kill_group(pid: int, grace_s: float = 3.0) -> None:
    _kill_groups([pid], grace_s)


def _kill_groups(pids: list[int], grace_s: float = 3.0) -> None:
    import signal

    alive = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
            alive.append(pid)
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if pid_alive(pid)]
        time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
