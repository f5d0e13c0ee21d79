"""bubblewrap backend: rootless, no daemon; the host's /usr read-only, nothing of the host home.

Namespaces: user, pid, ipc, uts, cgroup, and network unless the policy is ``open``. The agent
runs as a non-root uid with no capabilities, in a new session (so TIOCSTI cannot reach the
launcher's terminal) and with ``no_new_privs`` (bwrap always sets it). All mounts are nosuid.
Limits and cleanup come from a per-session cgroup (see cgroups.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from framework.sandbox.cgroups import CgroupUnavailable, SessionCgroup, cgroup_support
from framework.sandbox.gpu import bwrap_gpu_args
from framework.sandbox.runtime import (
    Availability,
    RunResult,
    SandboxError,
    Stdio,
    forwarded_argv,
)
from framework.sandbox.spec import BRIDGE_DIR, SandboxSpec

ROOT_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")

# /etc entries programs need to run; not /etc as a whole (shadow, ssh host keys, package manager
# credentials, pip/npm configuration with tokens stay out).
ETC_ENTRIES = (
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "gitconfig",
    "host.conf",
    "hosts",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "profile",
    "python3",
    "python3.11",
    "python3.12",
    "ssl",
    "terminfo",
    "timezone",
)


class BwrapRuntime:
    name = "bwrap"

    def __init__(self, binary: str = "bwrap") -> None:
        self.binary = binary

    def availability(self) -> Availability:
        path = shutil.which(self.binary)
        if path is None:
            return Availability(False, "bwrap is not installed (apt-get install bubblewrap)")
        probe = subprocess.run(
            [
                path,
                "--ro-bind",
                "/",
                "/",
                "--unshare-user",
                "--unshare-pid",
                "--unshare-net",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "true",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0:
            reason = probe.stderr.strip() or f"exit code {probe.returncode}"
            return Availability(
                False,
                f"bwrap cannot create namespaces: {reason} (unprivileged user namespaces may be "
                "disabled: sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces)",
            )
        cgroups_ok, cgroups_detail = cgroup_support()
        limits = "limits via cgroups" if cgroups_ok else f"weaker limits: {cgroups_detail}"
        return Availability(True, f"{path} works ({limits})")

    def argv(self, spec: SandboxSpec, bridge_dir: Path | None, etc_dir: Path) -> list[str]:
        """The complete bwrap command line for ``spec`` (without the cgroup prefix)."""
        args = [
            self.binary,
            "--die-with-parent",
            "--new-session",
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--uid",
            str(spec.uid),
            "--gid",
            str(spec.gid),
            "--hostname",
            spec.hostname,
            "--cap-drop",
            "ALL",
        ]
        if spec.network != "open":
            args.append("--unshare-net")
        for name in ROOT_DIRS:
            host = Path("/") / name
            if host.is_symlink():  # host-path: the host's /bin, /lib... (system dirs)
                # host-path: a system dir's own link
                args += ["--symlink", os.readlink(host), f"/{name}"]
            elif host.is_dir():  # host-path: a system dir
                args += ["--ro-bind", str(host), f"/{name}"]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run"]
        args += ["--tmpfs", "/etc"]
        for entry in ETC_ENTRIES:
            args += ["--ro-bind-try", f"/etc/{entry}", f"/etc/{entry}"]
        if spec.network == "open":
            args += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
        args += ["--ro-bind", str(etc_dir / "passwd"), "/etc/passwd"]
        args += ["--ro-bind", str(etc_dir / "group"), "/etc/group"]
        args += ["--tmpfs", "/home", "--dir", str(spec.home)]
        args += ["--remount-ro", "/etc"]
        for mount in spec.mounts:
            flag = "--ro-bind" if mount.read_only else "--bind"
            args += [flag, str(mount.source), str(mount.target)]
        if bridge_dir is not None:
            args += ["--ro-bind", str(bridge_dir), str(BRIDGE_DIR)]
        args += bwrap_gpu_args(spec.gpus)
        # bwrap's root is a scratch tmpfs; make it read-only so only declared mounts take writes.
        args += ["--remount-ro", "/"]
        args += ["--chdir", str(spec.workdir), "--clearenv"]
        for name, value in sorted(spec.env.items()):
            args += ["--setenv", name, value]
        args.append("--")
        args += forwarded_argv(spec, BRIDGE_DIR, python="/usr/bin/python3")
        return args

    def run(self, spec: SandboxSpec, bridge_dir: Path | None, stdio: Stdio) -> RunResult:
        if shutil.which(self.binary) is None:
            raise SandboxError("bwrap is not installed: apt-get install bubblewrap")
        with tempfile.TemporaryDirectory(prefix="ar-etc-") as tmp:
            etc = Path(tmp)
            (etc / "passwd").write_text(  # host-path: the launcher's own TemporaryDirectory
                f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                f"agent:x:{spec.uid}:{spec.gid}:agent:{spec.home}:/bin/bash\n"
            )
            # host-path: the launcher's own TemporaryDirectory
            (etc / "group").write_text(f"root:x:0:\nagent:x:{spec.gid}:\n")
            argv = self.argv(spec, bridge_dir, etc)
            return self._execute(spec, argv, stdio)

    def _execute(self, spec: SandboxSpec, argv: list[str], stdio: Stdio) -> RunResult:
        cgroup: SessionCgroup | None = None
        preexec = None
        try:
            cgroup = SessionCgroup.create(spec.resources)
            argv = cgroup.enter_argv() + argv
        except CgroupUnavailable:
            preexec = _nproc_limiter(spec.resources.pids)
        out = subprocess.PIPE if stdio.capture else stdio.stdout
        err = subprocess.PIPE if stdio.capture else stdio.stderr
        try:
            proc = subprocess.Popen(
                argv,
                stdin=stdio.stdin
                if stdio.stdin is not None or spec.interactive
                else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=preexec,
                # bwrap stays in the sandbox as its PID 1, and /proc/1/environ is readable there:
                # it must not inherit the launcher's environment.
                env={"PATH": "/usr/bin:/bin"},
            )
            try:
                stdout, stderr = proc.communicate()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            return RunResult(exit_code=proc.returncode, stdout=stdout, stderr=stderr)
        finally:
            if cgroup is not None and not spec.detach:
                cgroup.kill_all()
                cgroup.remove()


def _nproc_limiter(pids: int | None):
    if pids is None or os.getuid() == 0:
        return None
    import resource

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NPROC, (pids, pids))

    return apply


RUNTIME = BwrapRuntime()
