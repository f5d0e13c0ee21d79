"""Host-side egress proxy and model-endpoint bridge, served on Unix sockets.

The sandbox (network policy ``allowlist``) has no route out; the in-sandbox forwarder turns its
loopback ports into connections to these sockets. The proxy speaks HTTP ``CONNECT`` (HTTPS and
any TLS) and plain absolute-URI HTTP, and lets through only hosts on the allowlist, on the allowed
ports only (443 unless the settings say otherwise: an allowlisted name is no licence to reach its
SSH, database or mail ports). It resolves
names itself and refuses loopback, private and link-local destinations, so an allowlisted name
whose DNS points inside the host's network (rebinding) leads nowhere.

``hosts`` is a name -> IP table consulted before DNS, and the only way to reach a loopback
address: it exists for tests and is set only from Python by whoever starts the proxy, never from
configuration or from anything the sandbox sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024


def host_allowed(host: str, allowlist: list[str]) -> bool:
    """Exact names match themselves; ``*.example.org`` matches subdomains, not the apex."""
    host = host.lower().rstrip(".")
    for pattern in allowlist:
        pattern = pattern.lower()
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
    )


@dataclass
class Decision:
    host: str
    port: int
    allowed: bool
    reason: str


@dataclass
class _Server:
    path: Path
    server: asyncio.AbstractServer | None = None


@dataclass
class EgressProxy:
    """Allowlisting HTTP proxy plus optional TCP bridges, run on a background event loop."""

    allowlist: list[str]
    ports: frozenset[int] = frozenset({443})
    hosts: Mapping[str, str] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _servers: list[_Server] = field(default_factory=list)

    def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="egress-proxy", daemon=True
        )
        self._thread.start()

    def _run(self, coro):
        assert self._loop is not None, "call start() first"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def serve_proxy(self, path: Path) -> Path:
        """Listen for proxy clients on the Unix socket ``path``."""
        return self._listen(path, self._handle_proxy_client)

    def serve_bridge(self, path: Path, host: str, port: int) -> Path:
        """Forward every connection on ``path`` to ``host:port`` (e.g. a local model server)."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                writer.close()
                return
            await _relay(reader, writer, up_reader, up_writer)

        return self._listen(path, handle)

    def _listen(self, path: Path, handler) -> Path:
        self.start()

        async def open_server() -> asyncio.AbstractServer:
            return await asyncio.start_unix_server(handler, path=str(path))

        server = self._run(open_server())
        # The agent may run as another uid (Docker); the socket's directory is private to the session.
        os.chmod(path, 0o666)  # host-path: a socket the proxy made in the launcher's bridge dir
        self._servers.append(_Server(path, server))
        return path

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close_all() -> None:
            for entry in self._servers:
                if entry.server is not None:
                    entry.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            self._run(close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._loop.close()
        self._loop = None
        for entry in self._servers:
            with contextlib.suppress(FileNotFoundError):
                entry.path.unlink()  # host-path: the proxy's own socket in the bridge dir
        self._servers.clear()

    async def _resolve(self, host: str, port: int) -> str:
        if host in self.hosts:
            return self.hosts[host]
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        for *_, sockaddr in infos:
            address = str(sockaddr[0])
            if _public(address):
                return address
        raise PermissionError(f"{host} resolves only to non-public addresses")

    async def _connect_allowed(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | str:
        if not host_allowed(host, self.allowlist):
            self.decisions.append(Decision(host, port, False, "not on the allowlist"))
            return "403 Forbidden"
        if port not in self.ports:
            reason = f"port {port} is not in sandbox.network_ports"
            self.decisions.append(Decision(host, port, False, reason))
            return "403 Forbidden"
        try:
            address = await self._resolve(host, port)
            streams = await asyncio.open_connection(address, port)
        except (OSError, PermissionError) as exc:
            self.decisions.append(Decision(host, port, False, str(exc)))
            return "502 Bad Gateway"
        self.decisions.append(Decision(host, port, True, "allowlisted"))
        return streams

    async def _handle_proxy_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        if len(head) > MAX_HEADER_BYTES:
            await _refuse(writer, "431 Request Header Fields Too Large")
            return
        request_line, _, rest = head.partition(b"\r\n")
        try:
            method, target, version = request_line.decode("latin-1").split(" ")
        except ValueError:
            await _refuse(writer, "400 Bad Request")
            return
        if method == "CONNECT":
            host, _, port_text = target.rpartition(":")
            if not host or not port_text.isdigit():
                await _refuse(writer, "400 Bad Request")
                return
            result = await self._connect_allowed(host.strip("[]"), int(port_text))
            if isinstance(result, str):
                await _refuse(writer, result)
                return
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            await _relay(reader, writer, *result)
            return
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            await _refuse(writer, "400 Bad Request")
            return
        result = await self._connect_allowed(url.hostname, url.port or 80)
        if isinstance(result, str):
            await _refuse(writer, result)
            return
        up_reader, up_writer = result
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        up_writer.write(f"{method} {path} {version}\r\n".encode("latin-1") + rest)
        await _relay(reader, writer, up_reader, up_writer)


async def _refuse(writer: asyncio.StreamWriter, status: str) -> None:
    body = f"egress proxy: {status}\n".encode()
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(OSError):
        await writer.drain()
    writer.close()


async def _relay(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if dst.can_write_eof():
                    dst.write_eof()

    await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
    for w in (writer, up_writer):
        w.close()
