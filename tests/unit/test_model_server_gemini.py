"""The scripted model server, spoken to over real HTTP the way Gemini CLI and OpenCode speak to it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from framework.testing.gemini import schema_stub
from framework.testing.script import parse_script
from framework.testing.server import ScriptedModelServer

GEMINI_TOOLS = [
    {
        "functionDeclarations": [
            {"name": n, "parametersJsonSchema": {"type": "object"}}
            for n in ("run_shell_command", "write_file", "replace", "read_file")
        ]
    }
]
OPENCODE_TOOLS = [
    {"name": n, "input_schema": {"type": "object"}} for n in ("bash", "write", "edit", "read")
]
STREAM = "/v1beta/models/gemini-x:streamGenerateContent?alt=sse"
WHOLE = "/v1beta/models/gemini-x:generateContent"
FIRST_USER = {
    "role": "user",
    "parts": [
        {
            "text": "<session_context>\n- **Workspace Directories:**\n  - /work/repo\n</session_context>"
        },
        {"text": "please start"},
    ],
}
SCRIPT = {
    "model": "scripted-test",
    "side_reply": "side-answer",
    "turns": [
        {
            "text": "Writing it.",
            "actions": [
                {"write": {"path": "notes/out.txt", "content": "line one\nline two\n"}},
                {"bash": "cat notes/out.txt"},
            ],
        },
        {
            "expect": {"tool_result_contains": ["line two"]},
            "actions": [{"edit": {"path": "notes/out.txt", "old": "one", "new": "1"}}],
        },
        {"expect": {"tool_result_contains": ["replaced"]}, "text": "Done."},
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


def gemini_request(contents: list[dict[str, Any]], tools: Any = None) -> dict[str, Any]:
    return {
        "contents": contents,
        "systemInstruction": {"role": "user", "parts": [{"text": "You are Gemini CLI."}]},
        "tools": GEMINI_TOOLS if tools is None else tools,
        "generationConfig": {"temperature": 0},
    }


def data_chunks(text: str) -> list[dict[str, Any]]:
    """The SSE stream the way the Gemini SDK reads it: ``data:`` lines only, nothing else allowed."""
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks), blocks[:2]
    return [json.loads(b.removeprefix("data: ")) for b in blocks]


def model_content(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate streamed chunks into one model content, as Gemini CLI's history does."""
    parts: list[dict[str, Any]] = []
    for chunk in chunks:
        for part in chunk["candidates"][0]["content"]["parts"]:
            if "text" in part and parts and "text" in parts[-1]:
                parts[-1] = {"text": parts[-1]["text"] + part["text"]}
            else:
                parts.append(part)
    return {"role": "model", "parts": parts}


def answers(content: dict[str, Any], output: str) -> dict[str, Any]:
    calls = [p["functionCall"] for p in content["parts"] if "functionCall" in p]
    return {
        "role": "user",
        "parts": [
            {"functionResponse": {"id": c["id"], "name": c["name"], "response": {"output": output}}}
            for c in calls
        ],
    }


def test_gemini_stream_is_data_only_chunks_that_end_with_the_calls_and_a_finish_reason(
    server: ScriptedModelServer,
) -> None:
    status, text = post(server.url + STREAM, gemini_request([FIRST_USER]))
    assert status == 200
    chunks = data_chunks(text)
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None, "STOP"]
    assert all(c["usageMetadata"]["candidatesTokenCount"] > 0 for c in chunks)
    assert chunks[-1]["modelVersion"] == "scripted-test"
    content = model_content(chunks)
    text_part, write, bash = content["parts"]
    assert text_part == {"text": "Writing it."}
    assert write["functionCall"]["name"] == "write_file"
    assert write["functionCall"]["args"] == {
        "file_path": "/work/repo/notes/out.txt",
        "content": "line one\nline two\n",
    }
    assert bash["functionCall"]["name"] == "run_shell_command"
    assert bash["functionCall"]["args"]["command"] == "cat notes/out.txt"
    assert write["functionCall"]["id"] != bash["functionCall"]["id"]
    assert server.requests[-1].stream and server.requests[-1].api == "gemini"


def test_gemini_long_text_without_calls_streams_in_pieces_and_the_last_one_finishes() -> None:
    script = parse_script({"turns": [{"text": "x" * 150}]})
    with ScriptedModelServer(script) as srv:
        chunks = data_chunks(post(srv.url + STREAM, gemini_request([FIRST_USER]))[1])
    texts = [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks]
    assert "".join(texts) == "x" * 150 and len(texts) == 3
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all(t for t in texts)


def test_gemini_turns_follow_model_contents_and_function_responses_feed_expectations(
    server: ScriptedModelServer,
) -> None:
    first = model_content(data_chunks(post(server.url + STREAM, gemini_request([FIRST_USER]))[1]))
    history = [FIRST_USER, first, answers(first, "line one\nline two")]
    status, text = post(server.url + WHOLE, gemini_request(history))
    assert status == 200
    second = json.loads(text)["candidates"][0]["content"]
    assert second["parts"] == [
        {
            "functionCall": {
                "id": "call_scripted_002_0",
                "name": "replace",
                "args": {
                    "file_path": "/work/repo/notes/out.txt",
                    "instruction": "scripted edit",
                    "old_string": "one",
                    "new_string": "1",
                },
            }
        }
    ]
    history += [second, answers(second, "Successfully replaced 1 occurrence")]
    done = json.loads(post(server.url + WHOLE, gemini_request(history))[1])
    assert done["candidates"][0]["content"]["parts"] == [{"text": "Done."}]
    assert [r.turn for r in server.requests] == [0, 1, 2]
    server.check()


def test_gemini_unmet_expectation_is_a_400_in_gemini_error_shape(
    server: ScriptedModelServer,
) -> None:
    first = model_content(data_chunks(post(server.url + STREAM, gemini_request([FIRST_USER]))[1]))
    history = [FIRST_USER, first, answers(first, "nothing useful")]
    status, text = post(server.url + STREAM, gemini_request(history))
    assert status == 400
    error = json.loads(text)["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    assert "turn 2" in error["message"] and "'line two'" in error["message"]
    assert server.failures == [error["message"]]


def test_gemini_side_request_demanding_json_gets_a_value_that_fits_its_schema(
    server: ScriptedModelServer,
) -> None:
    body = gemini_request([FIRST_USER], tools=[])
    body["generationConfig"] = {
        "responseMimeType": "application/json",
        "responseJsonSchema": {
            "type": "object",
            "properties": {
                "reasoning": {"type": "string"},
                "next_speaker": {"type": "string", "enum": ["user", "model"]},
            },
        },
    }
    status, text = post(server.url + WHOLE, body)
    assert status == 200
    answer = json.loads(text)["candidates"][0]["content"]["parts"][0]["text"]
    assert json.loads(answer) == {"reasoning": "", "next_speaker": "user"}
    assert server.requests[-1].kind == "side" and server.turns_served == 0


def test_gemini_side_request_without_schema_gets_the_side_reply(
    server: ScriptedModelServer,
) -> None:
    status, text = post(server.url + WHOLE, gemini_request([FIRST_USER], tools=[]))
    assert status == 200
    assert json.loads(text)["candidates"][0]["content"]["parts"] == [{"text": "side-answer"}]


def test_gemini_count_tokens_answers_a_total(server: ScriptedModelServer) -> None:
    status, text = post(
        server.url + "/v1beta/models/gemini-x:countTokens", {"contents": [FIRST_USER]}
    )
    assert status == 200 and json.loads(text)["totalTokens"] > 0
    assert server.requests[-1].kind == "count_tokens"


def test_gemini_request_without_contents_is_refused_with_the_reason(
    server: ScriptedModelServer,
) -> None:
    status, text = post(server.url + WHOLE, {"tools": GEMINI_TOOLS})
    assert status == 400
    assert "'contents'" in json.loads(text)["error"]["message"]


def test_gemini_relative_path_without_a_workspace_names_the_fix(
    server: ScriptedModelServer,
) -> None:
    bare = {"role": "user", "parts": [{"text": "please start"}]}
    status, text = post(server.url + WHOLE, gemini_request([bare]))
    assert status == 400
    assert "relative path 'notes/out.txt'" in json.loads(text)["error"]["message"]


def test_opencode_on_the_messages_api_gets_its_own_tools_and_argument_names(
    server: ScriptedModelServer,
) -> None:
    body = {
        "model": "scripted-model",
        "stream": False,
        "system": [{"type": "text", "text": "<env>\n  Working directory: /work/repo\n</env>"}],
        "tools": OPENCODE_TOOLS,
        "messages": [{"role": "user", "content": "please start"}],
    }
    status, text = post(server.url + "/v1/messages", body)
    assert status == 200
    calls = [b for b in json.loads(text)["content"] if b["type"] == "tool_use"]
    assert [(c["name"], c["input"]) for c in calls] == [
        ("write", {"filePath": "/work/repo/notes/out.txt", "content": "line one\nline two\n"}),
        ("bash", {"command": "cat notes/out.txt"}),
    ]


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}}, {"n": 0}),
        ({"type": "integer", "minimum": 1}, 1),
        ({"type": "array", "items": {"type": "string"}}, []),
        ({"type": "boolean"}, False),
        ({"enum": ["b", "a"]}, "b"),
        ({"anyOf": []}, None),
    ],
)
def test_schema_stub_is_the_smallest_value_of_each_schema(schema: Any, expected: Any) -> None:
    assert schema_stub(schema) == expected
