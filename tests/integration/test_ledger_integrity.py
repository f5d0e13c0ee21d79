"""The ledger against a hostile or crashing world, on the real SQLite file: raw edits by someone
who dropped the triggers, a writer killed with SIGKILL mid-append, and several processes
appending at once."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from framework.ledger import Ledger, NewEvent, open_ledger
from framework.ledger.store import canonical_body
from tests.support import REPO_ROOT


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/ledger.sqlite"


@pytest.fixture
def ledger(url: str) -> Iterator[Ledger]:
    with open_ledger(url) as opened:
        for i in range(1, 6):
            opened.append(
                "run_submitted", run_id=f"r{i}", payload={"experiment": "e", "params": {"i": i}}
            )
        opened.head()  # a read folds the tail into the tables, which these tests edit
        yield opened


def raw(url: str) -> sqlite3.Connection:
    """A plain connection, as an attacker with write access to the file would use it."""
    return sqlite3.connect(url.removeprefix("sqlite://"), isolation_level=None)


def drop_triggers(conn: sqlite3.Connection) -> None:
    conn.execute("DROP TRIGGER ledger_events_no_update")
    conn.execute("DROP TRIGGER ledger_events_no_delete")


def broken_seqs(ledger: Ledger) -> list[int | None]:
    report = ledger.verify()
    assert not report.ok
    return [p.seq for p in report.problems]


def test_database_refuses_update_and_delete_of_events(ledger: Ledger, url: str) -> None:
    conn = raw(url)
    with pytest.raises(sqlite3.IntegrityError, match="append-only: UPDATE is refused"):
        conn.execute("UPDATE ledger_events SET hash = 'x' WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only: DELETE is refused"):
        conn.execute("DELETE FROM ledger_events WHERE seq = 2")
    assert ledger.verify().ok


def test_verify_names_an_edited_event(ledger: Ledger, url: str) -> None:
    conn = raw(url)
    drop_triggers(conn)
    body = conn.execute("SELECT body FROM ledger_events WHERE seq = 3").fetchone()[0]
    conn.execute(
        "UPDATE ledger_events SET body = ? WHERE seq = 3", (body.replace(b'"i":3', b'"i":9'),)
    )
    report = ledger.verify()
    assert not report.ok
    assert report.problems[0].seq == 3
    assert "edited" in report.problems[0].problem


def test_verify_catches_an_edit_whose_hash_was_recomputed(ledger: Ledger, url: str) -> None:
    conn = raw(url)
    drop_triggers(conn)
    body = conn.execute("SELECT body FROM ledger_events WHERE seq = 3").fetchone()[0]
    forged = body.replace(b'"i":3', b'"i":9')
    conn.execute(
        "UPDATE ledger_events SET body = ?, hash = ? WHERE seq = 3",
        (forged, hashlib.sha256(forged).hexdigest()),
    )
    assert broken_seqs(ledger)[0] == 4


def test_verify_catches_a_deleted_event(ledger: Ledger, url: str) -> None:
    conn = raw(url)
    drop_triggers(conn)
    conn.execute("DELETE FROM ledger_events WHERE seq = 2")
    report = ledger.verify()
    assert not report.ok
    assert report.problems[0].seq == 3
    assert "events 2..2 are missing" in report.problems[0].problem


def test_verify_catches_events_cut_from_the_end(ledger: Ledger, url: str) -> None:
    conn = raw(url)
    drop_triggers(conn)
    conn.execute("DELETE FROM ledger_events WHERE seq >= 4")
    report = ledger.verify()
    assert not report.ok
    ledger_wide = [p.problem for p in report.problems if p.seq is None and p.run_id is None]
    assert "cut from the end" in ledger_wide[-1]


def test_verify_catches_reordered_events(ledger: Ledger, url: str) -> None:
    conn = raw(url)
    drop_triggers(conn)
    conn.execute("UPDATE ledger_events SET seq = -1 WHERE seq = 2")
    conn.execute("UPDATE ledger_events SET seq = 2 WHERE seq = 3")
    conn.execute("UPDATE ledger_events SET seq = 3 WHERE seq = -1")
    report = ledger.verify()
    assert not report.ok
    assert report.problems[0].seq == 2
    assert "reordered" in report.problems[0].problem


def test_verify_catches_a_forged_event_inserted_in_the_middle(ledger: Ledger, url: str) -> None:
    conn = raw(url)
    drop_triggers(conn)
    prev = conn.execute("SELECT hash FROM ledger_events WHERE seq = 2").fetchone()[0]
    conn.execute("UPDATE ledger_events SET seq = seq + 1000 WHERE seq >= 3")
    conn.execute("UPDATE ledger_events SET seq = seq - 999 WHERE seq >= 1003")
    ts = conn.execute("SELECT ts FROM ledger_events WHERE seq = 2").fetchone()[0]
    body = canonical_body(
        seq=3, ts=ts, kind="run_finished", run_id="r1", session_id=None, payload={}, prev_hash=prev
    )
    conn.execute(
        "INSERT INTO ledger_events (seq, body, hash) VALUES (3, ?, ?)",
        (body, hashlib.sha256(body).hexdigest()),
    )
    assert broken_seqs(ledger)[0] == 4


def test_indexed_columns_are_derived_from_the_hashed_body_and_cannot_be_changed(
    ledger: Ledger, url: str
) -> None:
    conn = raw(url)
    drop_triggers(conn)
    with pytest.raises(sqlite3.OperationalError, match="cannot UPDATE generated column"):
        conn.execute("UPDATE ledger_events SET run_id = 'someone-else' WHERE seq = 4")
    assert [e.run_id for e in ledger.events(run_id="r4")] == ["r4"]
    assert ledger.verify().ok


def test_verify_catches_a_rebuilt_table_whose_indexed_column_disagrees_with_the_body(
    ledger: Ledger, url: str
) -> None:
    """Someone replaces the events table by one with plain columns, so that they can be edited."""
    conn = raw(url)
    conn.executescript(
        """
        BEGIN;
        CREATE TABLE forged AS SELECT seq, ts, kind, run_id, session_id, body, hash FROM ledger_events;
        DROP TABLE ledger_events;
        CREATE TABLE ledger_events (seq INTEGER PRIMARY KEY, ts TEXT, kind TEXT, run_id TEXT,
                                    session_id TEXT, body BLOB, hash TEXT);
        INSERT INTO ledger_events SELECT * FROM forged;
        DROP TABLE forged;
        UPDATE ledger_events SET run_id = 'someone-else' WHERE seq = 4;
        COMMIT;
        """
    )
    report = ledger.verify()
    assert [p.seq for p in report.problems if p.run_id is None] == [4]
    assert "indexed columns" in report.problems[0].problem
    # Read by the column, the event now belongs to another run: the replay says so too.
    assert {p.run_id for p in report.problems} == {None, "r4", "someone-else"}


def test_a_ledger_with_stored_index_columns_still_appends_and_verifies(tmp_path: Path) -> None:
    """Ledgers created before the columns were derived from the body keep working."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE ledger_events (seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, kind TEXT NOT NULL, "
        "run_id TEXT, session_id TEXT, body BLOB NOT NULL, hash TEXT NOT NULL)"
    )
    conn.close()
    with open_ledger(f"sqlite:///{path}") as ledger:
        ledger.append("run_submitted", run_id="r1", session_id="s1", payload={"experiment": "e"})
        ledger.append_many([NewEvent("run_finished", "r1", None, {"exit_code": 0})])
        assert [e.kind for e in ledger.events(run_id="r1")] == ["run_submitted", "run_finished"]
        assert ledger.verify().ok
    conn = raw(f"sqlite:///{path}")
    drop_triggers(conn)
    conn.execute("UPDATE ledger_events SET session_id = 's2' WHERE seq = 1")
    conn.close()
    with open_ledger(f"sqlite:///{path}") as ledger:
        assert [p.seq for p in ledger.verify().problems] == [1]


WRITER = textwrap.dedent(
    """
    import sys
    import threading
    from framework.ledger import NewEvent, open_ledger
    from framework.ledger import sqlite

    sqlite.FOLD_AT_BYTES = int(sys.argv[3])
    ledger = open_ledger(sys.argv[1])
    name = sys.argv[2]
    printing = threading.Lock()

    def write(thread):
        i = 0
        while True:
            if i % 3 == 0:
                batch = [NewEvent("run_submitted", f"{name}-{thread}-{i}-{j}", None, {"experiment": "crash"}) for j in range(50)]
                acked = ledger.append_many(batch)
            else:
                acked = [ledger.append("run_submitted", run_id=f"{name}-{thread}-{i}", payload={"experiment": "crash"})]
            with printing:
                for event in acked:
                    print(event.seq, event.hash, flush=True)
            i += 1

    for thread in range(4):  # concurrent appends share commits (group commit)
        threading.Thread(target=write, args=(thread,), daemon=True).start()
    threading.Event().wait()
    """
)


@pytest.mark.parametrize(
    ("sync", "fold_at_bytes"), [("default", 1 << 20), ("default", 4096), ("full", 1 << 20)]
)
def test_events_acknowledged_before_a_sigkill_all_survive_and_the_chain_verifies(
    url: str, sync: str, fold_at_bytes: int
) -> None:
    """The default sync level (normal) is the one this guarantee is about; full must keep it too.
    Acknowledged events live in the tail file until a fold moves them into the tables: with a
    small fold threshold the kills also land in the middle of folds."""
    if sync == "full":
        url += "?sync=full"
    acked: dict[int, str] = {}
    for round_no in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, url, f"w{round_no}", str(fold_at_bytes)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            seq, digest = line.split()
            acked[int(seq)] = digest
            if len(acked) >= 600 * (round_no + 1):
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        proc.stdout.close()

    with open_ledger(url) as ledger:
        report = ledger.verify()
        assert report.ok, report.problems
        stored = {e.seq: e.hash for e in ledger.events()}
    missing = {seq: digest for seq, digest in acked.items() if stored.get(seq) != digest}
    assert not missing, f"acknowledged events lost or changed: {sorted(missing)[:10]}"
    assert report.events >= len(acked)


APPENDER = textwrap.dedent(
    """
    import sys
    from framework.ledger import NewEvent, open_ledger

    with open_ledger(sys.argv[1]) as ledger:
        name = sys.argv[2]
        for i in range(100):
            if i % 10 == 0:
                ledger.append_many([NewEvent("run_submitted", f"{name}-b{i}-{j}", None, {"experiment": "c"}) for j in range(10)])
            ledger.append("run_submitted", run_id=f"{name}-{i}", payload={"experiment": "c"})
            ledger.append("run_finished", run_id=f"{name}-{i}", payload={"exit_code": 0})
    """
)


def test_concurrent_processes_append_every_event_once_on_one_valid_chain(url: str) -> None:
    open_ledger(url).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, url, f"p{n}"],
            cwd=REPO_ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    with open_ledger(url) as ledger:
        report = ledger.verify()
        assert report.ok, report.problems
        assert report.events == 4 * (100 * 2 + 10 * 10)
        runs = ledger.runs(experiment="c")
        assert len(runs) == 4 * (100 + 100)
        assert len({r.run_id for r in runs}) == len(runs)
        assert sum(r.state == "finished" for r in runs) == 400


def test_many_batches_of_writers_leave_no_gap_in_seq(url: str) -> None:
    with open_ledger(url) as ledger:
        for b in range(5):
            ledger.append_many(
                [NewEvent("run_submitted", f"g{b}-{i}", None, {}) for i in range(200)]
            )
        seqs = [e.seq for e in ledger.events()]
    assert seqs == list(range(1, 1001))


@pytest.mark.parametrize("edited_seq", [5, 20, 21, 35])
def test_verify_shares_a_large_chain_with_a_helper_process_and_catches_edits_in_either_half(
    url: str, edited_seq: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from framework.ledger import sqlite as sqlite_backend

    monkeypatch.setattr(sqlite_backend, "SPLIT_CHAIN_MIN_EVENTS", 10)
    with open_ledger(url) as ledger:
        ledger.append_many(
            [NewEvent("run_submitted", f"r{i}", None, {"params": {"i": i}}) for i in range(40)]
        )
        ledger.head()  # folds the tail into the table the helper reads
        helper = ledger._split_chain(40)  # type: ignore[attr-defined]
        assert helper is not None and helper.first_seq == 21
        assert helper.result() == ledger.head()
        report = ledger.verify()
        assert report.ok and (report.events, report.head_hash) == (40, ledger.head()[1])

        conn = raw(url)
        drop_triggers(conn)
        body = conn.execute(
            "SELECT body FROM ledger_events WHERE seq = ?", (edited_seq,)
        ).fetchone()[0]
        forged = body.replace(b'"params":{"i":', b'"params":{"i":1')
        conn.execute(
            "UPDATE ledger_events SET body = ?, hash = ? WHERE seq = ?",
            (forged, hashlib.sha256(forged).hexdigest(), edited_seq),
        )
        assert broken_seqs(ledger)[0] == edited_seq + 1


def test_verify_falls_back_to_the_exact_pass_when_the_helper_process_fails(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from framework.ledger import sqlite as sqlite_backend

    monkeypatch.setattr(sqlite_backend, "SPLIT_CHAIN_MIN_EVENTS", 10)
    monkeypatch.setattr(sqlite_backend.sys, "executable", "/nonexistent/python")
    with open_ledger(url) as ledger:
        ledger.append_many([NewEvent("run_submitted", f"r{i}", None, {}) for i in range(40)])
        ledger.head()  # folds the tail into the table the helper would read
        assert ledger._split_chain(40) is None  # type: ignore[attr-defined]
        report = ledger.verify()
    assert report.ok and report.events == 40


@pytest.mark.parametrize(
    ("renumber", "split"),
    [
        ({1: 0}, False),  # the first event moved before seq 1: seqs 0, 2, 3, ...
        ({4: 6, 5: 7}, False),  # the last events moved on: a gap where seqs 4..5 were
        ({25: 100, 30: 101}, True),  # a gap in the helper's half, chain order kept
        ({1: -5}, True),  # a row below seq 1 while a helper walks the second half
    ],
)
def test_verify_catches_renumbered_seqs_that_keep_the_chain_in_order(
    url: str, renumber: dict[int, int], split: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast walk reads bodies and hashes, not seqs: it must still refuse seqs that do not
    run 1, 2, 3, ... even when the rows stay in chain order."""
    from framework.ledger import sqlite as sqlite_backend

    if split:
        monkeypatch.setattr(sqlite_backend, "SPLIT_CHAIN_MIN_EVENTS", 10)
    total = 40 if split else 5
    with open_ledger(url) as ledger:
        ledger.append_many([NewEvent("run_submitted", f"r{i}", None, {}) for i in range(total)])
        ledger.head()
        conn = raw(url)
        drop_triggers(conn)
        for old, new in sorted(renumber.items(), reverse=True):
            conn.execute("UPDATE ledger_events SET seq = ? WHERE seq = ?", (new, old))
        if max(renumber.values()) > total:  # keep the head pointing at the true last event
            conn.execute("UPDATE ledger_head SET seq = ? WHERE id = 1", (max(renumber.values()),))
        report = ledger.verify()
        assert not report.ok, renumber
