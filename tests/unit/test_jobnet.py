"""The job link's relay (framework/dispatch/jobnet.py): what it forwards and whom it admits."""

from __future__ import annotations

import os
import socket
import struct
import time

from framework.dispatch import jobnet


def packet_to(address: str) -> bytes:
    header = bytearray(20)
    header[0] = 0x45
    header[16:20] = socket.inet_aton(address)
    return bytes(header) + b"data"


def test_relay_forwards_only_ipv4_packets_for_a_rank_of_the_job() -> None:
    assert jobnet.destination(packet_to("169.254.0.2")) == socket.inet_aton("169.254.0.2")
    assert jobnet.destination(b"\x60" + bytes(39)) is None  # IPv6
    assert jobnet.destination(b"\x45" * 10) is None  # runt
    read_end, write_end = os.pipe()
    listener = socket.socket()
    hub = jobnet.Hub(listener, write_end, world_size=2, key="k")
    hub.route(packet_to("127.0.0.1"))  # no rank there: dropped
    hub.route(packet_to("169.254.0.2"))  # rank 1 has not joined: dropped
    hub.route(packet_to("169.254.0.1"))  # rank 0's own: to its TUN
    os.close(write_end)
    assert os.read(read_end, 100) == packet_to("169.254.0.1")
    listener.close()


def test_hub_admits_no_relay_without_the_job_key() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    _, write_end = os.pipe()
    hub = jobnet.Hub(listener, write_end, world_size=3, key="right")
    hub.serve()
    intruder = jobnet.connect_to_hub("127.0.0.1", port, 1, "wrong", 5)
    assert intruder.recv(1) == b""  # closed by the hub
    forged_rank = socket.create_connection(("127.0.0.1", port))
    forged_rank.sendall(struct.pack("!32sI", jobnet.key_digest("right"), 0))  # rank 0 is the hub
    assert forged_rank.recv(1) == b""
    member = jobnet.connect_to_hub("127.0.0.1", port, 2, "right", 5)
    deadline = time.monotonic() + 5
    while not hub.peers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert list(hub.peers) == [socket.inet_aton("169.254.0.3")]
    for sock in (intruder, forged_rank, member):
        sock.close()
    listener.close()
