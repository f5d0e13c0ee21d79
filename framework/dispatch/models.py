"""Job requests and run records: the data that crosses the sandbox boundary, validated once here.

Everything the agent sends is a :class:`JobRequest` (or another :data:`BrokerOp`): argv as a list,
never shell text; a working directory that must resolve inside the workspace; environment
additions from a fixed allowlist; bounded resources and sizes. Extra fields are errors.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_REQUEST_BYTES = 256 * 1024
MAX_ARGV_ITEMS = 1024
MAX_ARG_CHARS = 8192
MAX_ARGV_TOTAL_CHARS = 64 * 1024
MAX_ENV_VALUE_CHARS = 4096
MAX_ARRAY_TASKS = 10_000

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
ENV_ALLOWED_NAMES = frozenset(
    {
        "PYTHONHASHSEED",
        "PYTHONUNBUFFERED",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "TOKENIZERS_PARALLELISM",
        "CUBLAS_WORKSPACE_CONFIG",
        "NCCL_DEBUG",
        "TORCH_DISTRIBUTED_DEBUG",
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "WANDB_MODE",
    }
)
ENV_ALLOWED_PREFIX = "EXP_"
"""Experiment parameters: any ``EXP_<NAME>`` variable may be set by a request."""

ARRAY_INDEX_PLACEHOLDER = "{index}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    gpus: int = Field(default=0, ge=0, le=64, description="GPUs per node")
    cpus: int = Field(default=1, ge=1, le=256, description="CPUs per task")
    mem_gb: float | None = Field(default=None, gt=0, le=4096, description="memory per node")
    time_minutes: int | None = Field(
        default=None, ge=1, le=10080, description="default: cluster.time_minutes"
    )
    nodes: int = Field(default=1, ge=1, le=512)
    tasks_per_node: int = Field(default=1, ge=1, le=64)

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node


def parse_array_spec(spec: str) -> list[int]:
    """``"0-19"``, ``"1,3,5"``, ``"0-9,20"`` -> sorted unique indices. Raises ValueError."""
    indices: set[int] = set()
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d{1,6})(?:-(\d{1,6}))?\s*", part)
        if not match:
            raise ValueError(
                f"array spec {spec!r}: {part!r} is not N or N-M (example: 0-19 or 1,3,5)"
            )
        lo = int(match.group(1))
        hi = int(match.group(2) or lo)
        if hi < lo:
            raise ValueError(f"array spec {spec!r}: range {part!r} ends before it starts")
        if hi - lo + 1 + len(indices) > MAX_ARRAY_TASKS:
            raise ValueError(f"array spec {spec!r}: more than {MAX_ARRAY_TASKS} tasks")
        indices.update(range(lo, hi + 1))
    return sorted(indices)


class JobRequest(_Strict):
    """One submission from ``remote-run``. An array submission becomes one run per index."""

    argv: list[str] = Field(min_length=1, max_length=MAX_ARGV_ITEMS)
    cwd: str = Field(
        default=".", max_length=4096, description="relative to the workspace, or absolute inside it"
    )
    env: dict[str, str] = Field(default_factory=dict, max_length=64)
    resources: Resources = Field(default_factory=Resources)
    array: list[int] | None = Field(
        default=None, description="array indices; '{index}' in argv is replaced by each"
    )
    name: str | None = Field(default=None, pattern=f"^{NAME_PATTERN}$")
    tags: list[Annotated[str, Field(pattern=f"^{NAME_PATTERN}$")]] = Field(
        default_factory=list, max_length=16
    )
    client_token: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9-]{8,64}$",
        description="idempotency key: a retried submit with the same token returns the same runs",
    )
    detach: bool = Field(
        default=False,
        description="keep the runs going after the session that submitted them ends (else they "
        "are cancelled then)",
    )

    @field_validator("argv")
    @classmethod
    def _argv(cls, argv: list[str]) -> list[str]:
        if not argv[0]:
            raise ValueError("argv[0] (the program) must not be empty")
        total = 0
        for i, arg in enumerate(argv):
            if "\x00" in arg:
                raise ValueError(f"argv[{i}] contains a NUL byte")
            if len(arg) > MAX_ARG_CHARS:
                raise ValueError(
                    f"argv[{i}] is {len(arg)} characters; the limit is {MAX_ARG_CHARS}"
                )
            total += len(arg)
        if total > MAX_ARGV_TOTAL_CHARS:
            raise ValueError(f"argv totals {total} characters; the limit is {MAX_ARGV_TOTAL_CHARS}")
        return argv

    @field_validator("cwd")
    @classmethod
    def _cwd(cls, cwd: str) -> str:
        if "\x00" in cwd:
            raise ValueError("contains a NUL byte")
        if ".." in Path(cwd).parts:
            raise ValueError(f"{cwd!r} contains '..'; give a path inside the workspace")
        return cwd

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        for key, value in env.items():
            if not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,127}", key):
                raise ValueError(f"{key!r} is not an environment variable name (A-Z, 0-9, _)")
            if key not in ENV_ALLOWED_NAMES and not key.startswith(ENV_ALLOWED_PREFIX):
                raise ValueError(
                    f"{key!r} is not allowed; allowed: {ENV_ALLOWED_PREFIX}* and "
                    + ", ".join(sorted(ENV_ALLOWED_NAMES))
                )
            if "\x00" in value or len(value) > MAX_ENV_VALUE_CHARS:
                raise ValueError(
                    f"value of {key} has a NUL byte or exceeds {MAX_ENV_VALUE_CHARS} characters"
                )
        return env

    @field_validator("array")
    @classmethod
    def _array(cls, array: list[int] | None) -> list[int] | None:
        if array is None:
            return None
        if not array:
            raise ValueError("an array needs at least one index")
        if len(array) > MAX_ARRAY_TASKS:
            raise ValueError(f"{len(array)} tasks; the limit is {MAX_ARRAY_TASKS}")
        if any(i < 0 or i > 999_999 for i in array):
            raise ValueError("array indices must be between 0 and 999999")
        if len(set(array)) != len(array):
            raise ValueError("array indices must be unique")
        return array

    def argv_for(self, index: int | None) -> list[str]:
        if index is None:
            return list(self.argv)
        return [arg.replace(ARRAY_INDEX_PLACEHOLDER, str(index)) for arg in self.argv]


class RequestError(ValueError):
    """A request was rejected. ``field`` names the offending field (dotted), or 'request'."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


MAX_NESTING = 16
"""Deepest nesting of lists and objects a request may have (a submit needs 4)."""


def decode_request(raw: bytes) -> Any:
    """The JSON value of one request, or :class:`RequestError` for any bytes that cannot be one:
    over the size limit, not strict UTF-8, not JSON (``NaN`` and ``Infinity`` included), a number
    too long to convert, or nested deeper than :data:`MAX_NESTING`. Never anything else: these
    bytes come from the sandbox."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestError("request", f"larger than the limit of {MAX_REQUEST_BYTES} bytes")
    try:
        # Decoded here, strictly: given bytes, json would also guess UTF-16 and UTF-32.
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:  # the decoder's own depth limit, far past ours
        raise RequestError("request", f"nested deeper than {MAX_NESTING} levels") from None
    except ValueError as exc:  # also UnicodeDecodeError, and an integer past the digit limit
        raise RequestError("request", f"not valid JSON ({exc}); send one JSON object") from None
    pending: list[tuple[Any, int]] = [(data, 0)]
    while pending:  # a loop, not recursion: the depth is what is being bounded
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth == MAX_NESTING:
                raise RequestError("request", f"nested deeper than {MAX_NESTING} levels")
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


REJECTED_COPY_CHARS = 2000
"""How much of a rejected request the ledger keeps: it is hostile input of up to 256 KiB."""
REJECTED_COPY_DEPTH = 8
REJECTED_COPY_STRING = 500


def bounded_copy(raw: bytes, budget: int = REJECTED_COPY_CHARS) -> Any:
    """A copy of a rejected request that holds at most ``budget`` characters of its content.

    A request that parses as JSON keeps its shape (an auditor sees which op, which cwd, which argv);
    long strings are cut and the rest of a long list or object is replaced by a count (the budget
    can be overrun by one short item per nesting level). Anything
    else is kept as the first ``budget`` characters of its text."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        text = raw.decode("utf-8", errors="replace")
        return text if len(text) <= budget else f"{text[:budget]}... ({len(text)} characters)"
    left = [budget]

    def cut(item: Any, depth: int = 0) -> Any:
        if depth > REJECTED_COPY_DEPTH and isinstance(item, (list, dict)):
            left[0] -= 8
            return f"... (nested deeper than {REJECTED_COPY_DEPTH})"
        if isinstance(item, str):
            # Every string keeps a little (a key stays readable), none takes the whole budget.
            kept = item[: min(max(left[0], 32), REJECTED_COPY_STRING)]
            left[0] -= len(kept) + 2
            return kept if len(kept) == len(item) else f"{kept}... ({len(item)} characters)"
        if isinstance(item, list):
            out: list[Any] = []
            for position, element in enumerate(item):
                if left[0] <= 0:
                    out.append(f"... ({len(item) - position} more items)")
                    break
                out.append(cut(element, depth + 1))
            return out
        if isinstance(item, dict):
            kept_items: dict[str, Any] = {}
            for position, (key, element) in enumerate(item.items()):
                if left[0] <= 0:
                    kept_items["..."] = f"{len(item) - position} more fields"
                    break
                kept_items[str(cut(key, depth + 1))] = cut(element, depth + 1)
            return kept_items
        left[0] -= 8
        return item

    return cut(value)


def describe_validation_error(exc: ValidationError) -> RequestError:
    """The first error, as 'field: why', in words a script author can act on."""
    err = exc.errors()[0]
    parts = [str(p) for p in err["loc"]]
    if parts and parts[0] in OP_NAMES:  # the discriminated union puts the op name first
        parts = parts[1:]
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return RequestError("op", f"expected one of {', '.join(sorted(OP_NAMES))}")
    loc = ".".join(parts) or "request"
    if err["type"] == "extra_forbidden":
        return RequestError(loc, "unknown field; remove it (see `remote-run --help`)")
    msg = err["msg"].removeprefix("Value error, ")
    return RequestError(loc, msg)


def resolve_cwd(workspace: Path, cwd: str) -> Path:
    """The request's working directory, symlinks resolved; must be an existing dir inside the workspace."""
    root = workspace.resolve()
    candidate = Path(cwd) if Path(cwd).is_absolute() else root / cwd
    try:
        resolved = candidate.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise RequestError("cwd", f"{cwd!r} does not exist inside the workspace {root}") from None
    if resolved != root and root not in resolved.parents:
        raise RequestError("cwd", f"{cwd!r} resolves to {resolved}, outside the workspace {root}")
    # host-path: a look-up for the job's cwd; the host opens nothing there
    if not resolved.is_dir():
        raise RequestError("cwd", f"{cwd!r} is not a directory")
    return resolved


class RunState(StrEnum):
    queued = "queued"
    running = "running"
    finished = "finished"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (RunState.finished, RunState.failed, RunState.cancelled)


def utcnow() -> datetime:
    return datetime.now(UTC)


class RunRecord(BaseModel):
    """The broker's durable view of one run (one array element), in ``<state>/dispatch/records``."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    group_id: str
    array_index: int | None = None
    name: str | None = None
    argv: list[str]
    cwd: str
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources
    tags: list[str] = Field(default_factory=list)
    executor: Literal["local", "slurm"]
    run_dir: str
    session_id: str | None = None
    client_token: str | None = None
    git_commit: str | None = None
    diff_hash: str | None = None
    snapshot_tree: str | None = Field(
        default=None, description="git tree of the workspace at submit (see snapshot.py)"
    )
    sandbox: str | None = Field(default=None, description="runtime the job runs in, None: none")
    sandbox_image: str | None = Field(default=None, description="its image (docker), else None")
    evaluation_sha256: str | None = Field(
        default=None, description="the protected paths the job ran with (framework/evaluation.py)"
    )
    detach: bool = Field(default=False, description="outlives its session (JobRequest.detach)")
    state: RunState = RunState.queued
    submitted_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    nodes: list[str] = Field(default_factory=list)
    devices: list[str] = Field(
        default_factory=list, description="CUDA_VISIBLE_DEVICES given (local)"
    )
    slurm_job_id: str | None = None
    pids: list[int] = Field(default_factory=list, description="runner process ids (local)")
    ranks_started: int = 0

    def summary(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"env", "client_token", "pids"})


# Operations on the channel. One JSON object per connection, answered by one JSON object.


class SubmitOp(_Strict):
    op: Literal["submit"]
    request: JobRequest


class RunOp(_Strict):
    op: Literal["status", "cancel"]
    run: str = Field(pattern=r"^[A-Za-z0-9._-]{1,80}$", description="a run id or a group id")


class WaitOp(_Strict):
    op: Literal["wait"]
    run: str = Field(pattern=r"^[A-Za-z0-9._-]{1,80}$")
    timeout_s: float = Field(default=30.0, gt=0, le=300)


class LogsOp(_Strict):
    op: Literal["logs"]
    run: str = Field(pattern=r"^[A-Za-z0-9._-]{1,80}$")
    stream: Literal["stdout", "stderr"] = "stdout"
    rank: int = Field(default=0, ge=0, le=100_000)
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=1 << 20, ge=1, le=1 << 20)


class SimpleOp(_Strict):
    op: Literal["nodes", "list", "ping"]
    limit: int = Field(default=200, ge=1, le=100_000)


OP_NAMES = frozenset({"submit", "status", "cancel", "wait", "logs", "nodes", "list", "ping"})
BrokerOp = Annotated[SubmitOp | RunOp | WaitOp | LogsOp | SimpleOp, Field(discriminator="op")]


class NodeInfo(BaseModel):
    name: str
    state: str
    gpus_total: int
    gpus_busy: int
    cpus_total: int
    cpus_busy: int
