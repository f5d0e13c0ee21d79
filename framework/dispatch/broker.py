"""The host broker: validates requests from the sandbox, records runs, hands them to an executor.

The channel is a Unix socket in a directory of the host's own (see docs/dispatch.md for why not a
spool directory); a sandbox gets the socket alone, read-only, so the agent can connect to it but
never rename, replace or shadow it. Each connection carries one JSON object (at most 256 KiB,
nested at most 16 deep) and gets one JSON object back, whatever bytes it sent; a connection that
sends nothing for 10 s is dropped, and each is served by its own thread, so a stalled or hostile
client cannot block the others.

Durability: a submit is acknowledged only after its run record (``dispatch/records/<run>.json``)
and its ``run_submitted`` ledger event are on disk. A broker that is killed and restarted reloads the
records, re-queues runs that had not started, adopts local runs whose runner is still alive, keeps
watching Slurm jobs, and records the final state of every run exactly once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import socketserver
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from framework import safefs
from framework.config import Settings
from framework.dispatch.jobsandbox import (
    JobSandboxError,
    JobSandboxMode,
    job_sandbox_mode,
    sandbox_plan,
    write_identity_files,
)
from framework.dispatch.local import LocalScheduler, LocalSchedulerError, pid_alive
from framework.dispatch.models import (
    MAX_REQUEST_BYTES,
    BrokerOp,
    JobRequest,
    LogsOp,
    NodeInfo,
    RequestError,
    RunOp,
    RunRecord,
    RunState,
    SimpleOp,
    SubmitOp,
    WaitOp,
    bounded_copy,
    decode_request,
    describe_validation_error,
    resolve_cwd,
    utcnow,
)
from framework.dispatch.runner import log_name, prepare_run_dir, write_json_atomic
from framework.dispatch.slurm import TERMINAL_SLURM_STATES, SlurmBackend, SlurmError
from framework.dispatch.snapshot import (
    Snapshot,
    SnapshotError,
    is_git_workspace,
    take_snapshot,
)
from framework.evaluation import (
    Evaluation,
    EvaluationError,
    capture,
    divergence_payload,
    scan,
    session_evaluation,
    store_of,
)

SOCKET_NAME = "broker.sock"
CLIENT_NAME = "remote-run"
SOCKET_ENV = "REMOTE_RUN_SOCKET"
READ_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 256
MAX_DRAIN_BYTES = 16 << 20
SLURM_POLL_S = 1.0
WATCH_MIN_S = 0.05
WATCH_MAX_S = 1.0
WATCH_PER_RUN_S = 0.001
SLURM_FILE_GRACE_S = 3.0
MAX_METRICS_BYTES = 1 << 20
MAX_ARTIFACTS_LISTED = 1000

_OPS: TypeAdapter[Any] = TypeAdapter(BrokerOp)
_PER_RUN = {"run_id", "array_index", "argv", "run_dir"}


CANCELLED_ON_REQUEST = "cancelled on request"
CANCELLED_AT_SESSION_END = "cancelled at session end"
CANCEL_REASONS = (CANCELLED_ON_REQUEST, CANCELLED_AT_SESSION_END)


class BrokerError(RuntimeError):
    pass


@dataclass(frozen=True)
class DispatchPaths:
    state_dir: Path

    @property
    def root(self) -> Path:
        return self.state_dir / "dispatch"

    @property
    def records(self) -> Path:
        return self.root / "records"

    @property
    def groups(self) -> Path:
        """One file per submission holding all its records as submitted (one fsync per submit)."""
        return self.root / "groups"

    def submission(self, group: str) -> Path:
        return self.groups / f"{group}.json"

    def job_ids(self, group: str) -> Path:
        """The Slurm job ids of a submission's runs, in order (written once sbatch answers)."""
        return self.groups / f"{group}.jobids"

    def diff(self, group: str) -> Path:
        return self.groups / f"{group}.diff"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def sandbox_etc(self) -> Path:
        return self.root / "sandbox-etc"

    @property
    def runs(self) -> Path:
        return self.state_dir / "runs"

    @property
    def submitit(self) -> Path:
        return self.root / "submitit"

    @property
    def rejected_log(self) -> Path:
        return self.root / "rejected.jsonl"

    @property
    def errors_log(self) -> Path:
        """Tracebacks of the broker's own failures (kept out of every terminal)."""
        return self.root / "broker-errors.log"

    @property
    def channel(self) -> Path:
        """Directory holding the socket: the host's own (0700, never mounted into a sandbox; see
        :func:`trusted_socket`). Unix socket paths are limited to 107 bytes, so a deep state dir
        gets a short per-project directory under the runtime dir instead."""
        preferred = self.root / "channel"
        if len(str(preferred / SOCKET_NAME)) < 100:
            return preferred
        base = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:12]
        return base / f"ar-broker-{digest}"

    @property
    def socket(self) -> Path:
        return self.channel / SOCKET_NAME

    @property
    def client(self) -> Path:
        return self.root / "bin" / CLIENT_NAME


def _open_channel(channel: Path) -> int:
    """A descriptor of ``channel`` once it is known that nobody but this uid can change what is
    in it: a directory (not a link), owned by this uid, writable by no one else. Whoever else could
    write there (the agent's uid, if an older version handed it the directory; another user who
    made ``/tmp/ar-broker-*`` first) could put a socket of their own where clients look."""
    try:
        fd = os.open(
            channel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        )  # host-path: the host-owned channel dir, O_NOFOLLOW
    except FileNotFoundError:
        raise BrokerError(
            f"no broker channel at {channel}: no broker has run for this workspace; start one "
            "with `agentic-researcher broker` or `agentic-researcher launch`"
        ) from None
    except OSError as exc:
        raise BrokerError(
            f"refusing the broker channel {channel}: {exc.strerror} (a symbolic link or not a "
            "directory); remove it and start the broker again"
        ) from None
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        os.close(fd)
        raise BrokerError(
            f"refusing the broker channel {channel}: owned by uid {info.st_uid} with mode "
            f"{stat.S_IMODE(info.st_mode):o}, so someone other than uid {os.geteuid()} can replace "
            "the socket in it; stop any broker, remove the directory and start the broker again"
        )
    return fd


def trusted_socket(paths: DispatchPaths) -> Path:
    """The broker socket a host-side client may connect to, once it is known not to be a
    stand-in: its directory passes :func:`_open_channel`, and the socket in it, if there is one
    yet, is a socket of this uid. The directory's ancestors are the host's own, so nothing can
    swap the socket between this check and the connect."""
    fd = _open_channel(paths.channel)
    try:
        info = os.stat(
            SOCKET_NAME, dir_fd=fd, follow_symlinks=False
        )  # host-path: dir_fd of the checked channel, no link followed
    except FileNotFoundError:
        return paths.socket  # the broker may be starting; the client retries for a while
    finally:
        os.close(fd)
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
        raise BrokerError(
            f"refusing {paths.socket}: not a socket of uid {os.geteuid()} (mode "
            f"{info.st_mode:o}, owner {info.st_uid}); stop the broker, remove it and start again"
        )
    return paths.socket


def new_group_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


class _LedgerSink:
    """Writes run events, each kind at most once per run (restart-safe)."""

    def __init__(self, url: str, session_id: str | None, state_dir: Path) -> None:
        from framework.ledger import open_ledger

        self.ledger = open_ledger(url, state_dir)
        self.session_id = session_id

    def record(self, kind: str, record: RunRecord, payload: dict[str, Any]) -> None:
        from framework.ledger import EventKind, LedgerError

        if kind == "run_submitted":
            with contextlib.suppress(LedgerError):
                self.ledger.run(record.run_id)
                return  # submitted by an earlier broker process that died before saving the record
        payload = {k: v for k, v in payload.items() if v is not None}
        self.ledger.append(
            EventKind(kind),
            run_id=record.run_id,
            session_id=record.session_id or self.session_id,
            payload=payload,
        )

    def submitted_many(self, items: list[tuple[RunRecord, dict[str, Any]]]) -> None:
        """One transaction for a whole submission (an array of 1,000 is one commit, not 1,000)."""
        self.record_many("run_submitted", items)

    def record_many(self, kind: str, items: list[tuple[RunRecord, dict[str, Any]]]) -> None:
        from framework.ledger import EventKind, NewEvent

        events = [
            NewEvent(
                EventKind(kind),
                record.run_id,
                record.session_id or self.session_id,
                {k: v for k, v in payload.items() if v is not None},
            )
            for record, payload in items
        ]
        self.ledger.append_many(events)

    def diverged(self, payload: dict[str, Any]) -> None:
        """The workspace's protected paths differ from the session's pristine copy."""
        from framework.ledger import EventKind

        self.ledger.append(
            EventKind.evaluation_diverged, session_id=self.session_id, payload=payload
        )

    def rejected(self, payload: dict[str, Any]) -> None:
        """A refused request; a ledger that cannot take it must not turn the refusal into a crash
        (the broker's ``rejected.jsonl`` still has it)."""
        from framework.ledger import EventKind

        # Any backend error (sqlite3, psycopg, a full disk): the answer to the client goes out.
        with contextlib.suppress(Exception):
            self.ledger.append(
                EventKind.request_rejected, session_id=self.session_id, payload=payload
            )

    def close(self) -> None:
        self.ledger.close()


class Broker:
    """Validates and executes broker operations; owns the run records. Thread-safe."""

    def __init__(
        self,
        workspace_root: Path,
        settings: Settings,
        session_id: str | None = None,
        job_sandbox: JobSandboxMode | None = None,
    ) -> None:
        if settings.state_dir is None:
            raise BrokerError("settings.state_dir is unset; load settings with load_settings()")
        self.workspace = workspace_root.resolve()
        self.settings = settings
        self.session_id = session_id
        self.paths = DispatchPaths(settings.state_dir)
        self.evaluation = session_evaluation(store_of(settings.state_dir), session_id or "")
        """The session's pristine protected paths, pinned at launch (None: no session)."""
        self._diverged_seen: str | None = None
        for directory in (
            self.paths.records,
            self.paths.groups,
            self.paths.runs,
            self.paths.submitit,
        ):
            # host-path: the state dir's dispatch/, no sandbox mounts it
            directory.mkdir(parents=True, exist_ok=True)
        self.job_sandbox = job_sandbox or job_sandbox_mode(settings)
        if self.job_sandbox == "required":
            write_identity_files(self.paths.sandbox_etc)
        ledger_url = settings.ledger.url or f"sqlite:///{settings.state_dir / 'ledger.sqlite'}"
        self.ledger = _LedgerSink(ledger_url, session_id, settings.state_dir)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._records: dict[str, RunRecord] = {}
        self._groups: dict[str, list[str]] = {}
        self._tokens: dict[str, str] = {}
        self._slurm_terminal_seen: dict[str, float] = {}
        self._own_record_file: set[str] = set()
        self._submissions: dict[str, dict[str, Any]] = {}
        self._positions: dict[str, int] = {}
        self._stopping = threading.Event()
        self._rejections = _RejectionBudget()
        cluster = settings.cluster
        self.executor = cluster.executor
        self.local = LocalScheduler(
            cluster.local_devices, cluster.local_workers, self._local_started, self._local_exited
        )
        self.slurm = (
            SlurmBackend(cluster, self.paths.submitit) if self.executor == "slurm" else None
        )
        self._recover()
        self._watcher = threading.Thread(target=self._watch, name="broker-watch", daemon=True)
        self._watcher.start()

    # --- public operations -------------------------------------------------------------

    def handle_bytes(self, raw: bytes) -> dict[str, Any]:
        """One request from the channel -> one response. Never raises for bad input."""
        try:
            data = decode_request(raw)
            try:
                op = _OPS.validate_python(data)
            except ValidationError as exc:
                raise describe_validation_error(exc) from None
            return {"ok": True, **self.handle(op)}
        except RequestError as exc:
            self._log_rejected(raw, exc)
            return {"ok": False, "error": str(exc), "field": exc.field}
        except (BrokerError, SlurmError) as exc:
            return {"ok": False, "error": str(exc), "field": None}

    def handle(self, op: Any) -> dict[str, Any]:
        if isinstance(op, SubmitOp):
            return self.submit(op.request)
        if isinstance(op, WaitOp):
            return {"runs": [r.summary() for r in self.wait(op.run, op.timeout_s)]}
        if isinstance(op, LogsOp):
            return self.logs(op)
        if isinstance(op, RunOp):
            if op.op == "cancel":
                return {"runs": [r.summary() for r in self.cancel(op.run)]}
            return {"runs": [r.summary() for r in self.lookup(op.run)]}
        assert isinstance(op, SimpleOp)
        if op.op == "nodes":
            return {"nodes": [n.model_dump() for n in self.nodes()]}
        if op.op == "list":
            return {"runs": [r.summary() for r in self.list_runs(op.limit)]}
        return {"pong": True, "executor": self.executor, "workspace": str(self.workspace)}

    def submit(self, request: JobRequest) -> dict[str, Any]:
        """Validate against this host, write records and ledger events, queue. Returns the run ids."""
        cwd = resolve_cwd(self.workspace, request.cwd)
        indices: list[int | None] = list(request.array) if request.array is not None else [None]
        self._check_resources(request, len(indices))
        with self._lock:
            if request.client_token and request.client_token in self._tokens:
                group = self._tokens[request.client_token]
                return {"group": group, "runs": list(self._groups[group])}
        snapshot = self._snapshot()
        evaluation = self._evaluation()
        plan = None
        if self.job_sandbox == "required":
            try:
                plan = sandbox_plan(
                    self.settings,
                    self.workspace,
                    cwd,
                    snapshot,
                    request.resources.world_size,
                    self.paths.sandbox_etc,
                    request.resources,
                    evaluation,
                )
            except JobSandboxError as exc:
                raise RequestError("request", str(exc)) from None
        with self._lock:
            if request.client_token and request.client_token in self._tokens:
                group = self._tokens[request.client_token]
                return {"group": group, "runs": list(self._groups[group])}
            self._check_in_flight(len(indices))
            group = new_group_id()
            records: list[RunRecord] = []
            for index in indices:
                run_id = group if index is None else f"{group}.{index}"
                record = RunRecord(
                    run_id=run_id,
                    group_id=group,
                    array_index=index,
                    name=request.name,
                    argv=request.argv_for(index),
                    cwd=str(cwd),
                    env=dict(request.env),
                    resources=request.resources,
                    tags=list(request.tags),
                    executor=self.executor,
                    run_dir=str(self.paths.runs / run_id),  # made when the run starts
                    session_id=self.session_id,
                    client_token=request.client_token,
                    git_commit=snapshot.commit if snapshot else None,
                    diff_hash=snapshot.diff_sha256 if snapshot else None,
                    snapshot_tree=snapshot.tree if snapshot else None,
                    sandbox=plan["runtime"] if plan else None,
                    sandbox_image=plan.get("image") if plan else None,
                    evaluation_sha256=evaluation.sha256,
                    detach=request.detach,
                )
                records.append(record)
            submission = self._submission(group, records, snapshot, plan)
            write_json_atomic(self.paths.submission(group), submission)
            self._submissions[group] = submission
            self._groups[group] = [r.run_id for r in records]
            if request.client_token:
                self._tokens[request.client_token] = group
            for position, record in enumerate(records):
                self._records[record.run_id] = record
                self._positions[record.run_id] = position
            submitted = [(r, self._submitted_payload(r)) for r in records]
            if self.executor == "local":  # a local run may start at once: the ledger comes first
                self.ledger.submitted_many(submitted)
        if self.executor == "local":
            for record in records:
                self._queue_local(record)
        else:
            self._submit_to_slurm(group, records, submitted)
        return {"group": group, "runs": [r.run_id for r in records]}

    def lookup(self, run: str) -> list[RunRecord]:
        with self._lock:
            if run in self._groups:
                return [self._records[r] for r in self._groups[run]]
            if run in self._records:
                return [self._records[run]]
        raise BrokerError(f"no run or group {run!r}; `remote-run list` shows the known runs")

    def wait(self, run: str, timeout_s: float) -> list[RunRecord]:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                records = self.lookup(run)
                left = deadline - time.monotonic()
                if all(r.state.terminal for r in records) or left <= 0:
                    return records
                self._changed.wait(timeout=left)

    def cancel(self, run: str, reason: str = CANCELLED_ON_REQUEST) -> list[RunRecord]:
        with self._lock:
            active = [r for r in self.lookup(run) if not r.state.terminal]
            for record in active:
                record.reason = reason
        local = [r for r in active if r.executor == "local"]
        dequeued, _ = self.local.cancel_many([r.run_id for r in local])
        never_started = [r for r in local if r.run_id in dequeued]
        self._cancel_unstarted(never_started)
        with self._lock:
            for record in active:
                if not record.state.terminal:
                    # Not fsynced: a machine crash loses only the word "cancelled" (the run then
                    # ends as failed); every final state is fsynced.
                    self._save(record, fsync=False)
        slurm_ids = [r.slurm_job_id for r in active if r.executor == "slurm" and r.slurm_job_id]
        if self.slurm is not None and slurm_ids:
            self.slurm.cancel(slurm_ids)  # one scancel for a whole array, not one per task
        return self.lookup(run)

    def _cancel_unstarted(self, records: list[RunRecord]) -> None:
        """Runs taken off the local queue: final, in one batch (one sync, one ledger commit)."""
        with self._lock:
            ended = [r for r in records if not r.state.terminal]
            now = utcnow()
            for record in ended:
                record.state = RunState.cancelled
                record.ended_at = now
                self._save(record, fsync=False)
            if not ended:
                return
            os.sync()  # one barrier for all the record files above
            self.ledger.record_many(
                "run_cancelled",
                [(r, {"reason": r.reason, "ended_at": now.isoformat()}) for r in ended],
            )
            self._changed.notify_all()

    def logs(self, op: LogsOp) -> dict[str, Any]:
        record = self.lookup(op.run)[0]
        name = log_name(op.stream, op.rank)
        data = b""
        # The run dir is the job's: a link planted at the log's name is refused, never followed.
        try:
            data = safefs.read_range(Path(record.run_dir), name, op.offset, op.limit)
        except FileNotFoundError:
            pass  # not written yet
        except OSError as exc:
            raise BrokerError(
                f"{name} of run {record.run_id} is not a regular file of its run dir "
                f"({exc.strerror}); the broker serves no link, FIFO or device from a run dir"
            ) from None
        return {
            "data": data.decode("utf-8", errors="replace"),
            "offset": op.offset + len(data),
            "state": record.state.value,
            "done": record.state.terminal,
        }

    def nodes(self) -> list[NodeInfo]:
        if self.slurm is not None:
            return self.slurm.nodes()
        busy = self.local.busy_devices()
        _, running = self.local.counts()
        return [
            NodeInfo(
                name=socket.gethostname(),
                state="mixed" if running else "idle",
                gpus_total=len(self.local.devices),
                gpus_busy=len(busy),
                cpus_total=self.local.workers,
                cpus_busy=running,
            )
        ]

    def list_runs(self, limit: int = 200) -> list[RunRecord]:
        with self._lock:
            records = sorted(self._records.values(), key=lambda r: (r.submitted_at, r.run_id))
        return records[-limit:]

    def end_session(self, grace_s: float = 30.0) -> list[RunRecord]:
        """The session that submitted the runs is ending: cancel each of its runs that is still
        queued or running and did not ask to detach, and wait up to ``grace_s`` for their ends
        to be recorded (``run_cancelled``, reason "cancelled at session end"). Returns them."""
        with self._lock:
            ending = [
                r
                for r in self._records.values()
                if not r.state.terminal and not r.detach and r.session_id == self.session_id
            ]
        # detach is per submission: one cancel per group (one scancel for a whole array).
        for group in dict.fromkeys(r.group_id for r in ending):
            self.cancel(group, CANCELLED_AT_SESSION_END)
        deadline = time.monotonic() + grace_s
        with self._changed:
            while not all(r.state.terminal for r in ending):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(timeout=min(left, 0.5))
        return ending

    def stop(self) -> None:
        self._stopping.set()
        self._watcher.join(timeout=5)
        self.local.stop()
        self._record_suppressed_rejections()
        self.ledger.close()

    # --- submission ----------------------------------------------------------------------

    def _check_resources(self, request: JobRequest, tasks: int) -> None:
        resources = request.resources
        if tasks > self.settings.cluster.max_array:  # every executor, not only Slurm
            raise RequestError(
                "array",
                f"an array of {tasks} tasks; cluster.max_array is {self.settings.cluster.max_array}",
            )
        try:
            if self.executor == "local":
                if resources.nodes > 1 or resources.tasks_per_node > 1:
                    raise RequestError(
                        "resources.nodes",
                        "the local executor runs one task on one node; multi-node and multi-task jobs need "
                        "cluster.executor = 'slurm'",
                    )
                self.local.check(resources.gpus)
            else:
                assert self.slurm is not None
                self.slurm.check(resources, tasks)
        except (LocalSchedulerError, ValueError) as exc:
            if isinstance(exc, RequestError):
                raise
            field = (
                "array"
                if "array" in str(exc)
                else "resources.nodes"
                if "nodes" in str(exc)
                else "resources.gpus"
            )
            raise RequestError(field, str(exc)) from None

    def _check_in_flight(self, tasks: int) -> None:
        """Refuse a submission that would take the runs queued or running past
        ``cluster.max_in_flight`` (checked under the lock that adds them, so concurrent submits
        cannot both slip under it)."""
        limit = self.settings.cluster.max_in_flight
        active = sum(1 for r in self._records.values() if not r.state.terminal)
        if active + tasks > limit:
            raise RequestError(
                "array",
                f"{active} runs are queued or running and this submission adds {tasks}; "
                f"cluster.max_in_flight is {limit}. Wait for runs to end or cancel some",
            )

    def _submit_to_slurm(
        self,
        group: str,
        records: list[RunRecord],
        submitted: list[tuple[RunRecord, dict[str, Any]]],
    ) -> None:
        """sbatch, with the ledger transaction written meanwhile (submitit's files and sbatch
        mostly wait on the file system, which leaves the interpreter to the ledger). The submit is
        answered only once both are done; the watcher looks at a run only once it has its job id,
        which is after the ledger has its ``run_submitted``."""
        assert self.slurm is not None
        ledger_error: list[BaseException] = []

        def record_submitted() -> None:
            try:
                self.ledger.submitted_many(submitted)
            except BaseException as exc:  # re-raised in the submitting thread below
                ledger_error.append(exc)

        recording = threading.Thread(target=record_submitted, name="broker-ledger")
        recording.start()
        try:
            job_ids = self.slurm.submit(
                group,
                self.paths.submission(group),
                len(records),
                records[0].resources,
                records[0].name or "remote-run",
            )
        except SlurmError as exc:
            recording.join()  # the failures follow their run_submitted
            for record in records:
                self._finalize(record, [], external="FAILED", why=str(exc))
            raise
        recording.join()
        if ledger_error:
            # Nothing may run that the ledger does not know of.
            self.slurm.cancel(job_ids)
            with self._lock:
                for record in records:
                    record.state, record.reason = RunState.failed, "not recorded in the ledger"
                    self._save(record, fsync=False)
                os.sync()
            raise BrokerError(
                f"the ledger refused the submission ({ledger_error[0]}); its Slurm jobs were "
                "cancelled. Check the ledger (`agentic-researcher ledger verify`) and submit again"
            )
        with self._lock:
            for record, job_id in zip(records, job_ids, strict=True):
                record.slurm_job_id = job_id
            write_json_atomic(self.paths.job_ids(group), job_ids)
            for record in records:
                if record.run_id in self._own_record_file:
                    self._save(record)  # saved on its own before the job id was known

    def _queue_local(self, record: RunRecord) -> None:
        submission = self._submissions[record.group_id]
        position = self._positions[record.run_id]

        def prepare(devices: list[str]) -> None:
            prepare_run_dir(submission, position, devices)

        self.local.submit(record.run_id, Path(record.run_dir), record.resources.gpus, prepare)

    def _evaluation(self) -> Evaluation:
        """The protected paths a job submitted now runs with. Sandboxed in a session: the pristine
        copy pinned at launch, after recording any divergence of the workspace from it. Without a
        session (the host user's own broker), or unsandboxed (the job reads the live files): the
        protected paths as they are now, hashed and copied the same way."""
        try:
            if self.evaluation is not None:
                self._record_divergence()
                if self.job_sandbox == "required":
                    return self.evaluation
            protected = self.settings.research.protected_paths
            return capture(self.workspace, protected, store_of(self.paths.state_dir))
        except EvaluationError as exc:
            raise RequestError("workspace", str(exc)) from None
        except OSError as exc:
            raise BrokerError(f"cannot read the protected paths of the workspace: {exc}") from None

    def _record_divergence(self) -> None:
        """An ``evaluation_diverged`` ledger event when the workspace's protected paths differ
        from the pristine copy, once per distinct state (not at every submit)."""
        assert self.evaluation is not None
        current = scan(self.workspace, self.evaluation.protected)
        payload = divergence_payload(self.evaluation, current, "submit")
        with self._lock:
            if payload is None or payload["current_sha256"] == self._diverged_seen:
                return
            self._diverged_seen = payload["current_sha256"]
        self.ledger.diverged(payload)

    def _snapshot(self) -> Snapshot | None:
        """The workspace state the job will run from (None: not a git repository)."""
        if not is_git_workspace(self.workspace):
            return None
        try:
            return take_snapshot(self.workspace, self.paths.snapshots)
        except SnapshotError as exc:
            raise RequestError("workspace", str(exc)) from None
        except OSError as exc:
            raise BrokerError(f"cannot snapshot the workspace (is git installed?): {exc}") from None

    def _submission(
        self,
        group: str,
        records: list[RunRecord],
        snapshot: Snapshot | None,
        plan: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """One file per submission, ``dispatch/groups/<group>.json``: the records as submitted (what
        the runs share once, what differs per run) and what a node needs to start any of them
        (runner.task_of). One write and one fsync for an array of any size."""
        first = records[0]
        time_minutes = first.resources.time_minutes or self.settings.cluster.time_minutes
        diff = snapshot.store_diff(self.paths.diff(group)) if snapshot is not None else None
        return {
            "record": first.model_dump(mode="json", exclude=_PER_RUN),
            "runs": [
                {"run_id": r.run_id, "array_index": r.array_index, "argv": r.argv} for r in records
            ],
            "runs_dir": str(self.paths.runs),
            "diff": str(diff) if diff is not None else None,
            "sandbox": plan,
            # The ranks' relays prove with it that they belong to this job (jobnet.py); never
            # in a run dir, which the job can read.
            "jobnet_key": secrets.token_hex(32)
            if plan is not None and plan["network"] == "private"
            else None,
            "time_limit_s": time_minutes * 60 if self.executor == "local" else None,
        }

    def _submitted_payload(self, record: RunRecord) -> dict[str, Any]:
        return {
            "experiment": record.name,
            "argv": record.argv,
            "params": {"env": record.env} if record.env else None,
            "git_commit": record.git_commit,
            "diff_hash": record.diff_hash,
            "executor": record.executor,
            "array_index": record.array_index,
            "resources": record.resources.model_dump(),
            "run_dir": record.run_dir,
            "tags": record.tags or None,
            "extra": {
                "group_id": record.group_id,
                "cwd": record.cwd,
                "snapshot_tree": record.snapshot_tree,
                "snapshot_diff": str(self.paths.diff(record.group_id))
                if record.snapshot_tree
                else None,
                "sandbox": record.sandbox,
                "sandbox_image": record.sandbox_image,
                "evaluation_sha256": record.evaluation_sha256,
                "detach": record.detach or None,
            },
        }

    # --- state transitions ---------------------------------------------------------------

    def _save(self, record: RunRecord, fsync: bool = True) -> None:
        """One run's record after a state change (it overrides the group file's copy)."""
        write_json_atomic(
            self.paths.records / f"{record.run_id}.json", record.model_dump(mode="json"), fsync
        )
        self._own_record_file.add(record.run_id)

    def _mark_started(
        self, record: RunRecord, nodes: list[str], devices: list[str], pid: int | None
    ) -> None:
        with self._lock:
            if record.state is not RunState.queued:
                return
            record.state = RunState.running
            record.started_at = utcnow()
            record.nodes = nodes
            record.devices = devices
            if pid is not None:
                record.pids = [pid]
            self._save(record)
            from framework.ledger import GpuAllocation

            gpus = record.resources.gpus * record.resources.nodes
            self.ledger.record(
                "run_started",
                record,
                {
                    "nodes": nodes,
                    "gpus": GpuAllocation(count=gpus).model_dump(),
                    "slurm_job_id": record.slurm_job_id,
                    "started_at": record.started_at.isoformat(),
                    "extra": {"cuda_visible_devices": ",".join(devices)} if devices else None,
                },
            )
            self._changed.notify_all()

    def _local_started(self, run_id: str, devices: list[str], pid: int) -> None:
        record = self._records.get(run_id)
        if record is not None:
            self._mark_started(record, [socket.gethostname()], devices, pid)

    def _local_exited(self, run_id: str, code: int | None) -> None:
        record = self._records.get(run_id)
        if record is None:
            return
        if (
            record.state is RunState.queued
        ):  # the runner never started (cannot happen unless Popen failed)
            self._mark_started(record, [socket.gethostname()], [], None)
        cancelled = record.reason in CANCEL_REASONS
        self._finalize(
            record,
            self._exits(record),
            external="CANCELLED" if cancelled else None,
            runner_status=code,
        )

    def _exits(self, record: RunRecord) -> list[dict[str, Any]]:
        exits = []
        for rank in range(record.resources.world_size):
            name = f"exit.{rank}.json"
            if safefs.is_regular_file(Path(record.run_dir), name):
                with contextlib.suppress(OSError, json.JSONDecodeError):
                    loaded = json.loads(_read_run_file(Path(record.run_dir), name))
                    if isinstance(loaded, dict):  # the job may have written anything there
                        exits.append(loaded)
        return exits

    def _finalize(
        self,
        record: RunRecord,
        exits: list[dict[str, Any]],
        external: str | None,
        runner_status: int | None = None,
        why: str | None = None,
    ) -> None:
        """Decide the final state from the ranks' exit files and, when they are missing, the
        executor's word (a Slurm state, or CANCELLED for our own cancel). Records it once."""
        with self._lock:
            if record.state.terminal:
                return
            world = record.resources.world_size
            codes = [int(e.get("code", 1)) for e in exits]
            reasons = [str(e["reason"]) for e in exits if e.get("reason")]
            exit_code = next((c for c in codes if c != 0), 0 if codes else None)
            if why is not None:
                state, reason = RunState.failed, why
            elif external == "CANCELLED":
                state, reason = RunState.cancelled, record.reason or "cancelled in Slurm"
            elif external in ("TIMEOUT", "DEADLINE") or any("time limit" in r for r in reasons):
                state, reason = RunState.failed, "time limit exceeded"
            elif external in ("NODE_FAIL", "BOOT_FAIL"):
                state, reason = (
                    RunState.failed,
                    f"node failure ({external}) on {','.join(record.nodes) or '?'}",
                )
            elif len(exits) == world and all(c == 0 for c in codes):
                state, reason = RunState.finished, None
            elif exits and exit_code:
                state, reason = RunState.failed, reasons[0] if reasons else f"exit code {exit_code}"
            else:
                detail = f"Slurm state {external}" if external else f"runner status {runner_status}"
                state, reason = (
                    RunState.failed,
                    f"{len(exits)} of {world} ranks reported an exit ({detail})",
                )
            if state is not RunState.cancelled and record.reason in CANCEL_REASONS and not exits:
                state = RunState.cancelled
            for host in (str(e["host"]) for e in exits if e.get("host")):
                if host not in record.nodes:
                    record.nodes.append(host)
            record.state = state
            record.reason = reason
            record.exit_code = exit_code
            record.ended_at = utcnow()
            self._save(record)
            kind = {
                RunState.finished: "run_finished",
                RunState.failed: "run_failed",
                RunState.cancelled: "run_cancelled",
            }[state]
            metrics, artifacts = _results(Path(record.run_dir))
            self.ledger.record(
                kind,
                record,
                {
                    "exit_code": exit_code,
                    "reason": reason,
                    "ended_at": record.ended_at.isoformat(),
                    "metrics": metrics,
                    "artifacts": artifacts or None,
                    "nodes": record.nodes or None,
                    "slurm_job_id": record.slurm_job_id,
                },
            )
            self._changed.notify_all()

    # --- watching and recovery -----------------------------------------------------------

    def _watch(self) -> None:
        last_sacct = 0.0
        interval = WATCH_MIN_S
        while not self._stopping.wait(interval):
            with self._lock:
                active = [
                    r
                    for r in self._records.values()
                    if r.executor == "slurm" and r.slurm_job_id and not r.state.terminal
                ]
            # A few stats per active run and tick: keep a 1,000-task array from eating a core.
            interval = min(WATCH_MAX_S, max(WATCH_MIN_S, len(active) * WATCH_PER_RUN_S))
            if not active:
                continue
            for record in active:
                self._check_files(record)
            if time.monotonic() - last_sacct >= SLURM_POLL_S:
                last_sacct = time.monotonic()
                try:
                    self._check_slurm([r for r in active if not r.state.terminal])
                except (OSError, SlurmError, ValueError):
                    continue

    def _check_files(self, record: RunRecord) -> None:
        run_dir = Path(record.run_dir)
        if record.state is RunState.queued:
            started = [
                name
                for rank in range(record.resources.world_size)
                if safefs.stat_beneath(run_dir, name := f"started.{rank}.json") is not None
            ]
            if started:
                nodes: list[str] = []
                for name in started:
                    with contextlib.suppress(OSError, json.JSONDecodeError, AttributeError):
                        host = json.loads(_read_run_file(run_dir, name)).get("host")
                        if host and host not in nodes:
                            nodes.append(host)
                self._mark_started(record, nodes, [], None)
        exits = self._exits(record)
        if any(_by_signal(int(e.get("code", 0))) for e in exits):
            return  # sacct says why (cancel, time limit, node failure)
        if len(exits) == record.resources.world_size:
            if record.state is RunState.queued:
                self._mark_started(record, [str(e.get("host")) for e in exits], [], None)
            cancelled = record.reason in CANCEL_REASONS
            self._finalize(
                record,
                exits,
                external="CANCELLED" if cancelled and any(e.get("code") for e in exits) else None,
            )

    def _check_slurm(self, active: list[RunRecord]) -> None:
        assert self.slurm is not None
        ids = [r.slurm_job_id for r in active if r.slurm_job_id]
        states = self.slurm.states([i for i in ids if i])
        now = time.monotonic()
        for record in active:
            if not record.slurm_job_id or record.slurm_job_id not in states:
                continue
            state, node_list = states[record.slurm_job_id]
            if state == "RUNNING" and record.state is RunState.queued:
                self._mark_started(record, _expand_nodes(node_list), [], None)
            if state in TERMINAL_SLURM_STATES:
                if record.state is RunState.queued and state != "CANCELLED":
                    self._mark_started(record, _expand_nodes(node_list), [], None)
                seen = self._slurm_terminal_seen.setdefault(record.run_id, now)
                exits = self._exits(record)
                complete = len(exits) == record.resources.world_size
                if (
                    state in ("COMPLETED", "FAILED")
                    and not complete
                    and now - seen < SLURM_FILE_GRACE_S
                ):
                    continue  # the exit files may still be on their way over a shared file system
                if state in ("NODE_FAIL", "TIMEOUT", "CANCELLED", "BOOT_FAIL", "DEADLINE"):
                    self._finalize(record, exits, external=state)
                else:
                    self._finalize(record, exits, external=None if complete else state)
        # Pending tasks we cancelled can stay missing from sacct for a long while (slurmdbd is
        # slow to hear of them); once squeue no longer lists them either, they never ran.
        unseen = [
            r
            for r in active
            if r.slurm_job_id not in states
            and r.state is RunState.queued
            and r.reason in CANCEL_REASONS
        ]
        if unseen:
            queued = self.slurm.in_queue([r.slurm_job_id for r in unseen if r.slurm_job_id])
            if queued is not None:
                self._cancel_unstarted([r for r in unseen if r.slurm_job_id not in queued])

    def _recover(self) -> None:
        """Reload the records of an earlier broker process and resume watching its runs."""
        by_id: dict[str, RunRecord] = {}
        # host-path: dispatch/groups, the broker's own
        for path in sorted(self.paths.groups.glob("*.json")):
            try:
                # host-path: dispatch/groups, the broker's own
                submission = json.loads(path.read_text())
                records = _records_of(submission)
                job_ids_file = self.paths.job_ids(path.stem)
                # host-path: dispatch/groups
                job_ids = json.loads(job_ids_file.read_text()) if job_ids_file.is_file() else None
            except (OSError, ValueError, TypeError, KeyError):
                continue
            self._submissions[path.stem] = submission
            if job_ids is not None and len(job_ids) != len(records):
                job_ids = None  # not ours: such runs are recorded failed below
            for position, record in enumerate(records):
                if job_ids is not None:
                    record.slurm_job_id = job_ids[position]
                by_id[record.run_id] = record
                self._positions[record.run_id] = position
        # host-path: dispatch/records, the broker's own
        for path in sorted(self.paths.records.glob("*.json")):
            try:
                # host-path: dispatch/records, the broker's own
                record = RunRecord.model_validate_json(path.read_text())
            except (OSError, ValidationError):
                continue
            by_id[record.run_id] = record
            self._own_record_file.add(record.run_id)
        for record in sorted(by_id.values(), key=lambda r: (r.submitted_at, r.run_id)):
            self._records[record.run_id] = record
            self._groups.setdefault(record.group_id, []).append(record.run_id)
            if record.client_token:
                self._tokens[record.client_token] = record.group_id
            if record.state.terminal:
                continue
            self.ledger.record("run_submitted", record, self._submitted_payload(record))
            if record.executor != "local":
                if not record.slurm_job_id:
                    why = (
                        "the broker stopped while submitting this run to Slurm; it may or may "
                        "not have run (see its run dir); submit it again"
                    )
                    self._finalize(record, self._exits(record), external="FAILED", why=why)
                continue
            if record.state is RunState.queued and not record.pids:
                self._queue_local(record)
            elif record.pids and pid_alive(record.pids[0]):
                self.local.adopt(record.run_id, record.pids[0], record.devices)
            else:
                self._local_exited(record.run_id, None)

    def _log_rejected(self, raw: bytes, exc: RequestError) -> None:
        """Put a refused request on record: in the ledger (``request_rejected``, with a bounded
        copy of the request) and in ``rejected.jsonl``, which keeps it if the ledger cannot.

        At most :data:`REJECTIONS_BURST` refusals are recorded one by one, then
        :data:`REJECTIONS_PER_S` a second: an agent sending refused requests in a loop must not
        fill the ledger. Those not recorded are counted, and the next recorded one (or one at
        :meth:`stop`) carries that count as ``suppressed``."""
        with self._lock:
            suppressed = self._rejections.take()
        if suppressed is None:
            return
        entry = {
            "time": utcnow().isoformat(),
            "field": exc.field,
            "error": exc.message,
            "bytes": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "head": raw[:200].decode("utf-8", errors="replace"),
            "session_id": self.session_id,
        }
        payload = {
            "field": exc.field,
            "reason": exc.message,
            "bytes": len(raw),
            "sha256": entry["sha256"],
            "request": bounded_copy(raw),
        }
        if suppressed:
            entry["suppressed"] = payload["suppressed"] = suppressed
        # host-path: dispatch/rejected.jsonl, the broker's own
        with self._lock, self.paths.rejected_log.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
        self.ledger.rejected(payload)

    def _record_suppressed_rejections(self) -> None:
        """At stop: the refusals not recorded since the last recorded one, as one event."""
        with self._lock:
            suppressed = self._rejections.drain()
        if not suppressed:
            return
        reason = f"{suppressed} refused request(s) not recorded one by one (broker rate limit)"
        # host-path: dispatch/rejected.jsonl, the broker's own
        with self._lock, self.paths.rejected_log.open("a") as fh:
            fh.write(json.dumps({"time": utcnow().isoformat(), "suppressed": suppressed}) + "\n")
        self.ledger.rejected({"field": "rate-limit", "reason": reason, "suppressed": suppressed})


REJECTIONS_BURST = 100
REJECTIONS_PER_S = 1.0


class _RejectionBudget:
    """A token bucket for recorded refusals (callers hold the broker's lock)."""

    def __init__(self) -> None:
        self.tokens = float(REJECTIONS_BURST)
        self.at = time.monotonic()
        self.suppressed = 0

    def take(self) -> int | None:
        """None: do not record this one (counted); else record it, with this many suppressed
        before it."""
        now = time.monotonic()
        self.tokens = min(float(REJECTIONS_BURST), self.tokens + (now - self.at) * REJECTIONS_PER_S)
        self.at = now
        if self.tokens < 1:
            self.suppressed += 1
            return None
        self.tokens -= 1
        return self.drain()

    def drain(self) -> int:
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed


def _records_of(submission: dict[str, Any]) -> list[RunRecord]:
    common = submission["record"]
    return [
        RunRecord.model_validate(
            {**common, **run, "run_dir": os.path.join(submission["runs_dir"], run["run_id"])}
        )
        for run in submission["runs"]
    ]


def _expand_nodes(node_list: str) -> list[str]:
    if not node_list or node_list in ("None assigned", "(null)"):
        return []
    if "[" not in node_list:
        return node_list.split(",")
    import subprocess

    proc = subprocess.run(
        ["scontrol", "show", "hostnames", node_list], capture_output=True, text=True, check=False
    )
    return proc.stdout.split() or [node_list]


MAX_RUN_FILE_BYTES = 1 << 20
"""``started.*.json`` and ``exit.*.json`` are a few hundred bytes; a job may write any size."""


def _read_run_file(run_dir: Path, name: str) -> str:
    """A small file the job may have written (or replaced with a link, FIFO or huge file): read
    beneath the run dir through no link, bounded; anything else raises OSError."""
    return safefs.read_text(run_dir, name, limit=MAX_RUN_FILE_BYTES)


def _results(run_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The job's metrics and artifacts, read from its run dir through no link: a link planted as
    ``metrics.json`` or ``artifacts/`` (to another project's credentials, say) lands nowhere."""
    metrics: dict[str, Any] | None = None
    with contextlib.suppress(OSError, json.JSONDecodeError, ValueError):
        loaded = json.loads(safefs.read_text(run_dir, "metrics.json", limit=MAX_METRICS_BYTES))
        if isinstance(loaded, dict):
            metrics = loaded
    artifacts: list[str] = []
    with contextlib.suppress(OSError):
        found = safefs.regular_files(run_dir, "artifacts", limit=MAX_ARTIFACTS_LISTED)
        artifacts = sorted(f"artifacts/{name}" for name in found)
    return metrics, artifacts


# --- the socket server -------------------------------------------------------------------


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        conn: socket.socket = self.request
        if not self.server.slots.acquire(blocking=False):
            _send(
                conn,
                {
                    "ok": False,
                    "error": "broker busy: too many open connections; retry",
                    "field": None,
                    "busy": True,
                },
            )
            return
        try:
            conn.settimeout(READ_TIMEOUT_S)
            raw = _read_request(conn)
            _send(conn, self.server.broker.handle_bytes(raw))
        except (TimeoutError, OSError):
            return
        except Exception:
            # A bug reached by some request: the client gets an answer, and the traceback goes
            # to the broker's own log, never to a terminal the agent's bytes could reach.
            _log_error(self.server.broker.paths.errors_log)
            _send(conn, {"ok": False, "error": INTERNAL_ERROR, "field": None})
        finally:
            self.server.slots.release()


INTERNAL_ERROR = "the broker failed on this request (details in its broker-errors.log); retry"


def _log_error(path: Path) -> None:
    import traceback

    with (
        contextlib.suppress(OSError),
        path.open("a") as log,
    ):  # host-path: dispatch/broker-errors.log, the host's
        log.write(f"{utcnow().isoformat()}\n{traceback.format_exc()}\n")


def _read_request(conn: socket.socket) -> bytes:
    """Read one request. Past the size limit the rest is read and dropped (so the client sees the
    answer rather than a reset connection) and the first limit+1 bytes are returned for rejection."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        if size <= MAX_REQUEST_BYTES:
            chunks.append(chunk)
        size += len(chunk)
        if size > MAX_DRAIN_BYTES:
            break
        if chunk.endswith(b"\n") and size <= MAX_REQUEST_BYTES:
            break
    return b"".join(chunks)[: MAX_REQUEST_BYTES + 1]


def _send(conn: socket.socket, response: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(response).encode() + b"\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, path: Path, broker: Broker) -> None:
        self.broker = broker
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(str(path), _Handler)


@dataclass
class BrokerHandle:
    """A running broker. Bind ``socket_path`` alone, read-only, onto a path in a directory the
    agent cannot write, and point ``REMOTE_RUN_SOCKET`` there; bind ``client_path`` read-only on
    the PATH. ``env`` is for clients on the host. Never mount the channel directory itself: the
    agent could then rename the socket and serve its own in its place."""

    broker: Broker
    socket_path: Path
    client_path: Path
    env: dict[str, str]
    _server: _Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def end_session(self) -> None:
        """Stop serving, cancel the session's runs that did not ask to detach (recorded in the
        ledger), then stop."""
        self._server.shutdown()
        self.broker.end_session()
        self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.broker.stop()
        # remove the name itself, whatever it now is (no link followed)
        with contextlib.suppress(OSError):
            safefs.remove(self.socket_path.parent, self.socket_path.name)


def install_client(target: Path) -> Path:
    """Copy the stdlib-only client to ``target`` as an executable script."""
    # host-path: dispatch/bin, mounted read-only in the sandbox
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    # host-path: this checkout's file into dispatch/bin
    shutil.copyfile(Path(__file__).with_name("client.py"), tmp)
    tmp.chmod(0o755)  # host-path: dispatch/bin
    os.replace(tmp, target)  # host-path: dispatch/bin
    return target


def start_broker(
    workspace_root: Path,
    settings: Settings,
    session_id: str | None = None,
    job_sandbox: JobSandboxMode | None = None,
) -> BrokerHandle:
    """Start a broker serving the workspace's channel in a background thread.

    ``job_sandbox`` overrides ``cluster.job_sandbox`` (default 'required': jobs run in bwrap)."""
    broker = Broker(workspace_root, settings, session_id, job_sandbox)
    channel = broker.paths.channel
    # host-path: the channel dir itself (host-owned, 0700, checked by _open_channel below)
    channel.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(_open_channel(channel))
    except BrokerError:
        broker.stop()
        raise
    sock = channel / SOCKET_NAME
    if safefs.stat_beneath(channel, SOCKET_NAME) is not None:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(sock))
        except OSError:
            safefs.remove(channel, SOCKET_NAME)  # left behind by a broker that was killed
        else:
            broker.stop()
            raise BrokerError(f"another broker is already serving {sock}; stop it first")
        finally:
            probe.close()
    server = _Server(sock, broker)
    # The agent may run as another uid (Docker); the 0700 directory keeps every other user of the
    # host away from the socket, and a sandbox is given the socket alone.
    os.chmod(sock, 0o666)  # host-path: the socket just bound in the host's 0700 dir
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="broker", daemon=True
    )
    thread.start()
    client = install_client(broker.paths.client)
    return BrokerHandle(broker, sock, client, {SOCKET_ENV: str(sock)}, server, thread)


def serve_forever(
    workspace_root: Path, settings: Settings, on_ready: Callable[[BrokerHandle], None] | None = None
) -> None:
    """Run a broker in the foreground until SIGINT/SIGTERM."""
    import signal

    handle = start_broker(workspace_root, settings)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    if on_ready is not None:
        on_ready(handle)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()


def _by_signal(code: int) -> bool:
    """Whether a rank's exit code may be a death by a signal: negative (the runner's own child),
    or above 128, as a sandbox wrapper reports its child's (bwrap exits with 128 + the signal's
    number; a job on a node taken down dies of SIGTERM, and exit code 143 must not hide the node
    failure that sacct reports a moment later). A program that exits with such a code itself is
    recorded from sacct's next poll, a few seconds later, with the same exit code."""
    return code < 0 or code > 128
