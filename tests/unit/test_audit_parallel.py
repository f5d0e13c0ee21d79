"""Reading a transcript in segments, in worker processes, gives exactly what reading it in one go
gives: the same events in the same order, on the same lines, and the same counts."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zstandard

from framework.audit import parallel
from framework.audit.audit import resolve, run_audit
from framework.audit.events import Event, EventKind
from framework.audit.readers import READERS, ReadState
from framework.audit.readers.base import iter_blocks, iter_lines, line_start
from framework.audit.workers import WorkerDied
from framework.config import Settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"
FORKED = pytest.mark.skipif(sys.platform != "linux", reason="workers are forked on Linux only")
CODEX = [
    FIXTURES / "real" / "codex" / "write-and-run.jsonl",
    FIXTURES / "codex" / "rollout-2026-11-21T09-00-00-0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b.jsonl",
]
CLAUDE = [
    FIXTURES / "real" / "claude" / "write-and-run.jsonl",
    FIXTURES / "real" / "claude" / "hostile.jsonl",
    FIXTURES / "claude" / "-work-project" / "5b0c6f1e-0d5a-4c1e-9a57-2f7f1b0b9c01.jsonl",
]
TS = '"timestamp":"2026-11-23T09:15:47.663Z"'
CODEX_ODD = [
    "{not json",
    "",
    "   ",
    "[1, 2]",
    '{"a":1}{"b":2}',
    "{" + TS + ',"type":"future_record","payload":{"x":1}}',
    "{" + TS + ',"type":"event_msg","payload":{"type":"hologram_started"}}',
    "{" + TS + ',"type":"event_msg","payload":{"type":"error","message":"boom"}}',
    "{" + TS + ',"type":"response_item","payload":{"type":"message","role":5}}',
    "{" + TS + ',"type":"response_item","payload":{"type":"future_item"}}',
    "{" + TS + ',"type":"compacted","payload":{"message":"compacted"}}',
    '{"type":"message","role":"assistant","content":[{"type":"output_text","text":"old form"}]}',
    "{" + TS + ',"type":"response_item","payload":{"type":"message","role":"assistant",'
    '"content":[{"type":"output_text","text":"' + "x" * 5000 + '"}]}}',
]
CLAUDE_ODD = [
    "{not json",
    "",
    '{"type":"future-record-type","sessionId":"s","parentUuid":null}',
    '{"type":"file-history-snapshot","messageId":"m1","snapshot":{"files":[]}}',
    '{"type":"file-history-snapshot","messageId":"m1"',
]


def damaged(sources: list[Path], odd: list[str], copies: int = 3) -> str:
    """The sources' lines, with every odd line after each few of them."""
    lines = [line for source in sources for line in source.read_text().splitlines()] * copies
    out = []
    for n, line in enumerate(lines):
        out.append(line)
        if n % 5 == 4:
            out.append(odd[(n // 5) % len(odd)])
    return "\n".join(out)


def read_whole(path: Path, fmt: str) -> tuple[list[tuple[object, ...]], str]:
    state = ReadState(format=fmt)
    events = [msgspec.structs.astuple(e) for e in READERS[fmt].events(path, state)]
    return events, state.freeze().model_dump_json()


def read_in_segments(
    path: Path, fmt: str, segment_bytes: int
) -> tuple[list[tuple[object, ...]], str]:
    state = ReadState(format=fmt)
    stream = parallel.read_events(
        path, fmt, state, workers=2, min_bytes=0, segment_bytes=segment_bytes
    )
    events = [msgspec.structs.astuple(e) for e in stream]
    return events, state.freeze().model_dump_json()


def test_line_start_is_the_first_line_beginning_at_or_after_an_offset(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"ab\ncd\n\nefg")
    starts = [line_start(path, offset) for offset in range(12)]
    assert starts == [0, 3, 3, 3, 6, 6, 6, 7, 10, 10, 10, 10]


def test_line_start_finds_the_end_of_a_line_longer_than_its_reads(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"x" * 200_000 + b"\ny\n")
    assert line_start(path, 5) == 200_001
    assert line_start(path, 200_001) == 200_001
    assert line_start(path, 200_002) == 200_003


@pytest.mark.parametrize("segment_bytes", [1, 7, 100, 4096])
def test_segments_hold_every_line_once_even_lines_longer_than_a_segment(
    tmp_path: Path, segment_bytes: int
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"{}\n" + b"{" + b"x" * 300 + b"}\n\n{}\n" * 20 + b"{cut")
    size = path.stat().st_size
    whole_lines = [bytes(line) for _, line, _ in iter_lines(path, ReadState(format=""))]
    lines: list[bytes] = []
    blocks: list[bytes] = []
    for offset in range(0, size, segment_bytes):
        start, end = line_start(path, offset), line_start(path, offset + segment_bytes)
        lines += [bytes(line) for _, line, _ in iter_lines(path, ReadState(format=""), start, end)]
        blocks += [bytes(b.view) for b, _ in iter_blocks(path, ReadState(format=""), start, end)]
    assert lines == whole_lines
    assert b"".join(blocks) == path.read_bytes()


@pytest.mark.parametrize("segment_bytes", [300, 4096, 100_000])
@pytest.mark.parametrize(
    ("fmt", "sources", "odd"), [("codex", CODEX, CODEX_ODD), ("claude", CLAUDE, CLAUDE_ODD)]
)
@pytest.mark.parametrize("ending", ["\n", "", '\n{"type":"cut off'])
def test_segmented_reading_gives_the_events_and_counts_of_reading_in_one_go(
    tmp_path: Path, fmt: str, sources: list[Path], odd: list[str], segment_bytes: int, ending: str
) -> None:
    """Corrupt, blank and unknown lines, lines longer than a segment, a last line without a
    newline or cut off: counted alike, and every event keeps its line number."""
    path = tmp_path / f"{fmt}.jsonl"
    path.write_text(damaged(sources, odd) + ending)
    whole_events, whole_counts = read_whole(path, fmt)
    events, counts = read_in_segments(path, fmt, segment_bytes)
    assert events == whole_events
    assert counts == whole_counts
    stats = json.loads(counts)
    assert stats["corrupt_lines"] and stats["unknown_record_types"]
    assert stats["truncated_last_line"] == ([path.name] if "cut" in ending else [])


def usage_line(inputs: int, outputs: int) -> str:
    return (
        "{" + TS + ',"type":"event_msg","payload":{"type":"token_count","info":'
        '{"total_token_usage":{"input_tokens":' + str(inputs) + ',"cached_input_tokens":0,'
        '"output_tokens":' + str(outputs) + ',"reasoning_output_tokens":0}}}}'
    )


def test_codex_model_and_token_totals_carry_from_segment_to_segment(tmp_path: Path) -> None:
    """Each line its own segment: the model of an earlier turn_context, and the totals of an
    earlier token_count, still decide the events of the lines after them."""
    turn = "{" + TS + ',"type":"turn_context","payload":{"model":"gpt-5-codex"}}'
    said = (
        "{" + TS + ',"type":"response_item","payload":{"type":"message","role":"assistant",'
        '"content":[{"type":"output_text","text":"done"}]}}'
    )
    lines = [said, turn, said, usage_line(100, 10), usage_line(100, 10), said]
    lines += [usage_line(150, 12), usage_line(120, 50), usage_line(150, 20)]
    path = tmp_path / "rollout.jsonl"
    path.write_text("\n".join(lines) + "\n")
    state = ReadState(format="codex")
    events = list(
        parallel.read_events(path, "codex", state, workers=2, min_bytes=0, segment_bytes=1)
    )
    assert [(e.kind, e.line, e.model) for e in events if e.kind is EventKind.ASSISTANT] == [
        (EventKind.ASSISTANT, 1, None),
        (EventKind.ASSISTANT, 3, "gpt-5-codex"),
        (EventKind.ASSISTANT, 6, "gpt-5-codex"),
    ]
    usage = [e for e in events if e.kind is EventKind.TOKEN_USAGE]
    assert [(e.line, e.input_tokens, e.output_tokens, e.model) for e in usage] == [
        (
            4,
            100,
            10,
            "gpt-5-codex",
        ),  # the repeat on line 5 and the smaller total on 8 count nothing
        (7, 50, 2, "gpt-5-codex"),
        (9, 0, 8, "gpt-5-codex"),
    ]
    assert [msgspec.structs.astuple(e) for e in events] == read_whole(path, "codex")[0]


def test_claude_usage_repeated_in_another_segment_is_counted_once(tmp_path: Path) -> None:
    def block(text: str) -> str:
        message = {
            "id": "msg_1",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": text}],
            "usage": {"input_tokens": 7, "output_tokens": 3},
        }
        return json.dumps({"type": "assistant", "sessionId": "s", "message": message})

    path = tmp_path / "session.jsonl"
    path.write_text("\n".join([block("a"), block("b"), block("c")]) + "\n")
    events = list(
        parallel.read_events(
            path, "claude", ReadState(format="claude"), workers=2, min_bytes=0, segment_bytes=1
        )
    )
    usage = [e for e in events if e.kind is EventKind.TOKEN_USAGE]
    assert [(e.line, e.input_tokens) for e in usage] == [(1, 7)]
    assert [e.text for e in events if e.kind is EventKind.ASSISTANT] == ["a", "b", "c"]


def spools() -> set[str]:
    """The spool directories of compressed files being read (see ``parallel._spooled``)."""
    places = [Path("/dev/shm"), Path(tempfile.gettempdir())]
    return {str(p) for place in places if place.is_dir() for p in place.glob("ar-audit-*")}


@FORKED
@pytest.mark.parametrize("segment_bytes", [300, 100_000])
@pytest.mark.parametrize(
    ("fmt", "sources", "odd"), [("codex", CODEX, CODEX_ODD), ("claude", CLAUDE, CLAUDE_ODD)]
)
def test_compressed_file_read_in_spooled_segments_gives_what_one_go_gives(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    sources: list[Path],
    odd: list[str],
    segment_bytes: int,
) -> None:
    """A ``.jsonl.zst`` file is decompressed here and its segments spooled to the workers: the
    events and counts (file names included) are those of reading it in one go, and no spool
    file is left behind."""
    path = tmp_path / f"{fmt}.jsonl.zst"
    text = damaged(sources, odd) + '\n{"type":"cut off'
    path.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    spooled: list[int] = []
    spool = parallel._spooled

    def counted(*args: Any) -> Iterator[tuple[Path, int, None]]:
        for segment in spool(*args):
            spooled.append(segment[0].stat().st_size)
            yield segment

    monkeypatch.setattr(parallel, "_spooled", counted)
    before = spools()
    events, counts = read_in_segments(path, fmt, segment_bytes)
    assert sum(spooled) == len(text.encode()) and len(spooled) > 1
    assert (events, counts) == read_whole(path, fmt)
    stats = json.loads(counts)
    assert stats["corrupt_lines"] and stats["truncated_last_line"] == [path.name]
    assert all(e[2] == path.name for e in events)
    assert spools() == before


@FORKED
def test_a_failing_worker_on_a_compressed_file_leaves_no_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> tuple[list[Event], None]:
        raise OSError("disk gone")

    path = tmp_path / "rollout.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(damaged(CODEX, CODEX_ODD).encode()))
    monkeypatch.setattr(type(READERS["codex"]), "read_range", broken)
    before = spools()
    with pytest.raises(OSError, match="disk gone"):
        list(read_in_segments(path, "codex", 300)[0])
    assert spools() == before


def test_claude_subagents_follow_the_segmented_session() -> None:
    path = CLAUDE[2]
    events, counts = read_in_segments(path, "claude", 500)
    assert (events, counts) == read_whole(path, "claude")
    assert any(e[0] is EventKind.SUBAGENT_START for e in events)


def test_small_and_single_core_reads_start_no_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_workers(*args: object) -> None:
        raise AssertionError("workers were started")

    monkeypatch.setattr(parallel, "_segmented", no_workers)
    zst = FIXTURES / "codex" / "rollout-2026-11-21T09-00-00-compressed.jsonl.zst"
    gemini = FIXTURES / "gemini" / "session-2026-11-22T08-00-7c1e2d3f.jsonl"
    reads = [
        parallel.read_events(CODEX[0], "codex", ReadState(format=""), workers=2),  # small
        parallel.read_events(zst, "codex", ReadState(format=""), workers=2),  # small, compressed
        parallel.read_events(CODEX[0], "codex", ReadState(format=""), workers=1, min_bytes=0),
        parallel.read_events(gemini, "gemini", ReadState(format=""), workers=2, min_bytes=0),
    ]
    assert all(list(events) for events in reads)


@FORKED
def test_a_failing_worker_fails_the_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> tuple[list[Event], None]:
        raise OSError("disk gone")

    monkeypatch.setattr(type(READERS["codex"]), "read_range", broken)  # forked workers inherit it
    with pytest.raises(OSError, match="disk gone") as caught:
        list(
            parallel.read_events(
                CODEX[0], "codex", ReadState(format="codex"), workers=2, min_bytes=0
            )
        )
    where = "".join(getattr(caught.value, "__notes__", []))
    assert "raised in an audit worker process" in where and "in broken" in where


@FORKED
def test_a_worker_exception_that_cannot_travel_arrives_as_its_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class LocalError(Exception):  # a local class: pickle cannot find it again
        pass

    def broken(*args: object) -> tuple[list[Event], None]:
        raise LocalError("parser state lost")

    monkeypatch.setattr(type(READERS["codex"]), "read_range", broken)
    with pytest.raises(
        RuntimeError, match=r"(?s)audit worker failed.*LocalError: parser state lost"
    ):
        list(
            parallel.read_events(
                CODEX[0], "codex", ReadState(format="codex"), workers=2, min_bytes=0
            )
        )


class TwoArgumentError(Exception):
    """Pickles, but cannot be rebuilt from what it pickles (its one argument)."""

    def __init__(self, what: str, where: str) -> None:
        super().__init__(f"{what} at {where}")


@FORKED
def test_a_worker_exception_that_cannot_be_rebuilt_fails_the_read_saying_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> tuple[list[Event], None]:
        raise TwoArgumentError("bad offset", "line 3")

    monkeypatch.setattr(type(READERS["codex"]), "read_range", broken)
    with pytest.raises(RuntimeError, match="its error could not be read"):
        list(
            parallel.read_events(
                CODEX[0], "codex", ReadState(format="codex"), workers=2, min_bytes=0
            )
        )


def _children() -> set[str]:
    pid = os.getpid()
    return set(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


@FORKED
def test_stopping_early_or_finishing_leaves_no_worker_process(tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    big.write_bytes(CODEX[0].read_bytes() * 40)
    before = _children()
    events = parallel.read_events(
        big, "codex", ReadState(format="codex"), workers=2, min_bytes=0, segment_bytes=20_000
    )
    assert next(iter(events)).kind
    assert len(_children() - before) == 2  # the workers, busy with the segments after the first
    events.close()  # type: ignore[attr-defined]
    assert _children() == before
    assert list(
        parallel.read_events(
            big, "codex", ReadState(format="codex"), workers=2, min_bytes=0, segment_bytes=20_000
        )
    )
    assert _children() == before


@FORKED
def test_a_killed_worker_fails_the_read_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def killed(*args: object) -> tuple[list[Event], None]:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
        raise AssertionError("unreachable")

    monkeypatch.setattr(type(READERS["codex"]), "read_range", killed)
    with pytest.raises(WorkerDied, match=r"killed by SIGKILL \(out of memory\?\)"):
        list(
            parallel.read_events(
                CODEX[0], "codex", ReadState(format="codex"), workers=2, min_bytes=0
            )
        )


def test_audit_report_of_a_file_read_in_segments_is_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rollout.jsonl"
    path.write_text(damaged(CODEX, CODEX_ODD, copies=20) + '\n{"type":"cut')

    def report() -> str:
        return run_audit(resolve(str(path)), Settings(), Path("/work/project")).model_dump_json()

    whole = report()
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "SEGMENT_BYTES", 2000)
    monkeypatch.setattr(parallel, "_cores", lambda: 2)
    assert report() == whole


def test_merged_counts_keep_file_order_and_number_lines_through_the_file() -> None:
    first, second, total = ReadState(format="x"), ReadState(format="x"), ReadState(format="x")
    first.lines, second.lines = 10, 5
    for n in range(8):
        first.corrupt("f", n + 1, "bad")
    second.corrupt("f", 2, "bad")
    second.corrupt("f", 3, "bad")
    second.corrupt("f", 4, "bad")
    first.unknown_type("b")
    second.unknown_type("a")
    second.unknown_type("b")
    first.unknown_fields["shape1"] = ["x"]
    first._checked_shapes.update({"shape1", "shape2"})
    second.unknown_fields.update({"shape2": ["later"], "shape3": ["y"]})
    second._checked_shapes.update({"shape2", "shape3"})
    total.merge(first, 0)
    total.merge(second, first.lines)
    stats = total.freeze()
    assert stats.lines == 15 and stats.corrupt_lines == 11
    assert stats.corrupt_examples[-2:] == ["f:12: bad", "f:13: bad"]
    assert stats.unknown_record_types == {"b": 2, "a": 1}
    assert stats.unknown_fields == {"shape1": ["x"], "shape3": ["y"]}


def test_a_process_with_other_threads_reads_in_one_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Forking beside other threads (the broker's, at the end of a session) could leave a lock
    held forever in a worker: such a process reads the file itself."""

    def no_workers(*args: object) -> None:
        raise AssertionError("workers were started")

    monkeypatch.setattr(parallel, "_segmented", no_workers)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        events = parallel.read_events(
            CODEX[0], "codex", ReadState(format=""), workers=2, min_bytes=0
        )
        assert list(events)
    finally:
        stop.set()
        other.join()
