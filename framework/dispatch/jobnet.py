"""The network of a multi-task job: its ranks reach each other and nothing else.

Each rank runs in a network namespace of its own, owned by a new user namespace (so this works for
an unprivileged runner too), that holds only ``lo`` and a TUN device ``ar0`` carrying the rank's
address on a private link (:func:`rank_address`: 169.254.0.1 for rank 0, and so on). No route
leads anywhere else: the host's loopback services, the node's addresses and every other host are
out of reach, and ``127.0.0.1`` inside is the rank's own empty loopback. The TUN's packets come to
this process, which stays in the node's network and relays them:

- rank 0's relay is the hub: it listens in the node's network at the job's master address and
  port, takes one connection from each other rank's relay (each proves it holds the job's key),
  and forwards each IPv4 packet to the rank it is addressed to; anything else (an address that is
  no rank, IPv6, runts) is dropped;
- every other rank's relay connects to the hub before its job starts.

Inside the link the ranks talk plain TCP and UDP on any port, which is what collectives need (gloo
and NCCL open a socket between every pair of ranks on ports they pick). The job cannot change any
of it: bubblewrap runs it in a user namespace nested in ours, without capabilities, so the
namespace's interfaces and routes are not its to change.

Why a relay rather than a veth pair with firewall rules: a veth needs root on the node and a
firewall of the host to keep right, while Slurm runs a job as its user; the relay needs neither,
works the same on one node and on many, and what it forwards is decided by one comparison of four
bytes.

Run as ``python -I -S jobnet.py --rank R --world N --hub HOST:PORT -- SANDBOX ARGV...`` with the
job's key in ``AR_JOBNET_KEY`` (removed from the environment before the sandbox starts; the
sandbox's own PID namespace keeps this process's ``/proc`` out of the job's sight). Standard
library only: it runs in whatever Python the node has, like the runner.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import hashlib
import hmac
import ipaddress
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable

IFNAME = "ar0"
LINK = ipaddress.IPv4Network("169.254.0.0/16")
"""The job's link: link-local, so no route or rule of the host is about it."""
MTU = 32000  # fewer, larger packets: the relay's cost is per packet
KEY_VARIABLE = "AR_JOBNET_KEY"
CONNECT_TIMEOUT_S = 300.0
"""How long a rank waits for rank 0's hub (Slurm starts a job's tasks at about the same time)."""
HELLO_TIMEOUT_S = 30.0
DRAIN_S = 30.0
"""How long the hub outlives rank 0's job while other ranks are still connected (their last
packets: closing connections, a final barrier)."""
MAX_RANKS = LINK.num_addresses - 2
MAX_PACKET = 65535

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_TUNSETIFF = 0x400454CA
_IFF_TUN, _IFF_NO_PI = 0x0001, 0x1000
_SIOCGIFFLAGS, _SIOCSIFFLAGS = 0x8913, 0x8914
_SIOCSIFADDR, _SIOCSIFNETMASK, _SIOCSIFMTU = 0x8916, 0x891C, 0x8922
_IFF_UP, _IFF_RUNNING = 0x1, 0x40
_IFREQ_SIZE = 40  # struct ifreq on Linux: the kernel copies this much, whatever the request
_FRAME = struct.Struct("!I")
_HELLO = struct.Struct("!32sI")


class JobNetError(RuntimeError):
    """The job's private network cannot be set up on this node; the message says why."""


def rank_address(rank: int) -> str:
    """The address of ``rank`` on the job's link (rank 0: 169.254.0.1)."""
    if not 0 <= rank < MAX_RANKS:
        raise JobNetError(f"rank {rank} is outside the job link's {MAX_RANKS} addresses")
    return str(LINK.network_address + rank + 1)


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def destination(packet: bytes) -> bytes | None:
    """The IPv4 destination of ``packet``; None for anything else, which is dropped."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    return packet[16:20]


# --- the namespace ----------------------------------------------------------------------------


def _libc_call(name: str, *args: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{name}: {os.strerror(code)}")


def _ifreq(name: str, payload: bytes = b"") -> bytes:
    return struct.pack("16s", name.encode()) + payload.ljust(_IFREQ_SIZE - 16, b"\0")


def enter_private_network(rank: int) -> int:
    """Move this process into a new user and network namespace with ``lo`` up and ``ar0`` holding
    the rank's address; return the TUN's descriptor. Must run while the process has one thread."""
    uid, gid = os.getuid(), os.getgid()
    try:
        _libc_call("unshare", _CLONE_NEWUSER | _CLONE_NEWNET)
    except OSError as exc:
        raise JobNetError(
            f"cannot create the job's network namespace ({exc.strerror}): unprivileged user "
            "namespaces may be disabled on this node (sysctl user.max_user_namespaces)"
        ) from None
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as fh:  # host-path: this process's own /proc/self maps
            fh.write(text)
    try:
        tun = os.open(
            "/dev/net/tun", os.O_RDWR | os.O_CLOEXEC
        )  # host-path: the kernel's TUN device
    except OSError as exc:
        raise JobNetError(
            f"cannot open /dev/net/tun ({exc.strerror}): multi-task jobs need the TUN device, "
            "readable and writable by the user the runner runs as"
        ) from None
    fcntl.ioctl(tun, _TUNSETIFF, _ifreq(IFNAME, struct.pack("H", _IFF_TUN | _IFF_NO_PI)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as control:
        _set_up(control, "lo")
        _set_address(control, _SIOCSIFADDR, rank_address(rank))
        _set_address(control, _SIOCSIFNETMASK, str(LINK.netmask))
        fcntl.ioctl(control, _SIOCSIFMTU, _ifreq(IFNAME, struct.pack("i", MTU)))
        _set_up(control, IFNAME)
    return tun


def _set_address(control: socket.socket, request: int, address: str) -> None:
    sockaddr = struct.pack("HH4s8x", socket.AF_INET, 0, socket.inet_aton(address))
    fcntl.ioctl(control, request, _ifreq(IFNAME, sockaddr))


def _set_up(control: socket.socket, name: str) -> None:
    (flags,) = struct.unpack_from("H", fcntl.ioctl(control, _SIOCGIFFLAGS, _ifreq(name)), 16)
    fcntl.ioctl(
        control, _SIOCSIFFLAGS, _ifreq(name, struct.pack("H", flags | _IFF_UP | _IFF_RUNNING))
    )


# --- the relay --------------------------------------------------------------------------------


def _read_exact(sock: socket.socket, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _frames(sock: socket.socket) -> Callable[[], bytes | None]:
    def next_frame() -> bytes | None:
        header = _read_exact(sock, _FRAME.size)
        if header is None:
            return None
        (size,) = _FRAME.unpack(header)
        if size > MAX_PACKET:  # no IP packet is larger: such a peer is no relay of ours
            return None
        return _read_exact(sock, size)

    return next_frame


class _Peer:
    """A connection to another relay; sends are whole frames, one thread at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def send(self, packet: bytes) -> None:
        # A rank that has gone has its packets dropped, as a network would.
        with self.lock, contextlib.suppress(OSError):
            self.sock.sendall(_FRAME.pack(len(packet)) + packet)


class Hub:
    """Rank 0's relay: forwards each IPv4 packet to the rank it is addressed to, nothing else."""

    def __init__(self, listener: socket.socket, tun: int, world_size: int, key: str) -> None:
        self.listener = listener
        self.tun = tun
        self.world_size = world_size
        self.digest = key_digest(key)
        self.own = socket.inet_aton(rank_address(0))
        self.peers: dict[bytes, _Peer] = {}
        self.connected = 0
        self.lock = threading.Lock()

    def route(self, packet: bytes) -> None:
        target = destination(packet)
        if target == self.own:
            _write_tun(self.tun, packet)
            return
        peer = self.peers.get(target) if target is not None else None
        if peer is not None:
            peer.send(packet)

    def serve(self) -> None:
        _daemon(self._accept)
        _daemon(self._pump_tun)

    def _accept(self) -> None:
        while len(self.peers) < self.world_size - 1:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_peer, args=(sock,), daemon=True).start()
        self.listener.close()  # every rank has joined: nobody else may

    def _serve_peer(self, sock: socket.socket) -> None:
        sock.settimeout(HELLO_TIMEOUT_S)
        try:
            hello = _read_exact(sock, _HELLO.size)
        except OSError:
            hello = None
        if hello is None:
            sock.close()
            return
        digest, rank = _HELLO.unpack(hello)
        address = socket.inet_aton(rank_address(rank)) if 0 < rank < self.world_size else None
        with self.lock:
            accepted = (
                hmac.compare_digest(digest, self.digest)
                and address is not None
                and address not in self.peers
            )
            if accepted:
                assert address is not None
                self.peers[address] = _Peer(sock)
                self.connected += 1
        if not accepted:
            sock.close()
            return
        sock.settimeout(None)
        next_frame = _frames(sock)
        try:
            while (packet := next_frame()) is not None:
                self.route(packet)
        except OSError:
            pass
        finally:
            with self.lock:
                self.connected -= 1

    def _pump_tun(self) -> None:
        while True:
            try:
                self.route(os.read(self.tun, MAX_PACKET))
            except OSError:
                return

    def drain(self, limit_s: float) -> None:
        """Keep relaying while other ranks are still connected, up to ``limit_s``."""
        deadline = time.monotonic() + limit_s
        while self.connected and time.monotonic() < deadline:
            time.sleep(0.1)


def _write_tun(tun: int, packet: bytes) -> None:
    with contextlib.suppress(OSError):  # a full queue drops the packet, as a network would
        os.write(tun, packet)


def _daemon(target: Callable[[], None]) -> None:
    threading.Thread(target=target, daemon=True).start()


def connect_to_hub(host: str, port: int, rank: int, key: str, timeout_s: float) -> socket.socket:
    """A rank's connection to rank 0's hub, retried while rank 0 starts."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=10)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise JobNetError(
                    f"rank {rank} cannot reach rank 0's relay at {host}:{port} ({exc}) after "
                    f"{timeout_s:.0f} s: did rank 0 start, and can the nodes reach each other?"
                ) from None
            time.sleep(0.2)
    sock.settimeout(None)
    sock.sendall(_HELLO.pack(key_digest(key), rank))
    return sock


def relay_to_hub(sock: socket.socket, tun: int, rank: int) -> None:
    """A rank's relay: its TUN's packets to the hub, the hub's packets for this rank to its TUN."""
    hub = _Peer(sock)
    own = socket.inet_aton(rank_address(rank))

    def outbound() -> None:
        while True:
            try:
                packet = os.read(tun, MAX_PACKET)
            except OSError:
                return
            if destination(packet) is not None:
                hub.send(packet)

    def inbound() -> None:
        next_frame = _frames(sock)
        try:
            while (packet := next_frame()) is not None:
                if destination(packet) == own:
                    _write_tun(tun, packet)
        except OSError:
            pass

    _daemon(outbound)
    _daemon(inbound)


# --- the command ------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="jobnet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--hub", required=True, help="HOST:PORT of rank 0's relay")
    parser.add_argument(
        "--pass-fd",
        type=int,
        action="append",
        default=[],
        help="a descriptor the command needs (bwrap's checked mounts); no other one reaches it",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command to run after --")
    return args


def run(argv: list[str]) -> int:
    args = parse_args(argv)
    key = os.environ.pop(KEY_VARIABLE, "")
    if not key:
        raise JobNetError(f"{KEY_VARIABLE} is not set: the runner passes the job's key there")
    _libc_call("prctl", _PR_SET_PDEATHSIG, signal.SIGKILL)  # the runner's kill ends us and the job
    host, _, port_text = args.hub.rpartition(":")
    port = int(port_text)
    rank, world = args.rank, args.world
    rank_address(world - 1)  # refuses a job larger than the link
    # Sockets to the other nodes are made here, in the node's network; they stay there after this
    # process moves into the job's own namespace below.
    listener: socket.socket | None = None
    hub_sock: socket.socket | None = None
    if rank == 0:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
        except OSError as exc:
            raise JobNetError(
                f"rank 0's relay cannot listen on {host}:{port} ({exc.strerror}); resubmit (the "
                "port is derived from the run id)"
            ) from None
        listener.listen(min(world, 4096))
    else:
        hub_sock = connect_to_hub(host, port, rank, key, CONNECT_TIMEOUT_S)
    tun = enter_private_network(rank)
    hub = None
    if listener is not None:
        hub = Hub(listener, tun, world, key)
        hub.serve()
    else:
        assert hub_sock is not None
        relay_to_hub(hub_sock, tun, rank)
    job = subprocess.Popen(args.command, env=dict(os.environ), pass_fds=tuple(args.pass_fd))
    code = job.wait()
    if hub is not None:
        hub.drain(DRAIN_S)
    if code < 0:  # end as the job did, so the runner records the same signal
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def main(argv: list[str]) -> int:
    try:
        return run(argv)
    except (JobNetError, OSError) as exc:
        print(f"remote-run: the job's network: {exc}", file=sys.stderr)
        return 126


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
