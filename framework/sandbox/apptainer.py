"""Apptainer backend (HPC): ``apptainer exec`` with a contained, clean environment.

Apptainer runs as the invoking user with ``no_new_privs`` and no extra capabilities by design.
It has no PID limit of its own; on clusters the batch scheduler's cgroup provides it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from framework.sandbox.gpu import apptainer_gpu_args
from framework.sandbox.podman import run_cli
from framework.sandbox.runtime import Availability, RunResult, SandboxError, Stdio, forwarded_argv
from framework.sandbox.spec import BRIDGE_DIR, SandboxSpec


class ApptainerRuntime:
    name = "apptainer"

    def __init__(self, binary: str = "apptainer") -> None:
        self.binary = binary

    def availability(self) -> Availability:
        path = shutil.which(self.binary) or shutil.which("singularity")
        if path is None:
            return Availability(
                False,
                "apptainer is not installed (not packaged in Debian 12; on HPC systems "
                "`module load apptainer`)",
            )
        probe = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
        return Availability(probe.returncode == 0, probe.stdout.strip() or probe.stderr.strip())

    def argv(self, spec: SandboxSpec, bridge_dir: Path | None) -> list[str]:
        if spec.image is None:
            raise SandboxError("the apptainer runtime needs a .sif image (sandbox.image)")
        gpu_args, _ = apptainer_gpu_args(spec.gpus)
        args = [self.binary, "exec", "--containall", "--cleanenv", "--no-home", "--no-privs"]
        args += ["--ipc", "--pid", f"--hostname={spec.hostname}"]
        if spec.network != "open":
            args += ["--net", "--network=none"]
        home = next((m for m in spec.mounts if m.target == spec.home), None)
        if home is not None:
            args.append(f"--home={home.source}:{spec.home}")
        for mount in spec.mounts:
            if mount is home:
                continue
            mode = "ro" if mount.read_only else "rw"
            args.append(f"--bind={mount.source}:{mount.target}:{mode}")
        if bridge_dir is not None:
            args.append(f"--bind={bridge_dir}:{BRIDGE_DIR}:ro")
        args += gpu_args
        args += [f"--pwd={spec.workdir}", spec.image, *forwarded_argv(spec, BRIDGE_DIR)]
        return args

    def environment(self, spec: SandboxSpec) -> dict[str, str]:
        """Values travel as APPTAINERENV_* variables, never on the (world-readable) command line."""
        _, gpu_env = apptainer_gpu_args(spec.gpus)
        return {f"APPTAINERENV_{k}": v for k, v in {**spec.env, **gpu_env}.items()}

    def run(self, spec: SandboxSpec, bridge_dir: Path | None, stdio: Stdio) -> RunResult:
        return run_cli(self.argv(spec, bridge_dir), self.environment(spec), stdio)


RUNTIME = ApptainerRuntime()
