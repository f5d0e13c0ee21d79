"""Build the sandbox image from ``container/`` through the Docker SDK, streaming progress."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from framework.sandbox.runtime import SandboxError

CONTAINER_DIR = Path(__file__).resolve().parents[2] / "container"


def build_image(
    tag: str,
    base_image: str | None = None,
    build_args: dict[str, str] | None = None,
    on_line: Callable[[str], None] = print,
) -> str:
    """Build ``container/Dockerfile`` as ``tag``; returns the image id."""
    if not (CONTAINER_DIR / "Dockerfile").is_file():
        raise SandboxError(
            f"no Dockerfile in {CONTAINER_DIR}; is the package installed from a checkout?"
        )
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:
        raise SandboxError(
            f"cannot reach the Docker engine ({exc}); start dockerd or set DOCKER_HOST"
        ) from None
    args = dict(build_args or {})
    if base_image:
        args["BASE_IMAGE"] = base_image
    stream: Iterator[dict[str, Any]] = client.api.build(
        path=str(CONTAINER_DIR), tag=tag, buildargs=args, network_mode="host", decode=True, rm=True
    )
    image_id = ""
    for chunk in stream:
        if "error" in chunk:
            raise SandboxError(f"image build failed: {chunk['error'].strip()}")
        if text := chunk.get("stream", "").rstrip():
            on_line(text)
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
    return image_id
