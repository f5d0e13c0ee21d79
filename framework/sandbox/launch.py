"""Launch one agent session: settings -> workspace + agent profile -> SandboxSpec -> runtime.

Everything the CLI's ``launch`` does is :func:`launch`; the end-to-end demo calls it directly
with a headless prompt and ``model_endpoint`` pointing at a local scripted model server.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from framework import safefs
from framework.agents import AgentInvocation, AgentProfile, credential_names, get_agent
from framework.config import AgentTool, Mount, NetworkPolicy, RuntimeName, Settings, load_settings
from framework.evaluation import (
    Evaluation,
    EvaluationError,
    capture,
    divergence_payload,
    pin_session,
    protected_names,
    scan,
    store_of,
)
from framework.gitplanted import planted, shown
from framework.hostgit import HostGitError
from framework.sandbox.proxy import EgressProxy
from framework.sandbox.runtime import SandboxError, Stdio, get_runtime
from framework.sandbox.spec import (
    PROXY_PORT,
    SANDBOX_HOME,
    BindMount,
    PortForward,
    Resources,
    SandboxSpec,
    allowlisted_env,
)
from framework.sandbox.store import SessionRecord, SessionStore, new_session_id
from framework.workspace import Workspace, find_root, git_state

if TYPE_CHECKING:
    from framework.ledger import Ledger

FORWARDER = Path(__file__).with_name("forward.py")
MAX_PROMPT_BYTES = 1 << 20
"""The largest Codex custom prompt copied into the agent home (the workspace's file, any size)."""
SANDBOX_PATH = "/home/agent/.local/bin:/opt/uv/bin:/usr/local/bin:/usr/bin:/bin"
CLIENT_BIN_DIR = Path("/opt/agentic-researcher/bin")
"""Where the broker's client (``remote-run``) is mounted inside, first on PATH."""
BROKER_SOCKET = Path("/opt/agentic-researcher/broker.sock")
"""Where the broker's socket is mounted inside: a read-only bind of the socket alone, in a
directory the agent cannot write (bwrap: the read-only root; containers: root's, and the agent
never is root)."""
DOCKER_SOCKETS = (Path("/var/run/docker.sock"), Path("/run/docker.sock"))


class LaunchRequest(BaseModel):
    """One session to start. Unset fields fall back to the workspace's settings."""

    model_config = ConfigDict(extra="forbid")

    workspace: Path = Field(default_factory=Path.cwd)
    tool: AgentTool | None = None
    runtime: RuntimeName | None = None
    prompt: str | None = Field(default=None, description="run headless with this prompt")
    yolo: bool = False
    resume: str | None = None
    continue_last: bool = False
    model: str | None = None
    gpus: str | None = None
    network: NetworkPolicy | None = None
    mounts: list[Mount] = Field(default_factory=list)
    extra_args: list[str] = Field(default_factory=list)
    extra_env: dict[str, str] = Field(
        default_factory=dict, description="explicit values set inside, e.g. ANTHROPIC_BASE_URL"
    )
    model_endpoint: str | None = Field(
        default=None,
        description="http://HOST:PORT of a model server on the host, reachable inside at the same "
        "URL (network 'allowlist': through a dedicated bridge; 'open': directly)",
    )
    command: list[str] | None = Field(
        default=None, description="run this argv instead of the agent (shells, tests, benchmarks)"
    )
    broker: bool = True
    render_methodology: bool = True
    record_in_ledger: bool = True
    query_version: bool = True
    detach: bool = False
    capture_output: bool = Field(
        default=False, description="save stdout/stderr to the session dir instead of printing"
    )
    settings: Settings | None = Field(default=None, description="preloaded settings (else loaded)")

    @field_validator("model_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname or url.port is None:
            raise ValueError(f"model_endpoint must look like http://127.0.0.1:8080, got {value!r}")
        return value


@dataclass
class _Session:
    """Host-side resources of a running session, released in ``close``."""

    bridge_dir: Path | None = None
    proxy: EgressProxy | None = None
    broker: Any = None
    ledger: Ledger | None = None
    notes: list[str] = field(default_factory=list)
    evaluation: Evaluation | None = None

    def stop_services(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        if self.broker is not None:
            self.broker.end_session()  # no job outlives its session unless it asked to detach
        if self.bridge_dir is not None:
            # host-path: the launcher's own mkdtemp dir, mounted read-only in the sandbox
            shutil.rmtree(self.bridge_dir, ignore_errors=True)

    def close_ledger(self) -> None:
        if self.ledger is not None:
            self.ledger.close()


def launch(
    request: LaunchRequest,
    *,
    stdio: Stdio | None = None,
    egress_hosts: Mapping[str, str] | None = None,
) -> SessionRecord:
    """Run one sandboxed session to its end and return its record (also saved in the store).

    ``egress_hosts`` (name -> IP, consulted by the egress proxy before DNS) exists for tests
    that stand up "allowed" and "denied" servers on loopback; it is not reachable from settings.
    """
    settings = request.settings or _load(request)
    root = find_root(request.workspace)
    workspace = Workspace(root=root, settings=settings)
    tool = request.tool or settings.agent.tool
    runtime_name = request.runtime or settings.sandbox.runtime
    network = request.network or settings.sandbox.network
    profile = get_agent(tool)
    runtime = get_runtime(runtime_name)
    if request.detach and runtime_name == "bwrap":
        raise SandboxError("detached sessions need a container runtime: use --runtime docker")
    if request.detach and (network == "allowlist" or request.broker):
        raise SandboxError(
            "a detached session outlives this launcher, and with it the egress proxy and the "
            "broker: detach only with --network none or open, and --no-broker"
        )
    if network == "none" and request.model_endpoint:
        raise SandboxError(
            "network 'none' cannot reach a model endpoint; use --network allowlist, which "
            "opens exactly that endpoint (plus the allowlisted domains)"
        )

    how = AgentInvocation(
        prompt=request.prompt,
        model=request.model or settings.agent.model,
        yolo=request.yolo,
        resume=request.resume,
        continue_last=request.continue_last,
        extra_args=[*settings.agent.extra_args, *request.extra_args],
    )
    argv = request.command or profile.argv(how)
    uid, gid = sandbox_ids(runtime_name, root)
    # host-path: the workspace root itself, resolved from the path the user named
    if runtime_name != "bwrap" and os.getuid() == 0 and root.stat().st_uid == 0:
        raise SandboxError(
            f"workspace {root} is owned by root, and in a container the agent runs as uid {uid}, "
            f"so it could not write there: `chown -R {uid}:{gid} {root}` (or run as your own "
            "user), or use --runtime bwrap, which maps the agent back to root"
        )
    home = workspace.state_dir / "agent-home" / tool
    # bwrap maps the sandbox uid back to the launcher's; containers use the uid as it is.
    owner = (os.getuid(), os.getgid()) if runtime_name == "bwrap" else (uid, gid)
    prepare_agent_home(profile, home, *owner)
    transcripts_before = profile.transcript_state(home)

    record = SessionRecord(
        id=new_session_id(),
        tool=tool,
        model=how.model,
        runtime=runtime_name,
        network=network,
        workspace=root,
        started_at=datetime.now(UTC),
        git_commit_before=_commit_before(root),
        headless=request.prompt is not None or request.command is not None,
        detached=request.detach,
    )
    store = SessionStore(workspace.sessions_dir)
    session = _Session()
    started = False
    if network == "open":
        session.notes.append("network 'open': the agent can reach any host the launcher can")
        print(
            "warning: network 'open' gives the agent unrestricted network access",
            file=sys.stderr,
        )
    try:
        if request.render_methodology and request.command is None:
            _render(settings, tool, root, home, owner)
        mounts = [
            *workspace_mounts(workspace),
            BindMount(source=home, target=SANDBOX_HOME, read_only=False),
        ]
        session.evaluation = pin_evaluation(workspace, record.id)
        record.evaluation_sha256 = session.evaluation.sha256
        mounts += [_user_mount(m) for m in [*settings.sandbox.mounts, *request.mounts]]
        env = allowlisted_env(
            os.environ,
            [*settings.sandbox.env_allowlist, *credential_names(tool, settings.agent.api_key_env)],
            {**settings.sandbox.env, **profile.environment(how), **request.extra_env},
        )
        env.update({"HOME": str(SANDBOX_HOME), "USER": "agent", "PATH": SANDBOX_PATH})
        env.setdefault("TERM", "xterm-256color" if sys.stdout.isatty() else "dumb")
        env["AR_SESSION_ID"] = record.id
        forwards = _network(session, network, settings, request.model_endpoint, egress_hosts, env)
        if request.broker:
            mounts += _broker(session, root, settings, record.id, env)
        spec = SandboxSpec(
            argv=argv,
            image=settings.sandbox.image,
            workdir=root,
            mounts=sorted(mounts, key=lambda m: len(m.target.parts)),
            uid=uid,
            gid=gid,
            env=env,
            network=network,
            forwards=forwards,
            gpus=request.gpus or settings.sandbox.gpus,
            resources=Resources(
                pids=settings.sandbox.pids_limit,
                memory_bytes=int(settings.sandbox.memory_gb * 2**30)
                if settings.sandbox.memory_gb
                else None,
                cpus=settings.sandbox.cpus,
            ),
            interactive=request.prompt is None and request.command is None,
            detach=request.detach,
            labels={"agentic-researcher.session": record.id},
        )
        if request.record_in_ledger:
            from framework.ledger import open_ledger

            session.ledger = open_ledger(workspace.ledger_url, workspace.state_dir)
        store.save(record)
        _record_event(session, "session_started", record)
        started = True
        io = stdio or Stdio(capture=request.capture_output)
        result = runtime.run(spec, session.bridge_dir, io)
        record.ended_at = datetime.now(UTC)
        record.exit_code = result.exit_code
        record.container_id = result.container_id
        if io.capture:
            _save_output(store, record, result.stdout, result.stderr)
        if request.query_version and request.command is None and not request.detach:
            record.tool_version = query_version(runtime_name, spec, profile)
    except BaseException as exc:
        session.notes.append(f"launch failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        session.stop_services()
        if started:
            _check_evaluation(session, record.id, root)
            _check_git(session, record.id, root, record.started_at.timestamp())
            _finish(record, store, root, home, profile, session.notes, transcripts_before)
            _record_event(session, "session_ended", record)
        session.close_ledger()
    return record


def _finish(
    record: SessionRecord,
    store: SessionStore,
    root: Path,
    home: Path,
    profile: AgentProfile,
    notes: list[str],
    transcripts_before: dict[Path, tuple[int, int]],
) -> None:
    """Complete and save the record: end time, git state after, notes, and the transcripts this
    session wrote (``transcripts_before``: their state before it) copied out."""
    record.ended_at = record.ended_at or datetime.now(UTC)
    try:
        after = git_state(root)
    except HostGitError as exc:
        notes.append(f"git state not read at session end: {exc}")
    else:
        record.git_commit_after = after.commit
        record.git_dirty_after = after.dirty
    record.notes += notes
    copied = store.copy_transcripts(
        record, home, profile.changed_transcripts(home, transcripts_before)
    )
    session_dir = store.path(record.id)
    profile.prune_copies([session_dir / name for name in copied], record.started_at)
    # host-path: the session store, which no sandbox mounts
    record.transcripts += [name for name in copied if (session_dir / name).is_file()]
    store.save(record)


def _load(request: LaunchRequest) -> Settings:
    return load_settings(workspace=find_root(request.workspace)).settings


def sandbox_ids(runtime: str, workspace: Path) -> tuple[int, int]:
    """The uid/gid the agent runs as: never root inside.

    A non-root launcher's own ids. For root: in bwrap uid 1000 maps back to root on the host (so
    files stay root's); in containers, which do not remap, the workspace owner's ids, else 1000.
    """
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    if runtime == "bwrap":
        return 1000, 1000
    st = workspace.stat()  # host-path: the workspace root itself, resolved from the user's path
    if st.st_uid != 0:
        return st.st_uid, st.st_gid
    return 1000, 1000


def prepare_agent_home(profile: AgentProfile, home: Path, uid: int, gid: int) -> None:
    """Create the agent's state paths, owned (when we can) by the host uid the agent maps to.

    Everything inside the home is the agent's (and a detached session may still be writing it):
    each step goes through safefs, so a link planted there (``.claude -> /etc``, a dangling
    ``.claude.json -> /etc/cron.d/x``) is neither written through nor chowned through, and a
    link on the way to a state path refuses the launch."""
    # host-path: state_dir/agent-home/<tool> itself (its parent is the host's; no sandbox has it)
    home.mkdir(parents=True, exist_ok=True)
    try:
        profile.prepare_home(home)
        _put_client_on_login_path(home)
        if os.getuid() == 0:
            safefs.chown_tree(home, "", uid, gid)
    except OSError as exc:
        raise SandboxError(
            f"cannot prepare the agent home {home}: {exc.filename}: {exc.strerror}; a session "
            "may have planted a link or special file there. Inspect it, remove it, and launch "
            "again"
        ) from None


MAX_PROFILE_BYTES = 1 << 20
"""The largest ``~/.profile`` of the agent home kept when the client's PATH line is added."""


def _put_client_on_login_path(home: Path) -> None:
    """Login shells (Codex runs commands with ``bash -lc``) rebuild PATH from /etc/profile, which
    drops the launcher's PATH; ~/.profile puts the ``remote-run`` directory back in front. A link
    (or special or oversized file) at ``.profile`` is replaced by the line alone, never read or
    written through."""
    line = f'export PATH="{CLIENT_BIN_DIR}:$PATH"  # agentic-researcher: remote-run\n'
    try:
        current = safefs.read_text(home, ".profile", limit=MAX_PROFILE_BYTES)
    except (FileNotFoundError, safefs.UnsafePath):
        current = ""
    if line not in current:
        safefs.replace(home, ".profile", (current + line).encode())


def workspace_mounts(workspace: Workspace) -> list[BindMount]:
    """The workspace read-write at its host path, each protected path that exists read-only over
    it, and each directory between the root and a protected path bound onto itself: a mount point
    cannot be renamed or removed (EBUSY), so no protected path can be moved away with an ancestor
    (``mv tests tests.orig``, ``mv .git .git.orig``) and replaced. A protected path absent at launch
    is not mounted, so nothing is created in the user's workspace (Docker would create the mount
    point, as root): jobs see it absent all the same, and creating it is reported as a divergence
    of the evaluation (framework/evaluation.py, docs/security.md, property 3)."""
    root = workspace.root
    mounts = [BindMount(source=root, target=root, read_only=False)]
    pinned: set[Path] = set()
    for name in protected_names(workspace.settings.research.protected_paths):
        path = root / name
        if _lstat_refusing_links(root, name) is None:
            continue
        for ancestor in reversed(Path(name).parents[:-1]):
            if ancestor not in pinned:
                pinned.add(ancestor)
                mounts.append(
                    BindMount(source=root / ancestor, target=root / ancestor, read_only=False)
                )
        mounts.append(BindMount(source=path, target=path, read_only=True))
    return mounts


def pin_evaluation(workspace: Workspace, session_id: str) -> Evaluation:
    """Hash the protected paths and keep their pristine copy in the state dir, named for the
    session: its broker mounts that copy into every job (framework/evaluation.py)."""
    store = store_of(workspace.state_dir)
    try:
        evaluation = capture(workspace.root, workspace.settings.research.protected_paths, store)
    except EvaluationError as exc:
        raise SandboxError(str(exc)) from None
    pin_session(store, session_id, evaluation)
    return evaluation


def _check_evaluation(session: _Session, session_id: str, root: Path) -> None:
    """At session end: any divergence of the protected paths from the pristine copy goes into the
    session's notes and, as ``evaluation_diverged``, into the ledger (the audit reports it)."""
    if session.evaluation is None:
        return
    try:
        current = scan(root, session.evaluation.protected)
    except OSError as exc:
        session.notes.append(f"evaluation not checked at session end: {exc}")
        return
    payload = divergence_payload(session.evaluation, current, "session_end")
    if payload is None:
        return
    first = payload["changes"][0]
    session.notes.append(
        f"evaluation diverged from its pristine copy: {payload['changes_total']} change(s), "
        f"first {first['path']!r} {first['change']}"
    )
    if session.ledger is not None:
        session.ledger.append("evaluation_diverged", session_id=session_id, payload=payload)


def _commit_before(root: Path) -> str | None:
    """HEAD at launch; refuses to launch when host git cannot run confined (no bubblewrap), as
    every later snapshot of the workspace would fail too."""
    try:
        return git_state(root).commit
    except HostGitError as exc:
        raise SandboxError(str(exc)) from None


def _check_git(session: _Session, session_id: str, root: Path, started: float) -> None:
    """At session end: what the session left in the repository that the user's own later git
    commands would follow (framework/gitplanted.py) goes to the terminal, the session's notes and,
    as ``git_indirection_planted``, the ledger (the audit reports it)."""
    try:
        found = planted(root, started)
    except OSError as exc:
        session.notes.append(f"repository not checked for planted git indirections: {exc}")
        return
    if not found:
        return
    listed = "; ".join(f"{e.path}: {e.why}" for e in found[:GIT_WARNINGS_SHOWN])
    more = f" and {len(found) - GIT_WARNINGS_SHOWN} more" if len(found) > GIT_WARNINGS_SHOWN else ""
    line = (
        f"the repository has {len(found)} thing(s) your own git commands there would follow to "
        f"another config or a program: {listed}{more}. Inspect .git before running git in "
        f"{shown(str(root))} (docs/security.md, host-side steps)"
    )
    print(f"warning: {line}", file=sys.stderr)
    session.notes.append(line)
    if session.ledger is not None:
        payload = {"entries": [e.model_dump() for e in found], "total": len(found)}
        session.ledger.append("git_indirection_planted", session_id=session_id, payload=payload)


GIT_WARNINGS_SHOWN = 5
"""Planted git indirections named in the terminal warning; the ledger event lists all."""


def _lstat_refusing_links(root: Path, name: str) -> os.stat_result | None:
    """The protected path ``root/name`` as it is (None when absent), reached through no link: a
    link at it or on the way refuses the launch."""
    parts = Path(name).parts
    info = None
    for depth in range(1, len(parts) + 1):
        current = Path(*parts[:depth])
        try:
            info = safefs.stat_beneath(root, current)
        except safefs.UnsafePath as exc:  # a component checked above was swapped meanwhile
            raise SandboxError(
                f"protected path {shown(str(root / name))} cannot be reached safely "
                f"({exc.strerror}); inspect it and launch again"
            ) from None
        if info is None or (depth < len(parts) and stat.S_ISREG(info.st_mode)):
            return None  # absent (a file where a directory on the way would be)
        if stat.S_ISLNK(info.st_mode):
            raise SandboxError(
                f"protected path {shown(str(root / current))} is a symlink; a session may have "
                "planted it. Inspect it, replace it with the real file or directory, and launch "
                "again"
            )
    return info


def _user_mount(mount: Mount) -> BindMount:
    source = mount.source.resolve()
    if not source.exists():  # host-path: a mount source the user named in settings or --mount
        raise SandboxError(
            f"mount source {mount.source} does not exist; fix --mount or sandbox.mounts"
        )
    home = Path.home().resolve()
    if source == home or source in home.parents or source in DOCKER_SOCKETS:
        raise SandboxError(
            f"refusing to mount {source}: it exposes the host home or the Docker socket; "
            "mount the specific directory the agent needs"
        )
    return BindMount(source=source, target=mount.destination, read_only=mount.read_only)


def _network(
    session: _Session,
    network: str,
    settings: Settings,
    model_endpoint: str | None,
    egress_hosts: Mapping[str, str] | None,
    env: dict[str, str],
) -> list[PortForward]:
    if network != "allowlist":
        return []
    bridge = Path(tempfile.mkdtemp(prefix="ar-bridge-"))
    os.chmod(bridge, 0o755)  # host-path: the launcher's own mkdtemp dir, read-only inside
    session.bridge_dir = bridge
    shutil.copyfile(FORWARDER, bridge / "forward.py")  # host-path: package file to that dir
    proxy = EgressProxy(
        allowlist=list(settings.sandbox.network_allowlist),
        ports=frozenset(settings.sandbox.network_ports),
        hosts=egress_hosts or {},
    )
    session.proxy = proxy
    forwards = [PortForward(port=PROXY_PORT, socket=proxy.serve_proxy(bridge / "proxy.sock"))]
    proxy_url = f"http://127.0.0.1:{PROXY_PORT}"
    no_proxy = "127.0.0.1,localhost"
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        env[name] = proxy_url
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    if model_endpoint:
        url = urlsplit(model_endpoint)
        assert url.hostname is not None and url.port is not None
        socket_path = proxy.serve_bridge(bridge / "model.sock", url.hostname, url.port)
        forwards.append(PortForward(port=url.port, socket=socket_path))
        session.notes.append(f"model endpoint {model_endpoint} bridged into the sandbox")
    return forwards


def _broker(
    session: _Session, root: Path, settings: Settings, session_id: str, env: dict[str, str]
) -> list[BindMount]:
    from framework.dispatch.broker import SOCKET_ENV, start_broker

    handle = start_broker(root, settings, session_id)
    session.broker = handle
    env[SOCKET_ENV] = str(BROKER_SOCKET)
    env["PATH"] = f"{CLIENT_BIN_DIR}:{env['PATH']}"
    client = Path(handle.client_path)
    return [
        # The socket alone, read-only, in a directory the agent cannot write: it can connect but
        # not rename, replace or shadow it, and the host's channel directory stays out of reach.
        BindMount(source=handle.socket_path, target=BROKER_SOCKET, read_only=True),
        BindMount(source=client, target=CLIENT_BIN_DIR / client.name, read_only=True),
    ]


def _render(settings: Settings, tool: str, root: Path, home: Path, owner: tuple[int, int]) -> None:
    """Refresh the methodology files, keeping any the user edited (init's manifest rules)."""
    from framework.init import InitError, sync_methodology

    try:
        report = sync_methodology(root, settings, tool)
    except InitError as exc:
        raise SandboxError(f"cannot render the methodology for {tool}: {exc}") from None
    from framework.textsafe import one_line

    for path in report.kept:  # a name in the workspace: the agent's to choose
        print(
            f"methodology: kept your edited {one_line(path)} (init --force replaces it)",
            file=sys.stderr,
        )
    if tool == "codex":
        # Codex reads custom prompts only from $CODEX_HOME/prompts, which is the agent home here.
        # Both trees are the agent's: read and write through no link (a planted prompt link
        # must not copy a host file into the agent's reach, nor a planted prompts/ link take
        # the agent's text to a host path).
        home.mkdir(parents=True, exist_ok=True)  # host-path: the agent home itself, the host's
        try:
            for relative in safefs.glob(root, ".codex/prompts/*.md"):
                data = safefs.read_bytes(root, relative, limit=MAX_PROMPT_BYTES)
                safefs.replace(home, relative, data, create_dirs=True)
                if os.getuid() == 0:
                    safefs.chown_entry(home, relative, *owner)
        except OSError as exc:
            raise SandboxError(
                f"cannot copy the Codex prompts into {home}/.codex/prompts: {exc}; remove the "
                "link or special file there (the launcher follows none) and launch again"
            ) from None


def _record_event(session: _Session, kind: str, record: SessionRecord) -> None:
    if session.ledger is not None:
        payload = record.model_dump(mode="json", exclude={"notes"})
        session.ledger.append(kind, session_id=record.id, payload=payload)


def _save_output(
    store: SessionStore, record: SessionRecord, out: bytes | None, err: bytes | None
) -> None:
    directory = store.path(record.id)
    directory.mkdir(parents=True, exist_ok=True)  # host-path: the session store
    (directory / "stdout.txt").write_bytes(out or b"")  # host-path: the session store
    (directory / "stderr.txt").write_bytes(err or b"")  # host-path: the session store


def query_version(runtime_name: str, spec: SandboxSpec, profile: AgentProfile) -> str | None:
    """``<agent> --version`` in a sandbox like the session's, without network."""
    probe = spec.model_copy(
        update={
            "argv": profile.version_argv(),
            "network": "none",
            "forwards": [],
            "interactive": False,
        }
    )
    try:
        result = get_runtime(runtime_name).run(probe, None, Stdio(capture=True))
    except SandboxError:
        return None
    text = (result.stdout or b"").decode(errors="replace").strip()
    return text.splitlines()[0][:200] if result.exit_code == 0 and text else None
