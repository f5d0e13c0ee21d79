"""The scripted model server, spoken to over real HTTP the way Claude Code and Codex speak to it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from framework.cli import app
from framework.testing.script import ScriptError, load_script, parse_script
from framework.testing.server import ScriptedModelServer

CLAUDE_TOOLS = [
    {"name": n, "input_schema": {"type": "object"}} for n in ("Bash", "Write", "Edit", "Read")
]
CODEX_TOOLS = [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}}]

SCRIPT = {
    "model": "scripted-test",
    "side_reply": "side-answer",
    "turns": [
        {
            "text": "Writing it.",
            "actions": [
                {
                    "write": {
                        "path": "notes/out.txt",
                        "content": 'it\'s "quoted"\nline two\n$HOME `x`',
                    }
                },
                {"bash": "cat notes/out.txt"},
            ],
        },
        {"expect": {"tool_result_contains": ["line two"]}, "text": "Done."},
    ],
}


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(parse_script(SCRIPT)) as srv:
        yield srv


def post(url: str, body: dict[str, Any]) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def claude_request(
    messages: list[dict[str, Any]], stream: bool = True, tools: Any = None
) -> dict[str, Any]:
    return {
        "model": "claude-x",
        "stream": stream,
        "system": [{"type": "text", "text": "You are an agent."}],
        "tools": CLAUDE_TOOLS if tools is None else tools,
        "messages": messages,
    }


FIRST_USER = {
    "role": "user",
    "content": [{"type": "text", "text": "Primary working directory: /work/repo\nplease start"}],
}


def reassemble_anthropic(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "content_block_start":
            blocks[data["index"]] = dict(data["content_block"])
            partial[data["index"]] = ""
        elif name == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                blocks[data["index"]]["text"] += delta["text"]
            else:
                partial[data["index"]] += delta["partial_json"]
        elif name == "content_block_stop" and blocks[data["index"]]["type"] == "tool_use":
            blocks[data["index"]]["input"] = json.loads(partial[data["index"]])
    return [blocks[i] for i in sorted(blocks)]


def test_anthropic_stream_reassembles_into_the_scripted_tool_calls(
    server: ScriptedModelServer,
) -> None:
    status, text = post(f"{server.url}/v1/messages?beta=true", claude_request([FIRST_USER]))
    assert status == 200
    events = sse(text)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 3
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] > 0
    text_block, write, bash = reassemble_anthropic(events)
    assert text_block == {"type": "text", "text": "Writing it."}
    assert write["name"] == "Write"
    assert write["input"] == {
        "file_path": "/work/repo/notes/out.txt",
        "content": 'it\'s "quoted"\nline two\n$HOME `x`',
    }
    assert bash["name"] == "Bash" and bash["input"]["command"] == "cat notes/out.txt"
    assert write["id"] != bash["id"]


def test_anthropic_non_streaming_returns_the_whole_message_with_usage(
    server: ScriptedModelServer,
) -> None:
    status, text = post(f"{server.url}/v1/messages", claude_request([FIRST_USER], stream=False))
    message = json.loads(text)
    assert status == 200
    assert message["type"] == "message" and message["model"] == "scripted-test"
    assert [b["type"] for b in message["content"]] == ["text", "tool_use", "tool_use"]
    assert message["usage"]["input_tokens"] > 0 and message["usage"]["output_tokens"] > 0


def test_turn_comes_from_the_history_so_retries_repeat_and_results_advance(
    server: ScriptedModelServer,
) -> None:
    first = json.loads(
        post(f"{server.url}/v1/messages", claude_request([FIRST_USER], stream=False))[1]
    )
    retry = json.loads(
        post(f"{server.url}/v1/messages", claude_request([FIRST_USER], stream=False))[1]
    )
    assert first["content"] == retry["content"]
    results = [
        {"type": "tool_result", "tool_use_id": b["id"], "content": "line two"}
        for b in first["content"]
        if b["type"] == "tool_use"
    ]
    history = [
        FIRST_USER,
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": results},
    ]
    status, text = post(f"{server.url}/v1/messages", claude_request(history, stream=False))
    assert status == 200
    assert json.loads(text)["content"] == [{"type": "text", "text": "Done."}]
    assert [r.turn for r in server.requests] == [0, 0, 1]
    assert server.finished
    server.check()


def test_side_requests_get_the_canned_reply_and_do_not_move_the_script(
    server: ScriptedModelServer,
) -> None:
    status, text = post(
        f"{server.url}/v1/messages", claude_request([FIRST_USER], stream=False, tools=[])
    )
    assert status == 200
    assert json.loads(text)["content"] == [{"type": "text", "text": "side-answer"}]
    assert server.requests[-1].kind == "side"
    assert server.turns_served == 0


def test_failed_expectation_answers_400_with_the_reason_and_is_recorded(
    server: ScriptedModelServer,
) -> None:
    history = [
        FIRST_USER,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "nothing useful"}],
        },
    ]
    status, text = post(f"{server.url}/v1/messages", claude_request(history))
    assert status == 400
    message = json.loads(text)["error"]["message"]
    assert "turn 2" in message and "'line two'" in message and "nothing useful" in message
    assert server.failures == [message]
    with pytest.raises(AssertionError, match="line two"):
        server.check()


def test_asking_past_the_last_turn_is_a_clear_error(server: ScriptedModelServer) -> None:
    history = [FIRST_USER]
    for _ in range(2):
        history += [{"role": "assistant", "content": "x"}, {"role": "user", "content": "more"}]
    status, text = post(f"{server.url}/v1/messages", claude_request(history))
    assert status == 400
    assert "asks for turn 3 but the script has only 2" in json.loads(text)["error"]["message"]


def test_action_whose_tool_is_not_offered_names_what_was_offered(
    server: ScriptedModelServer,
) -> None:
    tools = [{"name": "Bash", "input_schema": {}}]
    status, text = post(f"{server.url}/v1/messages", claude_request([FIRST_USER], tools=tools))
    assert status == 400
    message = json.loads(text)["error"]["message"]
    assert "'Write'" in message and "offered: Bash" in message


def test_relative_path_without_a_known_working_directory_is_refused(
    server: ScriptedModelServer,
) -> None:
    status, text = post(
        f"{server.url}/v1/messages", claude_request([{"role": "user", "content": "no cwd here"}])
    )
    assert status == 400
    assert "relative path 'notes/out.txt'" in json.loads(text)["error"]["message"]


def codex_request(items: list[dict[str, Any]], stream: bool = True) -> dict[str, Any]:
    return {
        "model": "m",
        "stream": stream,
        "instructions": "",
        "tools": CODEX_TOOLS,
        "input": items,
    }


CODEX_USER = {
    "type": "message",
    "role": "user",
    "content": [
        {"type": "input_text", "text": "<environment_context><cwd>/w</cwd></environment_context>"}
    ],
}


def test_responses_stream_carries_function_calls_as_codex_reads_them(
    server: ScriptedModelServer,
) -> None:
    status, text = post(f"{server.url}/v1/responses", codex_request([CODEX_USER]))
    assert status == 200
    events = sse(text)
    kinds = [data["type"] for _, data in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert (
        "response.output_text.delta" in kinds and "response.function_call_arguments.delta" in kinds
    )
    done = [d["item"] for _, d in events if d["type"] == "response.output_item.done"]
    assert [i["type"] for i in done] == ["message", "function_call", "function_call"]
    for item in done[1:]:
        streamed = "".join(
            d["delta"]
            for _, d in events
            if d["type"] == "response.function_call_arguments.delta" and d["item_id"] == item["id"]
        )
        assert streamed == item["arguments"]
        assert item["name"] == "exec_command"
    completed = events[-1][1]["response"]
    assert (
        completed["usage"]["total_tokens"]
        == completed["usage"]["input_tokens"] + completed["usage"]["output_tokens"]
    )


def test_codex_write_action_writes_exactly_the_scripted_bytes(
    server: ScriptedModelServer, tmp_path: Path
) -> None:
    status, text = post(f"{server.url}/v1/responses", codex_request([CODEX_USER], stream=False))
    assert status == 200
    write_call = json.loads(text)["output"][1]
    command = json.loads(write_call["arguments"])["cmd"]
    subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True)
    assert (tmp_path / "notes" / "out.txt").read_text() == 'it\'s "quoted"\nline two\n$HOME `x`'


def test_codex_history_with_call_outputs_advances_to_the_next_turn(
    server: ScriptedModelServer,
) -> None:
    first = json.loads(
        post(f"{server.url}/v1/responses", codex_request([CODEX_USER], stream=False))[1]
    )
    outputs = [
        {"type": "function_call_output", "call_id": i["call_id"], "output": "line two"}
        for i in first["output"]
        if i["type"] == "function_call"
    ]
    status, text = post(
        f"{server.url}/v1/responses", codex_request([CODEX_USER, *first["output"], *outputs])
    )
    assert status == 200
    assert sse(text)[-1][1]["response"]["output"][0]["content"][0]["text"] == "Done."
    server.check()


def test_count_tokens_and_models_endpoints_answer(server: ScriptedModelServer) -> None:
    status, text = post(f"{server.url}/v1/messages/count_tokens", claude_request([FIRST_USER]))
    assert status == 200 and json.loads(text)["input_tokens"] > 0
    with urllib.request.urlopen(f"{server.url}/v1/models", timeout=10) as response:
        assert json.loads(response.read())["data"][0]["id"] == "scripted-test"
    assert [r.kind for r in server.requests] == ["count_tokens", "models"]


def test_unknown_route_is_404_naming_the_served_routes(server: ScriptedModelServer) -> None:
    status, text = post(f"{server.url}/v1/chat/completions", {})
    assert status == 404
    assert "/v1/responses" in json.loads(text)["error"]["message"]


def test_every_request_is_recorded_to_the_jsonl_file(tmp_path: Path) -> None:
    record = tmp_path / "requests.jsonl"
    with ScriptedModelServer(parse_script(SCRIPT), record_path=record) as srv:
        post(f"{srv.url}/v1/messages", claude_request([FIRST_USER], stream=False))
        post(f"{srv.url}/v1/messages", claude_request([FIRST_USER], stream=False, tools=[]))
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(r["kind"], r["turn"]) for r in rows] == [("main", 0), ("side", None)]
    assert rows[0]["body"]["messages"][0] == FIRST_USER


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"turns": [{"actions": [{"rm": "x"}]}]}, "unknown action 'rm'"),
        ({"turns": [{"actions": [{"bash": "a", "read": "b"}]}]}, "exactly one of"),
        ({"turns": [{}]}, "turns.0: Value error, a turn needs text, actions or both"),
        ({"turns": []}, "turns: List should have at least 1 item"),
        ({"turns": [{"text": "x", "expect": {"contains": ["y"]}}]}, "turns.0.expect.contains"),
    ],
)
def test_malformed_scripts_are_rejected_with_the_field_named(data: Any, fragment: str) -> None:
    with pytest.raises(ScriptError, match=r"plan\.yaml: not a valid script") as info:
        parse_script(data, "plan.yaml")
    assert fragment in str(info.value)


def test_unparseable_script_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("turns: [unclosed\n")
    with pytest.raises(ScriptError, match=r"bad\.yaml: not valid yaml"):
        load_script(bad)


CLIENT = """
import json, os, urllib.request
url = os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages"
messages = [{"role": "user", "content": "Primary working directory: /tmp\\ngo"}]
while True:
    body = {"model": "m", "tools": [{"name": n} for n in ("Bash", "Write")], "messages": messages}
    request = urllib.request.Request(url, data=json.dumps(body).encode())
    reply = json.loads(urllib.request.urlopen(request).read())
    messages.append({"role": "assistant", "content": reply["content"]})
    calls = [b for b in reply["content"] if b["type"] == "tool_use"]
    if not calls:
        break
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": c["id"], "content": "line two"} for c in calls]})
"""


def test_replay_command_plays_the_script_to_a_client_and_reports_success(tmp_path: Path) -> None:
    script = tmp_path / "plan.json"
    script.write_text(json.dumps(SCRIPT))
    client = tmp_path / "client.py"
    client.write_text(CLIENT)
    result = CliRunner().invoke(app, ["replay", str(script), "--", sys.executable, str(client)])
    assert result.exit_code == 0, result.output
    assert "turns served: 2/2" in result.output and "replay OK" in result.output


def test_replay_command_fails_when_the_client_stops_early(tmp_path: Path) -> None:
    script = tmp_path / "plan.json"
    script.write_text(json.dumps(SCRIPT))
    result = CliRunner().invoke(app, ["replay", str(script), "--", sys.executable, "-c", "pass"])
    assert result.exit_code == 1
    assert "turns served: 0/2" in result.output and "replay FAILED" in result.output
