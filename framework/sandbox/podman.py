"""Podman backend: the same isolation as Docker, expressed as a ``podman run`` command line.

Rootless Podman maps the invoking user into the container with ``--userns=keep-id``, so no
entrypoint drop is needed; all capabilities are dropped outright.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from framework.sandbox.gpu import podman_gpu_args
from framework.sandbox.runtime import Availability, RunResult, SandboxError, Stdio, forwarded_argv
from framework.sandbox.spec import BRIDGE_DIR, SandboxSpec


class PodmanRuntime:
    name = "podman"

    def __init__(self, binary: str = "podman") -> None:
        self.binary = binary

    def availability(self) -> Availability:
        path = shutil.which(self.binary)
        if path is None:
            return Availability(False, "podman is not installed")
        probe = subprocess.run(
            [path, "info", "--format", "{{.Host.CgroupsVersion}} {{.Host.OCIRuntime.Name}}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if probe.returncode != 0:
            return Availability(False, f"`podman info` failed: {probe.stderr.strip()[:300]}")
        cgroups, oci = [*probe.stdout.split(), "?", "?"][:2]
        detail = f"{path}: cgroups {cgroups}, OCI runtime {oci}"
        if cgroups == "v1":
            detail += " (containers often fail to start on cgroup v1 hosts; prefer bwrap or docker)"
        return Availability(True, detail)

    def argv(self, spec: SandboxSpec, bridge_dir: Path | None) -> list[str]:
        if spec.image is None:
            raise SandboxError("the podman runtime needs an image (sandbox.image)")
        args = [self.binary, "run", "--rm", "--init", "--userns=keep-id"]
        args += [f"--user={spec.uid}:{spec.gid}", "--cap-drop=all"]
        args += ["--security-opt=no-new-privileges", f"--hostname={spec.hostname}"]
        args += ["--network=host" if spec.network == "open" else "--network=none"]
        args += ["--entrypoint=[]", f"--workdir={spec.workdir}"]
        if spec.resources.pids is not None:
            args.append(f"--pids-limit={spec.resources.pids}")
        if spec.resources.memory_bytes is not None:
            args.append(f"--memory={spec.resources.memory_bytes}")
        if spec.resources.cpus is not None:
            args.append(f"--cpus={spec.resources.cpus}")
        args += ["-it"] if spec.interactive else []
        args += ["-d"] if spec.detach else []
        for mount in spec.mounts:
            mode = "ro" if mount.read_only else "rw"
            args.append(f"--mount=type=bind,src={mount.source},dst={mount.target},{mode}")
        if bridge_dir is not None:
            args.append(f"--mount=type=bind,src={bridge_dir},dst={BRIDGE_DIR},ro")
        for key, value in sorted({"agentic-researcher": "1", **spec.labels}.items()):
            args.append(f"--label={key}={value}")
        for name in sorted(spec.env):
            args.append(f"--env={name}")
        args += podman_gpu_args(spec.gpus)
        args += [spec.image, *forwarded_argv(spec, BRIDGE_DIR)]
        return args

    def run(self, spec: SandboxSpec, bridge_dir: Path | None, stdio: Stdio) -> RunResult:
        return run_cli(self.argv(spec, bridge_dir), spec.env, stdio)


def run_cli(argv: list[str], values: dict[str, str], stdio: Stdio) -> RunResult:
    """Run a runtime's CLI with only ``values`` in its environment (the command line names
    variables, it never carries their values: /proc/PID/cmdline is readable by every user)."""
    if shutil.which(argv[0]) is None:
        raise SandboxError(f"{argv[0]} is not installed on this host")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", **values}
    out = subprocess.PIPE if stdio.capture else stdio.stdout
    err = subprocess.PIPE if stdio.capture else stdio.stderr
    proc = subprocess.run(argv, stdin=stdio.stdin, stdout=out, stderr=err, env=env, check=False)
    return RunResult(proc.returncode, proc.stdout, proc.stderr)


RUNTIME = PodmanRuntime()
