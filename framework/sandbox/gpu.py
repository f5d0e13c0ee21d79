"""GPU pass-through arguments for each runtime (NVIDIA).

Only argument construction lives here, so it can be unit-tested on machines without a GPU.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

CONTROL_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


def _selected_indices(gpus: str, present: list[int]) -> list[int]:
    if gpus == "none":
        return []
    if gpus == "all":
        return present
    if "," in gpus:
        wanted = [int(i) for i in gpus.split(",")]
    else:
        wanted = present[: int(gpus)]
        if len(wanted) < int(gpus):
            raise GpuError(f"asked for {gpus} GPUs but this host has {len(present)}")
    missing = [i for i in wanted if i not in present]
    if missing:
        raise GpuError(f"GPU ids {missing} do not exist on this host (found {present or 'none'})")
    return wanted


class GpuError(ValueError):
    """The GPU request cannot be met on this host."""


def nvidia_device_nodes(dev: Path = Path("/dev")) -> tuple[list[int], list[Path]]:
    """GPU indices present under ``dev`` and the control device nodes that exist."""
    indices = sorted(
        int(m.group(1))
        for p in dev.glob("nvidia*")  # host-path: /dev
        if (m := re.fullmatch(r"nvidia(\d+)", p.name)) is not None
    )
    controls = [dev / name for name in CONTROL_DEVICES if (dev / name).exists()]  # host-path: /dev
    if (dev / "nvidia-caps").is_dir():  # host-path: /dev
        controls.append(dev / "nvidia-caps")
    return indices, controls


def bwrap_gpu_args(gpus: str, dev: Path = Path("/dev")) -> list[str]:
    """``--dev-bind`` for the chosen /dev/nvidiaN nodes and the control nodes.

    The driver's user-space libraries and ``nvidia-smi`` come with the host ``/usr``, which the
    bwrap sandbox already mounts read-only.
    """
    if gpus == "none":
        return []
    present, controls = nvidia_device_nodes(dev)
    if not present:
        raise GpuError(f"no NVIDIA GPU device nodes under {dev} (is the driver loaded?)")
    args: list[str] = []
    for index in _selected_indices(gpus, present):
        node = str(dev / f"nvidia{index}")
        args += ["--dev-bind", node, f"/dev/nvidia{index}"]
    for node_path in controls:
        args += ["--dev-bind", str(node_path), f"/dev/{node_path.name}"]
    return args


def docker_device_requests(gpus: str) -> list[Any]:
    """The SDK equivalent of ``docker run --gpus``."""
    if gpus == "none":
        return []
    from docker.types import DeviceRequest

    if gpus == "all":
        return [DeviceRequest(driver="nvidia", count=-1, capabilities=[["gpu"]])]
    if "," in gpus:
        return [DeviceRequest(driver="nvidia", device_ids=gpus.split(","), capabilities=[["gpu"]])]
    return [DeviceRequest(driver="nvidia", count=int(gpus), capabilities=[["gpu"]])]


def podman_gpu_args(gpus: str) -> list[str]:
    """CDI device names (``nvidia-ctk cdi generate`` must have been run on the host)."""
    if gpus == "none":
        return []
    if gpus == "all":
        return ["--device", "nvidia.com/gpu=all"]
    ids = gpus.split(",") if "," in gpus else [str(i) for i in range(int(gpus))]
    args: list[str] = []
    for index in ids:
        args += ["--device", f"nvidia.com/gpu={index}"]
    return args


def apptainer_gpu_args(gpus: str) -> tuple[list[str], dict[str, str]]:
    """``--nv`` plus the visible-device variable Apptainer forwards into the container."""
    if gpus == "none":
        return [], {}
    if gpus == "all":
        return ["--nv"], {}
    ids = gpus if "," in gpus else ",".join(str(i) for i in range(int(gpus)))
    return ["--nv"], {"CUDA_VISIBLE_DEVICES": ids}
