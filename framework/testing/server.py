"""A local HTTP server that plays a :class:`Script` to real agent CLIs.

Routes: ``POST /v1/messages`` and ``/v1/messages/count_tokens`` (Anthropic, Claude Code),
``POST /v1/responses`` (OpenAI Responses, Codex), ``POST .../models/<m>:generateContent``,
``:streamGenerateContent`` and ``:countTokens`` (Gemini API, Gemini CLI), ``GET /v1/models`` (all).
Paths may carry any prefix and query string.

Which turn to play is read from the conversation history in the request, not from a request
counter: a request whose history holds N earlier assistant responses gets turn N+1. Retries, side
requests and ``--resume`` therefore land on the right turn. Requests that offer no tools are
*side requests* (title generation, quota probes, summaries): they get ``script.side_reply`` and
never move the script. When the script does not fit a request (no such turn, an expectation fails,
an action needs a tool the CLI did not offer), the server answers HTTP 400 with the reason, which
the CLIs print, and keeps the reason in :attr:`ScriptedModelServer.failures`.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Literal

from pydantic import BaseModel

from framework.testing import anthropic, gemini, opencode, responses
from framework.testing.player import Translate, next_reply
from framework.testing.protocol import Reply, RequestView, ScriptMismatch
from framework.testing.script import Script

RequestKind = Literal["main", "side", "count_tokens", "models", "unknown"]


class RecordedRequest(BaseModel):
    """One request as received, with what the server made of it."""

    index: int
    received_at: float
    method: str
    path: str
    api: str
    kind: RequestKind
    turn: int | None = None
    stream: bool = False
    status: int = 200
    error: str | None = None
    tools_called: list[str] = []
    body: Any = None


class ScriptedModelServer:
    """Serve ``script`` on ``host:port`` (port 0 picks a free one) in a background thread."""

    def __init__(
        self,
        script: Script,
        host: str = "127.0.0.1",
        port: int = 0,
        record_path: Path | None = None,
        on_request: Callable[[RecordedRequest], None] | None = None,
    ) -> None:
        self.script = script
        self._record_path = record_path
        self._on_request = on_request
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._served_turns: set[int] = set()
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ScriptedModelServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="scripted-model", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def failures(self) -> list[str]:
        return [r.error for r in self.requests if r.error]

    @property
    def turns_served(self) -> int:
        """How many distinct script turns have been sent at least once."""
        with self._lock:
            return len(self._served_turns)

    @property
    def finished(self) -> bool:
        """Every turn of the script was served."""
        return self.turns_served == len(self.script.turns)

    def check(self) -> None:
        """Raise AssertionError, listing every problem, unless the whole script played cleanly."""
        problems = list(self.failures)
        if not self.finished:
            problems.append(
                f"only {self.turns_served} of {len(self.script.turns)} script turns were served"
            )
        if problems:
            raise AssertionError("scripted model: " + "\n".join(problems))

    def _record(self, entry: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(entry)
            if entry.kind == "main" and entry.turn is not None and entry.status == 200:
                self._served_turns.add(entry.turn)
            if self._record_path is not None:
                with self._record_path.open("a", encoding="utf-8") as fh:
                    fh.write(entry.model_dump_json() + "\n")
        if self._on_request is not None:
            self._on_request(entry)

    def _next_index(self) -> int:
        with self._lock:
            return len(self._requests)


def _api_module(path: str) -> ModuleType | None:
    if path.endswith("/messages"):
        return anthropic
    if path.endswith("/responses"):
        return responses
    if gemini.is_gemini_path(path):
        return gemini
    return None


def _read_request(api: ModuleType, body: dict[str, Any], path: str) -> RequestView:
    # The Gemini API names the model and streaming in the path, the others in the body.
    view: RequestView = gemini.read_request(body, path) if api is gemini else api.read_request(body)
    return view


def _translator(api: ModuleType, view: RequestView) -> Translate:
    # OpenCode and Claude Code share the Messages API but not their tools.
    if api is anthropic and opencode.speaks(view):
        return opencode.translate
    translate: Translate = api.translate
    return translate


def _side_reply(api: ModuleType, body: dict[str, Any], script: Script) -> Reply:
    if api is gemini:
        return gemini.side_reply(body, script.side_reply)
    return Reply(text=script.side_reply)


def _decode_body(raw: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return raw


def _handler_for(server: ScriptedModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Requests are recorded, not logged to stderr."""

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                raw = b"".join(chunks)
            else:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            return _decode_body(raw, self.headers.get("Content-Encoding", "").lower())

        def _send_json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", f"req_scripted_{server._next_index() - 1}")
            self.end_headers()
            self.wfile.write(data)

        def _send_events(self, events: Iterable[tuple[str, dict[str, Any]]]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            for name, data in events:
                # An empty name sends a data-only event, which is all the Gemini SDK accepts.
                head = f"event: {name}\n" if name else ""
                payload = json.dumps(data, ensure_ascii=False)
                self.wfile.write(f"{head}data: {payload}\n\n".encode())
                self.wfile.flush()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            entry = RecordedRequest(
                index=server._next_index(),
                received_at=time.time(),
                method="GET",
                path=self.path,
                api="",
                kind="unknown",
            )
            if path.endswith("/models"):
                model = {
                    "id": server.script.model,
                    "object": "model",
                    "type": "model",
                    "display_name": server.script.model,
                }
                server._record(entry.model_copy(update={"kind": "models"}))
                self._send_json(
                    200, {"object": "list", "data": [model], "has_more": False, "models": []}
                )
                return
            message = f"scripted model: no route for GET {path}"
            server._record(entry.model_copy(update={"status": 404, "error": message}))
            self._send_json(404, {"error": {"type": "not_found_error", "message": message}})

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            index = server._next_index()
            base = {"index": index, "received_at": time.time(), "method": "POST", "path": self.path}
            try:
                body = json.loads(self._read_body() or b"{}")
            except (ValueError, OSError) as exc:
                message = f"scripted model: request body is not JSON: {exc}"
                server._record(
                    RecordedRequest(**base, api="", kind="unknown", status=400, error=message)
                )
                self._send_json(
                    400, {"error": {"type": "invalid_request_error", "message": message}}
                )
                return
            if path.endswith("/messages/count_tokens"):
                server._record(
                    RecordedRequest(**base, api=anthropic.API, kind="count_tokens", body=body)
                )
                self._send_json(200, anthropic.count_tokens_body(body))
                return
            if path.endswith(":countTokens"):
                server._record(
                    RecordedRequest(**base, api=gemini.API, kind="count_tokens", body=body)
                )
                self._send_json(200, gemini.count_tokens_body(body))
                return
            api = _api_module(path)
            if api is None:
                message = (
                    f"scripted model: no route for POST {path} (serves /v1/messages, "
                    "/v1/responses and Gemini's models/<model>:generateContent)"
                )
                server._record(
                    RecordedRequest(
                        **base, api="", kind="unknown", status=404, error=message, body=body
                    )
                )
                self._send_json(404, {"error": {"type": "not_found_error", "message": message}})
                return
            self._answer(api, body, base, path)

        def _answer(
            self, api: ModuleType, body: dict[str, Any], base: dict[str, Any], path: str
        ) -> None:
            reply_id = f"scripted_{base['index']:04d}"
            try:
                view = _read_request(api, body, path)
                if view.is_main:
                    turn, reply = next_reply(server.script, view, _translator(api, view))
                    kind: RequestKind = "main"
                else:
                    turn, reply, kind = None, _side_reply(api, body, server.script), "side"
            except ScriptMismatch as exc:
                message = f"scripted model: {exc}"
                server._record(
                    RecordedRequest(
                        **base, api=api.API, kind="main", status=400, error=message, body=body
                    )
                )
                self._send_json(400, api.error_body(message))
                return
            # Recorded before answering, so a client that holds its answer finds the record.
            server._record(
                RecordedRequest(
                    **base,
                    api=api.API,
                    kind=kind,
                    turn=turn,
                    stream=view.stream,
                    tools_called=[c.name for c in reply.calls],
                    body=body,
                )
            )
            model = server.script.model
            if view.stream:
                self._send_events(api.stream_events(reply, view, reply_id, model))
            else:
                whole = anthropic.message if api is anthropic else api.response
                self._send_json(200, whole(reply, view, reply_id, model))

    return Handler
