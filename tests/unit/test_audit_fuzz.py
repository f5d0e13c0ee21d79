"""Any bytes, any damage: the audit gives a report or one clear error, never a traceback.

Every reader is fed damaged copies of real transcripts (random truncation, byte flips, invalid
UTF-8, a huge line, empty, random binary), plus a directory, an unreadable file and damaged
SQLite databases. The outcome must be an :class:`AuditReport` or a :class:`TranscriptError`; any
other exception is a bug. Cases are drawn from a fixed seed, so a failure names a case that
reruns the same way (``FUZZ_SEED`` changes the seed, ``FUZZ_CASES`` the number per seed file).
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from framework.audit.audit import resolve, run_audit
from framework.audit.readers import TranscriptError
from framework.audit.report import AuditReport
from framework.cli import app
from framework.config import Settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"
SEEDS = {
    "claude": FIXTURES / "real" / "claude" / "write-and-run.jsonl",
    "claude-hostile": FIXTURES / "real" / "claude" / "hostile.jsonl",
    "codex": FIXTURES / "real" / "codex" / "write-and-run.jsonl",
    "gemini": FIXTURES / "real" / "gemini" / "write-and-run.jsonl",
    "gemini-legacy": FIXTURES / "gemini" / "session-2026-11-22T07-00-legacy.json",
    "codex-zst": FIXTURES / "codex" / "rollout-2026-11-21T09-00-00-compressed.jsonl.zst",
}
SEED = int(os.environ.get("FUZZ_SEED", "19"))
CASES = int(os.environ.get("FUZZ_CASES", "500"))
Mutation = Callable[[random.Random, bytes], bytes]


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def flip_bytes(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def invalid_utf8(rng: random.Random, data: bytes) -> bytes:
    """Bytes that are not UTF-8 inside a string value (after a quote)."""
    quotes = [i for i, b in enumerate(data) if b == 34]  # '"'
    at = rng.choice(quotes) + 1 if quotes else 0
    return data[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88"]) + data[at:]


def structural(rng: random.Random, data: bytes) -> bytes:
    """JSON that parses but has the wrong shapes: values swapped for others of another type."""
    swaps = [b"null", b"[]", b"{}", b"1e400", b"-1", b'"x"', b"true", b"[[[[[[[[[[]]]]]]]]]]"]
    out = data
    for _ in range(rng.randint(1, 4)):
        at = out.find(b":", rng.randrange(len(out)))
        if at < 0:
            break
        end = at + 1
        while end < len(out) and out[end : end + 1] not in (b",", b"}", b"\n"):
            end += 1
        out = out[: at + 1] + rng.choice(swaps) + out[end:]
    return out


def huge_line(rng: random.Random, data: bytes) -> bytes:
    """A first line longer than format detection reads (1 MiB), valid JSON or not."""
    pad = b"x" * ((1 << 20) + rng.randrange(4096))
    lines = data.split(b"\n", 1)
    first = lines[0]
    if first.endswith(b"}") and rng.random() < 0.5:
        first = first[:-1] + b',"padding":"' + pad + b'"}'
    else:
        first = pad + first
    return b"\n".join([first, *lines[1:]])


def nesting(rng: random.Random, data: bytes) -> bytes:
    depth = rng.choice([100, 10_000, 200_000])
    return b'{"type":"user","message":' + b"[" * depth + b"]" * depth + b"}\n" + data


def shuffled_lines(rng: random.Random, data: bytes) -> bytes:
    lines = data.split(b"\n")
    rng.shuffle(lines)
    return b"\n".join(lines)


def binary(rng: random.Random, data: bytes) -> bytes:
    return rng.randbytes(rng.randrange(1, 4096))


MUTATIONS: list[Mutation] = [
    truncate,
    flip_bytes,
    invalid_utf8,
    structural,
    huge_line,
    nesting,
    shuffled_lines,
    binary,
]


def audit_or_error(path: Path) -> AuditReport | TranscriptError:
    """What a caller of the library gets: a report, or the one error type it must handle."""
    try:
        return run_audit(resolve(str(path)), Settings(), path.parent)
    except TranscriptError as exc:
        return exc


def _cases(name: str) -> list[tuple[int, Mutation]]:
    rng = random.Random(f"{SEED}:{name}")
    return [(rng.randrange(1 << 30), rng.choice(MUTATIONS)) for _ in range(CASES)]


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_damaged_transcripts_give_a_report_or_a_clear_error_never_a_traceback(
    tmp_path: Path, name: str
) -> None:
    seed = SEEDS[name]
    original = seed.read_bytes()
    failures = []
    for number, (case_seed, mutate) in enumerate(_cases(name)):
        rng = random.Random(case_seed)
        damaged = mutate(rng, original)  # a .zst seed: damage to the compressed frame
        path = tmp_path / f"case{number}{''.join(seed.suffixes)}"
        path.write_bytes(damaged)
        try:
            outcome = audit_or_error(path)
        except Exception as exc:  # the property under test: nothing else escapes
            failures.append(f"case {number} ({mutate.__name__}, seed {case_seed}): {exc!r}")
            continue
        finally:
            path.unlink()
        if isinstance(outcome, TranscriptError):
            assert str(outcome), "an error must say what was wrong"
    assert failures == []


def test_an_empty_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    assert isinstance(audit_or_error(path), TranscriptError)


def test_a_directory_without_transcripts_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    outcome = audit_or_error(tmp_path / "notes")
    assert isinstance(outcome, TranscriptError) and "no transcript files" in str(outcome)


def test_an_unreadable_file_is_one_clear_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "locked.jsonl"
    path.write_bytes(SEEDS["claude"].read_bytes())
    _deny(path, monkeypatch)
    outcome = audit_or_error(path)
    assert isinstance(outcome, TranscriptError)
    assert "locked.jsonl" in str(outcome) and "cannot be read" in str(outcome)


def test_a_file_that_becomes_unreadable_after_detection_is_a_finding_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Detection read it; reading it then fails (permission changed, disk error): a report."""
    path = tmp_path / "later.jsonl"
    path.write_bytes(SEEDS["claude"].read_bytes())
    source = resolve(str(path))
    _deny(path, monkeypatch)
    report = run_audit(source, Settings(), tmp_path)
    (finding,) = [f for f in report.findings if f.check == "transcript-unreadable"]
    assert "later.jsonl:0: PermissionError" in finding.message


def _deny(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``path`` unreadable: by its mode, or (as root, whom modes do not stop) by refusing
    to open it, the way the kernel would."""
    path.chmod(0)
    if os.geteuid() != 0:
        return
    real_open = Path.open

    def refusing_open(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", refusing_open)


@pytest.fixture
def opencode_db(tmp_path: Path) -> bytes:
    db = tmp_path / "seed.db"
    with sqlite3.connect(db) as con:
        con.executescript((FIXTURES / "real" / "opencode" / "write-and-run.sql").read_text())
    con.close()
    return db.read_bytes()


def test_damaged_opencode_databases_give_a_report_or_a_clear_error(
    tmp_path: Path, opencode_db: bytes
) -> None:
    rng = random.Random(f"{SEED}:opencode")
    failures = []
    for number in range(CASES):
        mutate = rng.choice([truncate, flip_bytes, invalid_utf8, binary])
        damaged = mutate(random.Random(number), opencode_db)
        path = tmp_path / f"case{number}" / "opencode.db"
        path.parent.mkdir()
        path.write_bytes(damaged)
        try:
            audit_or_error(path)
        except Exception as exc:
            failures.append(f"case {number} ({mutate.__name__}): {exc!r}")
    assert failures == []


def test_hostile_values_in_an_opencode_database_give_a_report(tmp_path: Path) -> None:
    """Well-formed SQLite, hostile content: blobs, numbers and invalid UTF-8 where JSON text is."""
    path = tmp_path / "opencode.db"
    with sqlite3.connect(path) as con:
        con.executescript(
            "CREATE TABLE message (id TEXT, session_id TEXT, time_created INT, data);"
            "CREATE TABLE part (id TEXT, message_id TEXT, time_created INT, data);"
        )
        values = [b"\xff\xfe{", 7, None, "[]", '{"role":"assistant","tokens":{"input":"x"}}']
        for n, value in enumerate(values):
            con.execute("INSERT INTO message VALUES (?, 's', ?, ?)", (f"m{n}", n, value))
            con.execute("INSERT INTO part VALUES (?, ?, ?, ?)", (f"p{n}", f"m{n}", n, value))
    con.close()
    outcome = audit_or_error(path)
    assert isinstance(outcome, AuditReport)
    assert outcome.reader.corrupt_lines > 0


@pytest.mark.parametrize("mutate", [truncate, flip_bytes, invalid_utf8, binary, huge_line])
def test_the_cli_exits_0_or_2_on_damaged_input_never_with_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mutate: Mutation
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "t.jsonl"
    path.write_bytes(mutate(random.Random(SEED), SEEDS["codex"].read_bytes()))
    result = CliRunner().invoke(app, ["audit", str(path), "--format", "json"])
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
