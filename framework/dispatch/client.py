#!/usr/bin/env -S python3 -S
"""remote-run: send experiments from the sandbox to the host broker. Python 3 standard library only.

Usage:
  remote-run [OPTIONS] -- PROGRAM [ARGS...]     submit (same as `remote-run submit ...`)
  remote-run status RUN          state of a run, or of every run in a group
  remote-run wait RUN            block until the run (or group) ends
  remote-run logs RUN [--stderr] [--rank N]
  remote-run tail -f RUN         follow stdout until the run ends
  remote-run cancel RUN
  remote-run nodes               free/busy GPUs per node
  remote-run list                recent runs

Submit options: --gpus N, --cpus N, --mem-gb G, --time MINUTES, --nodes N, --tasks-per-node N,
--array SPEC (0-19 or 1,3,5; '{index}' in the arguments becomes each index), --name NAME,
--tag TAG (repeatable), --env NAME=VALUE (EXP_* and a few thread/seed variables), --cwd DIR,
--wait (block until done), --json (machine-readable output).

Exit codes: 0 success (with --wait/wait: every run finished), 1 a run failed or was cancelled,
2 bad usage or a rejected request (the message names the field), 3 the broker cannot be reached,
4 the broker refused (unknown run, executor error).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

# Start-up time is part of every submit's latency: no site (the shebang's -S), no typing, no uuid.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SOCKET_ENV = "REMOTE_RUN_SOCKET"
CONNECT_RETRY_S = 15.0
EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_REFUSED = 0, 1, 2, 3, 4
VERBS = ("submit", "status", "wait", "logs", "tail", "cancel", "nodes", "list", "ping")


class ClientError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def call(
    payload: dict[str, Any], socket_path: str | None = None, timeout_s: float = 330.0
) -> dict[str, Any]:
    """Send one request, return the broker's answer. Retries while the broker restarts or is busy."""
    path = socket_path or os.environ.get(SOCKET_ENV)
    if not path:
        raise ClientError(
            f"{SOCKET_ENV} is not set; run inside a session started by `agentic-researcher launch`",
            EXIT_UNREACHABLE,
        )
    data = json.dumps(payload).encode() + b"\n"
    deadline = time.monotonic() + CONNECT_RETRY_S
    delay = 0.02
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(timeout_s)
                conn.connect(path)
                conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
                chunks = []
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
            answer = json.loads(b"".join(chunks)) if chunks else None
            if isinstance(answer, dict) and not answer.get("busy"):
                return answer
        except (
            FileNotFoundError,
            ConnectionRefusedError,
            ConnectionResetError,
            BrokenPipeError,
            BlockingIOError,
        ):
            # Broker restarting, or its listen queue is full: retrying is safe (submits carry a token).
            pass
        except (json.JSONDecodeError, TimeoutError, OSError) as exc:
            raise ClientError(f"broker at {path} answered badly: {exc}", EXIT_UNREACHABLE) from None
        if time.monotonic() > deadline:
            raise ClientError(
                f"cannot reach the broker at {path}; is `agentic-researcher broker` running?",
                EXIT_UNREACHABLE,
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def checked(answer: dict[str, Any]) -> dict[str, Any]:
    if answer.get("ok"):
        return answer
    if answer.get("field"):
        raise ClientError(f"rejected: {answer.get('error')}", EXIT_USAGE)
    raise ClientError(str(answer.get("error")), EXIT_REFUSED)


def parse_array(spec: str) -> list[int]:
    indices: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ClientError(
                f"--array {spec!r}: expected N-M or N,M,... (example: 0-19)", EXIT_USAGE
            )
        indices.extend(range(int(lo), int(hi or lo) + 1))
    return indices


def build_request(opts: argparse.Namespace) -> dict[str, Any]:
    if not opts.command:
        raise ClientError(
            "nothing to run; put the command after '--', e.g. remote-run -- python exp.py",
            EXIT_USAGE,
        )
    env: dict[str, str] = {}
    for item in opts.env:
        name, sep, value = item.partition("=")
        if not sep:
            raise ClientError(f"--env {item!r}: expected NAME=VALUE", EXIT_USAGE)
        env[name] = value
    resources: dict[str, Any] = {
        "gpus": opts.gpus,
        "cpus": opts.cpus,
        "nodes": opts.nodes,
        "tasks_per_node": opts.tasks_per_node,
    }
    if opts.mem_gb is not None:
        resources["mem_gb"] = opts.mem_gb
    if opts.time is not None:
        resources["time_minutes"] = opts.time
    request: dict[str, Any] = {
        "argv": opts.command,
        "cwd": opts.cwd or os.getcwd(),
        "env": env,
        "resources": resources,
        "tags": opts.tag,
        "client_token": os.urandom(16).hex(),
    }
    if opts.detach:
        request["detach"] = True
    if opts.array:
        request["array"] = parse_array(opts.array)
    if opts.name:
        request["name"] = opts.name
    return request


def wait_for(run: str, sock: str | None) -> list[dict[str, Any]]:
    while True:
        runs = checked(call({"op": "wait", "run": run, "timeout_s": 300}, sock))["runs"]
        if all(r["state"] in ("finished", "failed", "cancelled") for r in runs):
            return runs


def runs_exit_code(runs: list[dict[str, Any]]) -> int:
    return EXIT_OK if all(r["state"] == "finished" for r in runs) else EXIT_RUN_FAILED


def print_runs(runs: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(runs, indent=2))
        return
    for r in runs:
        where = ",".join(r.get("nodes") or []) or "-"
        extra = f" exit={r['exit_code']}" if r.get("exit_code") is not None else ""
        reason = f" ({r['reason']})" if r.get("reason") else ""
        print(f"{r['run_id']}\t{r['state']}\t{where}\t{' '.join(r['argv'])}{extra}{reason}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="remote-run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--socket", help=f"broker socket (default: ${SOCKET_ENV})")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="verb")
    s = sub.add_parser("submit", help="submit a job")
    s.add_argument("--gpus", type=int, default=0)
    s.add_argument("--cpus", type=int, default=1)
    s.add_argument("--mem-gb", type=float)
    s.add_argument("--time", type=int, help="time limit in minutes")
    s.add_argument("--nodes", type=int, default=1)
    s.add_argument("--tasks-per-node", type=int, default=1)
    s.add_argument("--array")
    s.add_argument("--name")
    s.add_argument("--tag", action="append", default=[])
    s.add_argument("--env", action="append", default=[])
    s.add_argument("--cwd")
    s.add_argument("--wait", action="store_true")
    s.add_argument(
        "--detach",
        action="store_true",
        help="keep running after this session ends (default: cancelled when it ends)",
    )
    s.add_argument("--json", action="store_true", dest="json_out")
    s.add_argument("command", nargs=argparse.REMAINDER)
    for verb in ("status", "wait", "cancel"):
        v = sub.add_parser(verb)
        v.add_argument("run")
        v.add_argument("--json", action="store_true", dest="json_out")
    lg = sub.add_parser("logs")
    lg.add_argument("run")
    lg.add_argument("--stderr", action="store_true")
    lg.add_argument("--rank", type=int, default=0)
    t = sub.add_parser("tail")
    t.add_argument("-f", "--follow", action="store_true")
    t.add_argument("run")
    t.add_argument("--stderr", action="store_true")
    t.add_argument("--rank", type=int, default=0)
    for verb in ("nodes", "list", "ping"):
        v = sub.add_parser(verb)
        v.add_argument("--json", action="store_true", dest="json_out")
    return p


def run(argv: list[str]) -> int:
    if argv and argv[0] not in VERBS and argv[0] not in ("-h", "--help", "--socket", "--json"):
        argv = ["submit", *argv]
    elif argv[:1] == ["--json"] and len(argv) > 1 and argv[1] not in VERBS:
        argv = ["submit", "--json", *argv[1:]]
    opts = parser().parse_args(argv)
    as_json = opts.json or getattr(opts, "json_out", False)
    sock = opts.socket
    if opts.verb is None:
        parser().print_help()
        return EXIT_USAGE
    if opts.verb == "submit":
        if opts.command[:1] == ["--"]:
            opts.command = opts.command[1:]
        answer = checked(call({"op": "submit", "request": build_request(opts)}, sock))
        if not opts.wait:
            print(
                json.dumps({"group": answer["group"], "runs": answer["runs"]})
                if as_json
                else "\n".join(answer["runs"])
            )
            return EXIT_OK
        runs = wait_for(answer["group"], sock)
        print_runs(runs, as_json)
        return runs_exit_code(runs)
    if opts.verb in ("status", "cancel"):
        runs = checked(call({"op": opts.verb, "run": opts.run}, sock))["runs"]
        print_runs(runs, as_json)
        return EXIT_OK
    if opts.verb == "wait":
        runs = wait_for(opts.run, sock)
        print_runs(runs, as_json)
        return runs_exit_code(runs)
    if opts.verb in ("logs", "tail"):
        stream = "stderr" if opts.stderr else "stdout"
        follow = opts.verb == "tail" and opts.follow
        offset = 0
        out = sys.stdout
        while True:
            answer = checked(
                call(
                    {
                        "op": "logs",
                        "run": opts.run,
                        "stream": stream,
                        "rank": opts.rank,
                        "offset": offset,
                    },
                    sock,
                )
            )
            out.write(answer["data"])
            out.flush()
            offset = answer["offset"]
            if not follow or (answer["done"] and not answer["data"]):
                return EXIT_OK
            if not answer["data"]:
                time.sleep(0.2)
    if opts.verb == "nodes":
        nodes = checked(call({"op": "nodes"}, sock))["nodes"]
        if as_json:
            print(json.dumps(nodes, indent=2))
        else:
            print("NODE\tSTATE\tGPUS_FREE\tGPUS_BUSY\tCPUS_FREE")
            for n in nodes:
                print(
                    f"{n['name']}\t{n['state']}\t{n['gpus_total'] - n['gpus_busy']}\t{n['gpus_busy']}\t{n['cpus_total'] - n['cpus_busy']}"
                )
        return EXIT_OK
    if opts.verb == "list":
        print_runs(checked(call({"op": "list"}, sock))["runs"], as_json)
        return EXIT_OK
    checked(call({"op": "ping"}, sock))
    print("ok")
    return EXIT_OK


def main() -> int:
    try:
        return run(sys.argv[1:])
    except ClientError as exc:
        print(f"remote-run: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
