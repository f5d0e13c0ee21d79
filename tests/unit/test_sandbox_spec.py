"""SandboxSpec validation and how each backend translates it (pure argument construction)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from framework.sandbox.apptainer import ApptainerRuntime
from framework.sandbox.bwrap import BwrapRuntime
from framework.sandbox.docker import container_config
from framework.sandbox.gpu import (
    GpuError,
    apptainer_gpu_args,
    bwrap_gpu_args,
    docker_device_requests,
    podman_gpu_args,
)
from framework.sandbox.podman import PodmanRuntime
from framework.sandbox.spec import (
    BRIDGE_DIR,
    BindMount,
    PortForward,
    Resources,
    SandboxSpec,
    allowlisted_env,
)

WS = Path("/srv/research/ws")


def spec(**overrides: object) -> SandboxSpec:
    values: dict[str, object] = {
        "argv": ["claude", "-p", "hi"],
        "image": "agentic-researcher:latest",
        "workdir": WS,
        "mounts": [
            BindMount(source=WS, target=WS, read_only=False),
            BindMount(source=WS / "eval", target=WS / "eval", read_only=True),
        ],
        "env": {"HOME": "/home/agent", "LANG": "C.UTF-8"},
    }
    values.update(overrides)
    return SandboxSpec.model_validate(values)


def test_spec_rejects_root_uid_bad_env_names_and_bad_gpu_requests() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        spec(uid=0)
    with pytest.raises(ValidationError, match="not an environment variable name"):
        spec(env={"BAD NAME": "x"})
    with pytest.raises(ValidationError, match="gpus must be"):
        spec(gpus="some")
    with pytest.raises(ValidationError, match="relative"):
        BindMount(source=Path("relative"), target=WS)


def test_network_none_cannot_forward_ports() -> None:
    with pytest.raises(ValidationError, match="network 'none' allows no way out"):
        spec(network="none", forwards=[PortForward(port=3128, socket=Path("/tmp/p.sock"))])


def test_two_mounts_on_one_target_are_rejected() -> None:
    with pytest.raises(ValidationError, match="share a target"):
        spec(mounts=[BindMount(source=WS, target=WS), BindMount(source=Path("/opt"), target=WS)])


def test_allowlisted_env_passes_only_listed_names_and_explicit_values_win() -> None:
    host = {"LANG": "C", "AWS_SECRET_ACCESS_KEY": "s", "TERM": "xterm"}
    env = allowlisted_env(host, ["LANG", "TZ"], {"LANG": "C.UTF-8", "X": "1"})
    assert env == {"LANG": "C.UTF-8", "X": "1"}


def _bwrap_argv(s: SandboxSpec, tmp_path: Path) -> list[str]:
    return BwrapRuntime().argv(s, None, tmp_path)


def test_bwrap_unshares_network_except_when_open(tmp_path: Path) -> None:
    assert "--unshare-net" in _bwrap_argv(spec(network="none"), tmp_path)
    assert "--unshare-net" in _bwrap_argv(spec(network="allowlist"), tmp_path)
    assert "--unshare-net" not in _bwrap_argv(spec(network="open"), tmp_path)


def test_bwrap_isolates_session_env_and_root(tmp_path: Path) -> None:
    argv = _bwrap_argv(spec(), tmp_path)
    for flag in (
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--clearenv",
        "--unshare-user",
    ):
        assert flag in argv
    assert argv[argv.index("--uid") + 1] == "1000"
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    # The root tmpfs is made read-only after every mount is in place.
    remount = max(i for i, a in enumerate(argv) if a == "--remount-ro" and argv[i + 1] == "/")
    assert remount > argv.index(str(WS / "eval"))
    assert str(Path.home()) not in argv[: argv.index("--")] or str(Path.home()) == "/"


def test_bwrap_mounts_protected_paths_read_only_after_the_writable_workspace(
    tmp_path: Path,
) -> None:
    argv = _bwrap_argv(spec(), tmp_path)
    rw = argv.index("--bind")
    assert argv[rw + 1 : rw + 3] == [str(WS), str(WS)]
    ro = [i for i, a in enumerate(argv) if a == "--ro-bind" and argv[i + 1] == str(WS / "eval")]
    assert ro and ro[0] > rw


def test_bwrap_wraps_the_command_with_the_forwarder_when_ports_are_forwarded(
    tmp_path: Path,
) -> None:
    s = spec(network="allowlist", forwards=[PortForward(port=3128, socket=Path("/x/proxy.sock"))])
    argv = BwrapRuntime().argv(s, tmp_path, tmp_path)
    tail = argv[argv.index("--") + 1 :]
    assert tail == [
        "/usr/bin/python3",
        str(BRIDGE_DIR / "forward.py"),
        f"3128={BRIDGE_DIR / 'proxy.sock'}",
        "--",
        "claude",
        "-p",
        "hi",
    ]


def test_docker_config_drops_capabilities_and_mounts_no_daemon_socket() -> None:
    config = container_config(spec(network="none", resources=Resources(pids=128)), None)
    host = config["host_config"]
    assert host["CapDrop"] == ["ALL"]
    assert host["CapAdd"] == ["SETUID", "SETGID", "SETPCAP"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["NetworkMode"] == "none"
    assert host["PidsLimit"] == 128
    assert host["Init"] is True
    assert config["environment"]["AR_UID"] == "1000"
    read_only = {m["Target"]: m["ReadOnly"] for m in host["Mounts"]}
    assert read_only == {str(WS): False, str(WS / "eval"): True}
    assert not any("docker.sock" in m["Source"] for m in host["Mounts"])


def test_docker_open_network_is_the_host_network() -> None:
    assert container_config(spec(network="open"), None)["host_config"]["NetworkMode"] == "host"


def test_podman_and_apptainer_commands_carry_the_same_isolation() -> None:
    podman = PodmanRuntime().argv(spec(resources=Resources(pids=100, memory_bytes=2**30)), None)
    assert {"--cap-drop=all", "--security-opt=no-new-privileges", "--network=none"} <= set(podman)
    assert "--pids-limit=100" in podman and f"--memory={2**30}" in podman
    assert f"--mount=type=bind,src={WS / 'eval'},dst={WS / 'eval'},ro" in podman
    assert "--env=LANG" in podman, "values travel in the environment, not on the command line"
    apptainer = ApptainerRuntime().argv(spec(image="/images/ar.sif"), None)
    assert {"--containall", "--cleanenv", "--no-home", "--net", "--network=none"} <= set(apptainer)
    assert apptainer[-4:] == ["/images/ar.sif", "claude", "-p", "hi"]
    assert not any("C.UTF-8" in a for a in apptainer), "values stay off the command line"
    env = ApptainerRuntime().environment(spec(gpus="0,1"))
    assert env["APPTAINERENV_LANG"] == "C.UTF-8"
    assert env["APPTAINERENV_CUDA_VISIBLE_DEVICES"] == "0,1"


def _fake_dev(tmp_path: Path, gpus: int) -> Path:
    dev = tmp_path / "dev"
    dev.mkdir()
    for i in range(gpus):
        (dev / f"nvidia{i}").touch()
    for name in ("nvidiactl", "nvidia-uvm"):
        (dev / name).touch()
    return dev


def test_bwrap_gpu_args_bind_only_the_chosen_devices_and_control_nodes(tmp_path: Path) -> None:
    dev = _fake_dev(tmp_path, 4)
    args = bwrap_gpu_args("1,3", dev)
    bound = [args[i + 2] for i in range(0, len(args), 3)]
    assert bound == ["/dev/nvidia1", "/dev/nvidia3", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    two = bwrap_gpu_args("2", dev)
    assert [two[i + 2] for i in range(0, len(two), 3)][:2] == ["/dev/nvidia0", "/dev/nvidia1"]
    assert bwrap_gpu_args("none", dev) == []


def test_gpu_requests_that_cannot_be_met_say_why(tmp_path: Path) -> None:
    dev = _fake_dev(tmp_path, 2)
    with pytest.raises(GpuError, match="asked for 3 GPUs but this host has 2"):
        bwrap_gpu_args("3", dev)
    with pytest.raises(GpuError, match=r"GPU ids \[5\] do not exist"):
        bwrap_gpu_args("0,5", dev)
    (tmp_path / "no-gpu").mkdir()
    with pytest.raises(GpuError, match="no NVIDIA GPU device nodes"):
        bwrap_gpu_args("all", _fake_dev(tmp_path / "no-gpu", 0))


def test_gpu_flags_for_docker_podman_and_apptainer() -> None:
    (everything,) = docker_device_requests("all")
    assert everything["Count"] == -1 and everything["Capabilities"] == [["gpu"]]
    (chosen,) = docker_device_requests("0,2")
    assert chosen["DeviceIDs"] == ["0", "2"]
    assert docker_device_requests("none") == []
    assert podman_gpu_args("2") == ["--device", "nvidia.com/gpu=0", "--device", "nvidia.com/gpu=1"]
    assert podman_gpu_args("all") == ["--device", "nvidia.com/gpu=all"]
    assert apptainer_gpu_args("0,1") == (["--nv"], {"CUDA_VISIBLE_DEVICES": "0,1"})
    assert apptainer_gpu_args("none") == ([], {})
