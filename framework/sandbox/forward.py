"""In-sandbox forwarder: loopback TCP ports -> the launcher's Unix sockets, then exec the agent.

Runs *inside* the sandbox with the sandbox's own ``python3`` (stdlib only). A sandbox with its
own network namespace has nothing but loopback; the launcher's egress proxy and model endpoint
bridge are reachable only as Unix sockets mounted into it. This binds every listening port first
(so the agent never races a missing proxy), forks a server that dies with the agent, and execs
the agent command.

Usage: python3 forward.py PORT=SOCKET [PORT=SOCKET ...] -- COMMAND [ARGS ...]
"""

import contextlib
import ctypes
import os
import selectors
import signal
import socket
import sys
from typing import cast

PR_SET_PDEATHSIG = 1


def _parse(argv):
    if "--" not in argv:
        raise SystemExit("forward.py: expected PORT=SOCKET ... -- COMMAND")
    split = argv.index("--")
    maps = []
    for item in argv[:split]:
        port, _, path = item.partition("=")
        maps.append((int(port), path))
    command = argv[split + 1 :]
    if not command:
        raise SystemExit("forward.py: no command after --")
    return maps, command


def _pipe(sel, a, b):
    sel.register(a, selectors.EVENT_READ, b)
    sel.register(b, selectors.EVENT_READ, a)


def _serve(listeners):
    sel = selectors.DefaultSelector()
    for listener, path in listeners:
        sel.register(listener, selectors.EVENT_READ, path)
    listening = {listener for listener, _ in listeners}
    while True:
        for key, _ in sel.select():
            sock = cast(socket.socket, key.fileobj)
            if sock in listening:
                client, _ = sock.accept()
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    upstream.connect(key.data)
                except OSError:
                    client.close()
                    upstream.close()
                    continue
                _pipe(sel, client, upstream)
                continue
            peer = key.data
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if data:
                try:
                    peer.sendall(data)
                    continue
                except OSError:
                    pass
            for s in (sock, peer):
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(s)
                s.close()


def main(argv):
    maps, command = _parse(argv)
    listeners = []
    for port, path in maps:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listeners.append((listener, path))
    agent_pid = os.getpid()
    if os.fork() == 0:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != agent_pid:
            os._exit(0)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        _serve(listeners)
        os._exit(0)
    for listener, _ in listeners:
        listener.close()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
