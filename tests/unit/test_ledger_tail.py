"""The SQLite ledger's tail file: appends are acknowledged once written there, every reader sees
them, a write cut short by a killed writer is dropped whole, damage is reported by verify, and the
fold into the tables happens once per event whatever dies when."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from framework.dispatch.local import pid_alive
from framework.ledger import Ledger, LedgerError, NewEvent, open_ledger
from framework.ledger import sqlite as sqlite_backend
from framework.ledger import tail as tail_module
from framework.ledger.sqlite import tail_path


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/ledger.sqlite"


@pytest.fixture
def ledger(url: str) -> Iterator[Ledger]:
    with open_ledger(url) as opened:
        yield opened


def table_seqs(url: str) -> list[int]:
    conn = sqlite3.connect(url.removeprefix("sqlite://"))
    try:
        return [row[0] for row in conn.execute("SELECT seq FROM ledger_events ORDER BY seq")]
    finally:
        conn.close()


def tail_bytes(url: str) -> bytes:
    return tail_path(Path(url.removeprefix("sqlite://"))).read_bytes()


def submit(ledger: Ledger, run_id: str) -> None:
    ledger.append("run_submitted", run_id=run_id, payload={"experiment": "tail"})


def test_an_acknowledged_append_is_in_the_tail_file_before_any_table(
    ledger: Ledger, url: str
) -> None:
    event = ledger.append("run_submitted", run_id="r1", payload={"experiment": "tail"})
    assert table_seqs(url) == []
    assert event.hash.encode() not in tail_bytes(url)  # the body is stored, its hash recomputed
    assert b'"run_id":"r1"' in tail_bytes(url)


def test_another_ledger_on_the_same_file_reads_events_still_in_the_tail(
    ledger: Ledger, url: str
) -> None:
    submit(ledger, "r1")
    ledger.append("run_finished", run_id="r1", payload={"exit_code": 0})
    with open_ledger(url) as reader:
        assert reader.run("r1").state == "finished"
        assert [e.seq for e in reader.events()] == [1, 2]
        assert reader.head() == ledger.head()
    assert table_seqs(url) == [1, 2]  # the reader folded them


def test_writers_on_separate_descriptors_chain_onto_each_others_events_across_folds(
    ledger: Ledger, url: str
) -> None:
    """Each open ledger has its own descriptor and lock, as separate processes do. Another one
    folding the tail and refilling it to the very size this one last saw must not make this one
    chain onto a stale head."""
    with open_ledger(url) as other:
        submit(ledger, "a1")
        size = len(tail_bytes(url))
        other.head()  # folds the tail...
        submit(other, "b1")  # ...and refills it with an event of the same size
        assert len(tail_bytes(url)) == size
        submit(ledger, "a2")
        with pytest.raises(LedgerError, match="already in the ledger"):
            submit(other, "a2")  # only in the tail, written through the other descriptor
        with pytest.raises(LedgerError, match="already in the ledger"):
            submit(ledger, "a1")  # only in the tables
    report = ledger.verify()
    assert report.ok, report.problems
    assert report.events == 3
    assert [r.run_id for r in ledger.runs()] == ["a1", "b1", "a2"]


def test_an_append_cut_short_by_a_killed_writer_is_dropped_whole(ledger: Ledger, url: str) -> None:
    submit(ledger, "r1")
    path = tail_path(Path(url.removeprefix("sqlite://")))
    before = path.read_bytes()
    ledger.append_many([NewEvent("run_submitted", f"cut{i}", None, {}) for i in range(2)])
    written = path.read_bytes()
    # What a writer killed while writing that batch may leave: its first event, whole.
    path.write_bytes(written[: written.index(b"\n", len(before)) + 1])
    with open_ledger(url) as reader:
        assert [e.run_id for e in reader.events()] == ["r1"]
        assert reader.append("run_submitted", run_id="cut0", payload={}).seq == 2
        assert reader.verify().ok


def test_a_header_cut_short_by_a_killed_writer_is_dropped(url: str) -> None:
    with open_ledger(url) as ledger:
        submit(ledger, "r1")
    path = tail_path(Path(url.removeprefix("sqlite://")))
    path.write_bytes(b"ledger-tail after 0000")
    with open_ledger(url) as ledger:
        assert ledger.append("run_submitted", run_id="r2", payload={}).seq == 2
        assert ledger.verify().ok


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda data: data.replace(b'"experiment":"tail"', b'"experiment":"fake"', 1), "damaged"),
        (lambda data: data.replace(b'"seq":2', b'"seq":7', 1), "damaged"),
        (lambda data: b"not a header" + data[12:], "does not start with its header"),
    ],
)
def test_verify_reports_an_edited_tail_and_nothing_of_it_is_folded(
    ledger: Ledger, url: str, edit: Callable[[bytes], bytes], message: str
) -> None:
    for i in range(3):
        submit(ledger, f"r{i}")
    path = tail_path(Path(url.removeprefix("sqlite://")))
    path.write_bytes(edit(path.read_bytes()))
    with open_ledger(url) as reader:
        report = reader.verify()
        assert not report.ok
        assert any(message in p.problem for p in report.problems), report.problems
        with pytest.raises(LedgerError, match=message):
            reader.runs()
    assert table_seqs(url) == []


def test_a_fold_committed_by_a_process_that_died_before_emptying_the_tail_is_not_repeated(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_ledger(url) as ledger:
        submit(ledger, "r1")
        ledger.append("run_finished", run_id="r1", payload={"exit_code": 0})
        # Die between the commit of the fold and the truncation of the tail.
        monkeypatch.setattr(ledger._tail, "clear", lambda: None)  # type: ignore[attr-defined]
        ledger.head()
        monkeypatch.undo()
        assert table_seqs(url) == [1, 2]
        assert b'"run_finished"' in tail_bytes(url)
    with open_ledger(url) as ledger:
        assert ledger.append("run_submitted", run_id="r2", payload={}).seq == 3
        assert [e.seq for e in ledger.events()] == [1, 2, 3]
        assert ledger.run("r1").state == "finished"
        assert ledger.verify().ok


def test_the_appender_folds_a_large_tail_itself_without_a_background_folder(
    ledger: Ledger, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_backend, "FOLD_AT_BYTES", 2_000)
    monkeypatch.setattr(ledger, "background_fold", False)
    for i in range(30):
        submit(ledger, f"r{i}")
    folded = table_seqs(url)
    assert 0 < len(folded) < 30  # folded by appends, with no reader involved
    assert folded == list(range(1, len(folded) + 1))
    assert len(tail_bytes(url)) < 2_000 + 500
    assert getattr(ledger, "_folder", None) is None


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_large_tail_is_folded_by_a_background_process_while_appends_go_on(
    ledger: Ledger, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_backend, "FOLD_AT_BYTES", 2_000)
    monkeypatch.setattr(sqlite_backend, "WAKE_EVERY_BYTES", 1)
    for i in range(30):
        submit(ledger, f"r{i}")
    folder = ledger._folder  # type: ignore[attr-defined]
    assert folder is not None and folder.alive()
    # No reader and no further append: the folder process alone moves the events into the tables.
    assert wait_for(lambda: len(table_seqs(url)) >= 25)
    folded = table_seqs(url)
    assert folded == list(range(1, len(folded) + 1))
    assert [e.seq for e in ledger.events()] == list(range(1, 31))
    ledger.close()
    assert not folder.alive()  # closing the ledger ends and reaps its folder
    assert table_seqs(url) == list(range(1, 31)) and tail_bytes(url) == b""
    with open_ledger(url) as again:
        assert again.verify().ok


def test_a_folder_whose_ledger_process_was_killed_folds_everything_and_exits(
    url: str, tmp_path: Path
) -> None:
    script = (
        "import os, sys\n"
        "from framework.ledger import open_ledger, sqlite\n"
        "sqlite.FOLD_AT_BYTES = 2_000\n"
        "ledger = open_ledger(sys.argv[1])\n"
        "for i in range(60):\n"
        "    ledger.append('run_submitted', run_id=f'r{i}', payload={'experiment': 'e'})\n"
        "print(ledger._folder._proc.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, url], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -9, proc.stderr
    folder_pid = int(proc.stdout.split()[0])
    assert wait_for(lambda: not pid_alive(folder_pid))  # its input closed with its owner
    assert table_seqs(url) == list(range(1, 61)) and tail_bytes(url) == b""


def test_a_folder_that_cannot_start_leaves_the_folding_to_the_appenders(
    ledger: Ledger, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_backend, "FOLD_AT_BYTES", 2_000)
    monkeypatch.setattr(sqlite_backend.sys, "executable", "/nonexistent/python")
    for i in range(30):
        submit(ledger, f"r{i}")
    assert ledger.background_fold is False  # type: ignore[attr-defined]
    assert 0 < len(table_seqs(url)) < 30 and len(tail_bytes(url)) < 2_000 + 500


def test_appenders_fold_themselves_when_the_background_folder_falls_behind(
    ledger: Ledger, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_backend, "FOLD_AT_BYTES", 2_000)
    monkeypatch.setattr(sqlite_backend, "FOLD_LIMIT_BYTES", 3_000)
    monkeypatch.setattr(sqlite_backend._Folder, "wake", lambda self, size: None)  # never woken
    for i in range(30):
        submit(ledger, f"r{i}")
    assert len(tail_bytes(url)) < 3_000 + 500  # the appenders folded past the limit
    assert len(table_seqs(url)) >= 20


def test_closing_folds_the_tail_so_the_database_file_alone_holds_every_event(url: str) -> None:
    with open_ledger(url) as ledger:
        submit(ledger, "r1")
    assert table_seqs(url) == [1]
    assert tail_bytes(url) == b""


@pytest.mark.parametrize(("suffix", "fsyncs"), [("", 0), ("?sync=full", 3)])
def test_sync_full_fsyncs_every_tail_write_and_normal_none(
    url: str, suffix: str, fsyncs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(tail_module.os, "fdatasync", calls.append)
    with open_ledger(url + suffix) as ledger:
        for i in range(3):
            submit(ledger, f"r{i}")
        assert len(calls) == fsyncs


SECOND_PROCESS = """
import os, sys
from framework.ledger import open_ledger

ledger = open_ledger(sys.argv[1])
ledger.append("run_submitted", run_id="folded", payload={"experiment": "tail"})
ledger.head()  # folds it into the tables
ledger.append("run_submitted", run_id="in-tail", payload={"experiment": "tail"})
os._exit(0)  # dies without closing: "in-tail" stays in the tail file
"""


def test_duplicate_submission_from_a_second_process_is_still_refused(
    ledger: Ledger, url: str
) -> None:
    """This ledger reads the runs it knows of once; a run another process submitted afterwards
    is refused here whether that process folded it into the tables or left it in the tail."""
    submit(ledger, "mine")  # reads the known runs now
    subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, url],
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    for run_id in ("mine", "folded", "in-tail"):
        with pytest.raises(LedgerError, match="already in the ledger"):
            submit(ledger, run_id)
    submit(ledger, "new")
    assert [r.run_id for r in ledger.runs()] == ["mine", "folded", "in-tail", "new"]
    assert ledger.verify().ok


def test_a_run_folded_by_this_ledger_is_still_refused_without_reading_the_tables_again(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    submit(ledger, "r1")
    ledger.head()  # folds
    queries: list[str] = []
    real = ledger._execute  # type: ignore[attr-defined]
    monkeypatch.setattr(ledger, "_execute", lambda sql, *a: queries.append(sql) or real(sql, *a))
    with pytest.raises(LedgerError, match="already in the ledger"):
        submit(ledger, "r1")
    assert not [q for q in queries if "ledger_runs" in q]


def test_appends_skip_reading_the_tail_while_no_other_process_changed_it(
    ledger: Ledger, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    submit(ledger, "r0")
    reads: list[str] = []
    real_fstat, real_pread = tail_module.os.fstat, tail_module.os.pread
    monkeypatch.setattr(tail_module.os, "fstat", lambda fd: reads.append("fstat") or real_fstat(fd))
    monkeypatch.setattr(
        tail_module.os, "pread", lambda fd, n, at: reads.append("pread") or real_pread(fd, n, at)
    )
    for i in range(1, 5):
        submit(ledger, f"r{i}")
    assert reads == []
    with open_ledger(url) as other:
        submit(other, "o1")  # changes the tail: counted in the version file
    submit(ledger, "r5")  # so this one reads what the other wrote (and chains onto it)
    assert "pread" in reads
    assert ledger.head()[0] == 7
    assert ledger.verify().ok


def test_a_writer_that_dies_after_counting_its_change_makes_the_others_read_the_tail(
    ledger: Ledger, url: str
) -> None:
    """A change is counted before it is made: bytes a killed writer left are seen (and cut off)."""
    submit(ledger, "r1")
    dying = tail_module.Tail(tail_path(Path(url.removeprefix("sqlite://"))), fsync=False)
    with dying.locked():
        dying._changing()
        os.write(dying._fd, b'{"seq":2,"ts":"2026')  # and killed here
    dying.close()
    submit(ledger, "r2")
    assert b'"seq":2,"ts":"2026"' not in tail_bytes(url)
    assert [e.run_id for e in ledger.events()] == ["r1", "r2"]
    assert ledger.verify().ok


def test_the_tail_keeps_its_events_as_bytes_that_the_garbage_collector_does_not_track(
    ledger: Ledger,
) -> None:
    import gc

    submit(ledger, "warm-up")
    gc.collect()
    before = len(gc.get_objects())
    for i in range(300):
        ledger.append("run_submitted", run_id=f"r{i}", payload={"tags": ["a"], "params": {"x": i}})
    tail = ledger._tail  # type: ignore[attr-defined]
    assert len(tail.bodies) == len(tail.digests) == 301
    assert all(type(body) is bytes for body in tail.bodies)
    assert all(type(digest) is str for digest in tail.digests)
    gc.collect()
    assert len(gc.get_objects()) - before < 100  # not one (or more) tracked object per event
    assert [run.run_id for run in ledger.runs()][-1] == "r299"
    assert ledger.run("r7").params == {"x": 7}


def test_a_run_whose_events_are_folded_in_separate_folds_gets_its_whole_state(url: str) -> None:
    with open_ledger(url) as ledger:
        ledger.append("run_submitted", run_id="r1", payload={"experiment": "e", "tags": ["a"]})
        ledger.head()  # fold
        ledger.append("run_started", run_id="r1", payload={"nodes": ["n1"]})
    with open_ledger(url) as other:  # folded by another process, which reads the state
        other.append("run_finished", run_id="r1", payload={"exit_code": 0, "metrics": {"ppl": 3}})
        run = other.run("r1")
    assert (run.state, run.experiment, run.tags, run.nodes) == ("finished", "e", ["a"], ["n1"])
    assert (run.exit_code, run.metrics, run.first_seq, run.last_seq) == (0, {"ppl": 3}, 1, 3)
    assert run.started_at is not None and run.ended_at is not None


def test_an_edited_last_event_in_the_tail_that_is_no_event_body_is_refused_not_folded(
    ledger: Ledger, url: str
) -> None:
    submit(ledger, "r1")
    path = tail_path(Path(url.removeprefix("sqlite://")))
    path.write_bytes(path.read_bytes().replace(b'"payload":{"experiment":"tail"}', b'"payload":5'))
    with open_ledger(url) as reader:
        with pytest.raises(LedgerError, match="tail file"):
            reader.runs()
        assert not reader.verify().ok
    assert table_seqs(url) == []


def test_fold_run_in_place_gives_the_same_state_as_folding_copies() -> None:
    from framework.ledger.models import EventKind, fold_run

    events = [
        (1, "t1", EventKind.run_submitted, {"experiment": "e", "tags": ["a"], "params": {"x": 1}}),
        (2, "t2", EventKind.run_started, {"nodes": ["n1"], "tags": ["b", "a"]}),
        (3, "t3", EventKind.run_finished, {"exit_code": 0, "params": {"y": 2}}),
    ]
    copied: dict | None = None
    owned: dict | None = None
    snapshots = []
    for seq, ts, kind, payload in events:
        copied = fold_run(
            copied, seq=seq, ts=ts, kind=kind, run_id="r", session_id="s", payload=payload
        )
        snapshots.append(dict(copied))
        owned = fold_run(
            owned,
            seq=seq,
            ts=ts,
            kind=kind,
            run_id="r",
            session_id="s",
            payload=payload,
            in_place=True,
        )
        assert owned == copied
    assert snapshots[0]["state"] != snapshots[-1]["state"]  # copies were not changed afterwards


def test_only_the_fold_that_empties_the_tail_forces_an_fsync_of_its_commit(url: str) -> None:
    """Background rounds leave the tail whole, so they commit at the ledger's own level; the
    locked fold that empties the tail raises it to FULL, which also makes the rounds' WAL frames
    durable before the tail is cut."""
    with open_ledger(url) as ledger:
        for i in range(5):
            submit(ledger, f"r{i}")
        folder = sqlite_backend.SqliteLedger.open(url)
        statements: list[str] = []
        folder._conn.set_trace_callback(statements.append)
        try:
            assert folder._fold_round() == 5
            assert not any("synchronous" in s for s in statements)
            assert len(tail_bytes(url)) > 0  # a round does not empty the tail
            submit(ledger, "r5")
            with folder._lock:
                folder._catch_up()
            assert "PRAGMA synchronous = FULL" in statements
            assert tail_bytes(url) == b""
        finally:
            folder.close()
        assert table_seqs(url) == list(range(1, 7))
