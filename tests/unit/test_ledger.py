"""The ledger's contract on the embedded SQLite backend: appends, the run-state view, queries,
payload validation and clear errors. Tamper, crash and concurrency tests are in
tests/integration/test_ledger_integrity.py."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

import pytest

from framework.ledger import (
    EventKind,
    Ledger,
    LedgerError,
    LedgerEvent,
    NewEvent,
    RunStatus,
    open_ledger,
)
from framework.ledger.models import GENESIS_HASH, _validated, validate_payload
from framework.ledger.store import _now, canonical_body, utc_iso


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    with open_ledger(f"sqlite:///{tmp_path}/state/ledger.sqlite") as opened:
        yield opened


def submit(ledger: Ledger, run_id: str, **fields: object) -> None:
    ledger.append(
        EventKind.run_submitted,
        run_id=run_id,
        session_id="s1",
        payload={"experiment": "prune", **fields},
    )


def test_events_chain_from_genesis_and_carry_consecutive_seqs(ledger: Ledger) -> None:
    first = ledger.append("session_started", session_id="s1", payload={"tool": "claude"})
    second = ledger.append(
        "run_submitted", run_id="r1", session_id="s1", payload={"experiment": "e"}
    )
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert ledger.head() == (2, second.hash)
    assert [e.hash for e in ledger.events()] == [first.hash, second.hash]


def test_run_state_folds_every_field_a_run_records(ledger: Ledger) -> None:
    ledger.append(
        "run_submitted",
        run_id="r1",
        session_id="sess-7",
        payload={
            "experiment": "prune-llama",
            "argv": ["python", "prune.py", "--sparsity", "0.5"],
            "params": {"sparsity": 0.5, "method": "wanda"},
            "git_commit": "a" * 40,
            "diff_hash": "b" * 64,
            "executor": "slurm",
            "tags": ["sweep-1"],
        },
    )
    ledger.append(
        "run_started",
        run_id="r1",
        payload={
            "slurm_job_id": "4242_3",
            "nodes": ["n1", "n2"],
            "gpus": {"model": "H100", "count": 8},
        },
    )
    ledger.append(
        "run_finished",
        run_id="r1",
        payload={
            "exit_code": 0,
            "metrics": {"ppl": 7.25},
            "artifacts": ["out/mask.pt"],
            "tags": ["best"],
        },
    )
    run = ledger.run("r1")
    assert run.state is RunStatus.finished
    assert run.session_id == "sess-7"
    assert run.argv == ["python", "prune.py", "--sparsity", "0.5"]
    assert run.params == {"sparsity": 0.5, "method": "wanda"}
    assert (run.git_commit, run.diff_hash, run.executor) == ("a" * 40, "b" * 64, "slurm")
    assert (run.slurm_job_id, run.nodes) == ("4242_3", ["n1", "n2"])
    assert (run.gpus.model, run.gpus.count) == ("H100", 8)
    assert run.exit_code == 0 and run.metrics == {"ppl": 7.25}
    assert run.artifacts == ["out/mask.pt"]
    assert run.tags == ["sweep-1", "best"]
    assert run.submitted_at is not None and run.started_at is not None and run.ended_at is not None
    assert run.submitted_at <= run.started_at <= run.ended_at
    assert (run.first_seq, run.last_seq) == (1, 3)


def test_later_metrics_merge_into_earlier_ones(ledger: Ledger) -> None:
    submit(ledger, "r1")
    ledger.append("run_started", run_id="r1", payload={"metrics": {"loss": 3.0, "step": 1}})
    ledger.append(
        "run_failed",
        run_id="r1",
        payload={"metrics": {"loss": 2.0}, "exit_code": 137, "reason": "OOM"},
    )
    run = ledger.run("r1")
    assert run.metrics == {"loss": 2.0, "step": 1}
    assert (run.state, run.exit_code, run.reason) == (RunStatus.failed, 137, "OOM")


def test_a_run_id_is_submitted_only_once(ledger: Ledger) -> None:
    submit(ledger, "r1")
    with pytest.raises(LedgerError, match="already in the ledger"):
        submit(ledger, "r1")
    assert ledger.head()[0] == 1


def test_a_rejected_batch_writes_nothing(ledger: Ledger) -> None:
    submit(ledger, "r0")
    before = ledger.head()
    with pytest.raises(LedgerError, match="already in the ledger"):
        ledger.append_many(
            [
                NewEvent("run_submitted", "r1", None, {"experiment": "e"}),
                NewEvent("run_submitted", "r0", None, {"experiment": "e"}),
            ]
        )
    assert ledger.head() == before
    with pytest.raises(LedgerError, match="no run 'r1'"):
        ledger.run("r1")
    assert ledger.verify().ok


def test_append_many_is_one_chained_transaction(ledger: Ledger) -> None:
    events = ledger.append_many(
        [
            NewEvent("run_submitted", f"r{i}", "s", {"experiment": "e", "params": {"i": i}})
            for i in range(100)
        ]
    )
    assert [e.seq for e in events] == list(range(1, 101))
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(events))
    assert len(ledger.runs()) == 100
    assert ledger.verify().ok


@pytest.mark.parametrize(
    ("kind", "run_id", "session_id", "payload", "message"),
    [
        ("run_exploded", "r1", None, {}, "unknown event kind 'run_exploded'"),
        ("run_finished", None, None, {}, "run_finished needs a run_id"),
        ("session_started", None, None, {}, "session_started needs a session_id"),
        ("run_finished", "r1", None, {"metric": 1.0}, "metric: unknown field"),
        (
            "run_finished",
            "r1",
            None,
            {"exit_code": "zero"},
            "exit_code: Input should be a valid integer",
        ),
        ("run_started", "r1", None, {"gpus": {"count": -1}}, "gpus.count"),
        ("run_submitted", "../../etc", None, {}, "run id '../../etc' is not a valid id"),
        ("run_submitted", "r 1; rm -rf", None, {}, "is not a valid id"),
    ],
)
def test_bad_events_are_refused_with_the_reason_and_nothing_is_written(
    ledger: Ledger,
    kind: str,
    run_id: str | None,
    session_id: str | None,
    payload: dict[str, object],
    message: str,
) -> None:
    with pytest.raises(LedgerError, match=message.replace("(", r"\(")):
        ledger.append(kind, run_id=run_id, session_id=session_id, payload=payload)
    assert ledger.head() == (0, GENESIS_HASH)


class _Label(StrEnum):
    big = "big"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"experiment": "e", "argv": ["python", "x.py"], "params": {"lr": 0.1, "m": "w"}},
        {"executor": "slurm", "tags": ["a", "b"], "nodes": [], "slurm_job_id": "12"},
        {"exit_code": 1, "metrics": {"ppl": 10, "ok": True, "none": None, "deep": {"a": [1, 2.5]}}},
        {"reason": None, "experiment": None, "array_index": 3},
        {"extra": {"nested": [{"x": "y"}, [1, [2]]]}, "resources": {"gpus": 2}},
        {"metrics": {"t": (1, 2)}},  # a tuple: pydantic turns it into a list
        {"metrics": {"inf": float("inf")}},  # not JSON: pydantic turns it into None
        {"metrics": {1: "int key"}},  # pydantic makes the key a string
        {"experiment": _Label.big},  # a str subclass: pydantic makes it a plain str
        {"exit_code": True},
        {"exit_code": "3"},
        {"started_at": "2026-11-23T12:00:00+00:00"},
        {"started_at": datetime(2026, 11, 23, 12, tzinfo=UTC)},
        {"gpus": {"model": "H100", "count": 2}},
        {"gpus": {"count": -1}},
        {"argv": ["ok", 3]},
        {"argv": "not a list"},
        {"params": []},
        {"unknown_field": 1},
        {"unknown_none": None},
    ],
)
def test_the_fast_payload_check_gives_what_pydantic_gives(payload: dict[str, object]) -> None:
    """Run payloads in plain JSON form skip pydantic (see models.validate_payload); the result, or
    the error, must be the one RunFields gives."""
    try:
        expected: object = _validated(EventKind.run_finished, payload)
    except LedgerError as exc:
        expected = str(exc)
    try:
        got: object = validate_payload(EventKind.run_finished, payload)
    except LedgerError as exc:
        got = str(exc)
    assert got == expected
    if isinstance(got, dict):
        assert canonical_body(
            seq=1, ts="t", kind="k", run_id=None, session_id=None, payload=got, prev_hash="p"
        ) == canonical_body(
            seq=1, ts="t", kind="k", run_id=None, session_id=None, payload=expected, prev_hash="p"
        )


def test_a_payload_is_copied_so_later_changes_to_the_callers_dict_change_nothing(
    ledger: Ledger,
) -> None:
    params = {"lr": 0.1}
    tags = ["a"]
    event = ledger.append("run_submitted", run_id="r1", payload={"params": params, "tags": tags})
    params["lr"] = 99
    tags.append("b")
    assert event.payload == {"params": {"lr": 0.1}, "tags": ["a"]}
    run = ledger.run("r1")  # folded from the tail after the caller's change
    assert (run.params, run.tags) == ({"lr": 0.1}, ["a"])
    assert ledger.verify().ok


def test_session_and_audit_events_take_free_form_payloads(ledger: Ledger) -> None:
    ledger.append("session_started", session_id="s1", payload={"tool": "codex", "yolo": True})
    ledger.append(
        "audit_done", session_id="s1", payload={"findings": 3, "report": "/x/report.html"}
    )
    kinds = [e.kind for e in ledger.events(session_id="s1")]
    assert kinds == [EventKind.session_started, EventKind.audit_done]
    assert ledger.events(kind="audit_done")[0].payload["findings"] == 3
    assert ledger.runs() == []


@pytest.fixture
def populated(ledger: Ledger) -> Ledger:
    for i in range(12):
        experiment = "prune" if i % 2 == 0 else "frank-wolfe"
        tags = ["sweep"] if i < 6 else ["final"]
        ledger.append(
            "run_submitted",
            run_id=f"r{i:02d}",
            session_id=f"s{i % 3}",
            payload={"experiment": experiment, "tags": tags},
        )
        if i % 4 == 0:
            ledger.append(
                "run_finished", run_id=f"r{i:02d}", payload={"metrics": {"ppl": float(i)}}
            )
        elif i % 4 == 1:
            ledger.append("run_failed", run_id=f"r{i:02d}", payload={"exit_code": 1})
    return ledger


def ids(runs: list) -> list[str]:  # type: ignore[type-arg]
    return [r.run_id for r in runs]


def test_filters_select_exactly_the_matching_runs_in_ledger_order(populated: Ledger) -> None:
    assert ids(populated.runs(experiment="prune")) == ["r00", "r02", "r04", "r06", "r08", "r10"]
    assert ids(populated.runs(tag="final")) == ["r06", "r07", "r08", "r09", "r10", "r11"]
    assert ids(populated.runs(state="finished")) == ["r00", "r04", "r08"]
    assert ids(populated.runs(state=RunStatus.failed, experiment="frank-wolfe")) == [
        "r01",
        "r05",
        "r09",
    ]
    assert ids(populated.runs(session_id="s1")) == ["r01", "r04", "r07", "r10"]
    assert ids(populated.runs(experiment="prune", tag="sweep", state="finished")) == ["r00", "r04"]
    assert ids(populated.runs(limit=3)) == ["r09", "r10", "r11"]
    assert populated.runs(experiment="nope") == []


def test_time_filters_bound_when_the_run_was_first_recorded(populated: Ledger) -> None:
    now = datetime.now(UTC)
    assert len(populated.runs(since=now - timedelta(hours=1))) == 12
    assert populated.runs(since=now + timedelta(seconds=5)) == []
    assert populated.runs(until=now - timedelta(hours=1)) == []
    middle = populated.run("r06").submitted_at
    assert middle is not None
    assert ids(populated.runs(until=middle)) == ["r00", "r01", "r02", "r03", "r04", "r05"]
    with pytest.raises(LedgerError, match="no timezone"):
        populated.runs(since=datetime(2026, 1, 1))


def test_unknown_state_filter_names_the_valid_states(ledger: Ledger) -> None:
    with pytest.raises(
        LedgerError, match="expected one of: submitted, running, finished, failed, cancelled"
    ):
        ledger.runs(state="done")


def test_threads_sharing_one_ledger_append_without_breaking_the_chain(ledger: Ledger) -> None:
    def worker(n: int) -> None:
        for i in range(50):
            ledger.append("run_submitted", run_id=f"t{n}-{i}", payload={"experiment": "threads"})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = ledger.verify()
    assert report.ok, report.problems
    assert report.events == 200
    assert len(ledger.runs(experiment="threads")) == 200


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.sqlite"
    with open_ledger(url) as first:
        submit(first, "r1")
        head = first.head()
    with open_ledger(url) as again:
        assert again.head() == head
        assert again.run("r1").experiment == "prune"
        assert again.append("run_finished", run_id="r1").prev_hash == head[1]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql://localhost/x",
            "not supported: use sqlite:///ABSOLUTE/PATH.sqlite or postgresql://",
        ),
        ("ledger.sqlite", "not supported"),
        ("sqlite://relative/ledger.sqlite", "needs an absolute file path"),
        ("sqlite:///", "is a directory"),
        ("postgresql://nobody@127.0.0.1:1/none", "cannot connect to the ledger database"),
        ("sqlite:////tmp/l.sqlite?sync=off", "sync must be one of normal, full"),
        ("sqlite:////tmp/l.sqlite?sync=full&sync=normal", "sync must be one of normal, full"),
        ("sqlite:////tmp/l.sqlite?mode=ro", r"unknown option\(s\) mode; the only one is sync"),
    ],
)
def test_bad_urls_fail_with_a_message_that_says_what_to_use(url: str, message: str) -> None:
    with pytest.raises(LedgerError, match=message):
        open_ledger(url)


def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my precious notes\n" * 100)
    with pytest.raises(LedgerError, match=r"not a database|not a usable ledger"):
        open_ledger(f"sqlite:///{notes}")
    assert notes.read_text() == "my precious notes\n" * 100


@pytest.mark.parametrize(
    ("suffix", "level", "pragma"),
    [
        ("", "normal", 1),
        ("?sync=normal", "normal", 1),
        ("?sync=full", "full", 2),
        ("?sync=FULL", "full", 2),
    ],
)
def test_sqlite_ledger_is_wal_with_normal_sync_by_default_and_full_on_request(
    tmp_path: Path, suffix: str, level: str, pragma: int
) -> None:
    import sqlite3

    path = tmp_path / "ledger.sqlite"
    with open_ledger(f"sqlite:///{path}{suffix}") as ledger:
        assert ledger.sync == level  # type: ignore[attr-defined]
        assert ledger._conn.execute("PRAGMA synchronous").fetchone()[0] == pragma
        ledger.append("session_started", session_id="s1")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT count(*) FROM ledger_events").fetchone()[0] == 1
    conn.close()


def test_appended_events_equal_the_events_read_back(ledger: Ledger) -> None:
    appended = ledger.append_many(
        [
            NewEvent("session_started", None, "s1", {"tool": "claude"}),
            NewEvent("run_submitted", "r1", "s1", {"experiment": "e", "gpus": {"count": 2}}),
            ("run_finished", "r1", None, {"exit_code": 0, "metrics": {"ppl": 7.5}}),
        ]
    )
    assert appended == ledger.events()
    stored = ledger._conn.execute("SELECT body FROM ledger_events ORDER BY seq").fetchall()
    assert [row[0] for row in stored] == [
        canonical_body(
            seq=e.seq,
            ts=utc_iso(e.ts),
            kind=e.kind.value,
            run_id=e.run_id,
            session_id=e.session_id,
            payload=e.payload,
            prev_hash=e.prev_hash,
        )
        for e in appended
    ]
    assert [e.model_dump(mode="json") for e in appended] == [
        e.model_dump(mode="json") for e in ledger.events()
    ]
    assert appended[1].payload == {"experiment": "e", "gpus": {"count": 2}}


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_threads_appending_together_share_one_commit_and_each_gets_its_own_events(
    ledger: Ledger,
) -> None:
    results: dict[int, list[LedgerEvent]] = {}

    def worker(n: int) -> None:
        results[n] = ledger.append_many(
            [NewEvent("run_submitted", f"t{n}-{i}", None, {"experiment": "g"}) for i in range(3)]
        )

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    with ledger._lock:  # a commit in progress: every thread has to queue behind it
        for t in threads:
            t.start()
        wait_until(lambda: len(ledger._queue) == 8, "8 queued appends")
    for t in threads:
        t.join()
    assert sorted(results) == list(range(8))
    for n, events in results.items():
        assert [e.run_id for e in events] == [f"t{n}-{i}" for i in range(3)]
        assert [b.seq - a.seq for a, b in itertools.pairwise(events)] == [1, 1]
    stored = ledger.events()
    assert sorted(e.seq for events in results.values() for e in events) == list(range(1, 25))
    assert {e.hash for events in results.values() for e in events} == {e.hash for e in stored}
    assert len({e.ts for e in stored}) == 1  # one transaction
    assert ledger.verify().ok


def test_a_refused_request_in_a_group_commit_does_not_sink_the_others(ledger: Ledger) -> None:
    outcomes: dict[str, object] = {}

    def worker(name: str, run_id: str) -> None:
        try:
            outcomes[name] = ledger.append("run_submitted", run_id=run_id, payload={})
        except LedgerError as exc:
            outcomes[name] = exc

    threads = [
        threading.Thread(target=worker, args=(name, run_id))
        for name, run_id in (("a", "same"), ("b", "same"), ("c", "other"))
    ]
    with ledger._lock:
        for t in threads:
            t.start()
        wait_until(lambda: len(ledger._queue) == 3, "3 queued appends")
    for t in threads:
        t.join()
    refused = [name for name, outcome in outcomes.items() if isinstance(outcome, LedgerError)]
    assert len(refused) == 1 and refused[0] in ("a", "b")
    assert "already in the ledger" in str(outcomes[refused[0]])
    assert ledger.head()[0] == 2
    assert sorted(r.run_id for r in ledger.runs()) == ["other", "same"]
    report = ledger.verify()
    assert report.ok and report.events == 2


def test_the_time_formatted_once_per_second_is_what_utc_iso_gives() -> None:
    for _ in range(3):
        ts, moment = _now()
        assert ts == utc_iso(moment)
        assert moment.tzinfo is UTC
        time.sleep(0.4)
