"""Ledger edits that the hash chain alone cannot see (issue 16, item 9), on real SQLite and real
PostgreSQL: the derived tables that ``list``/``show``/``export`` read, a chain cut short with its
head edited to match, and a chain rebuilt and re-hashed from the start. ``verify`` replays the
events into the derived tables and checks the chain against the anchor file and a head the user
kept; each test's attack passed ``verify`` before."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from typer.testing import CliRunner

from framework.cli import app
from framework.ledger import Ledger, open_ledger
from framework.ledger.anchor import anchor_path
from tests.integration.test_ledger_postgres import BASE_URL
from tests.support import unavailable


@dataclass
class Backend:
    """A ledger URL and a raw connection to its database, as an attacker with write access to
    it (and the rights to drop or disable the append-only triggers) would use it."""

    name: str
    url: str
    state_dir: Path
    execute: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]
    overwrite_with: Callable[[str], None]
    """Replace the whole database by the one at this URL (a forged ledger)."""
    forged_url: str

    def open(self) -> Ledger:
        return open_ledger(self.url, self.state_dir)


def _sqlite(tmp_path: Path) -> Iterator[Backend]:
    url = f"sqlite:///{tmp_path}/state/ledger.sqlite"
    database = tmp_path / "state" / "ledger.sqlite"

    def execute(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(database, isolation_level=None)
        try:
            conn.execute("DROP TRIGGER IF EXISTS ledger_events_no_update")
            conn.execute("DROP TRIGGER IF EXISTS ledger_events_no_delete")
            return conn.execute(sql.replace("%s", "?"), params).fetchall()
        finally:
            conn.close()

    def overwrite_with(forged: str) -> None:
        shutil.copyfile(forged.removeprefix("sqlite://"), database)

    yield Backend(
        "sqlite",
        url,
        tmp_path / "state",
        execute,
        overwrite_with,
        f"sqlite:///{tmp_path}/forged/ledger.sqlite",
    )


def _postgres(tmp_path: Path) -> Iterator[Backend]:
    try:
        import psycopg
    except ImportError:
        unavailable("postgresql", "the psycopg package is not installed")
    try:
        admin = psycopg.connect(BASE_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        unavailable("postgresql", f"cannot connect to {BASE_URL.split('@')[-1]}: {exc}")
    schema, forged = (f"ledger_test_{uuid.uuid4().hex[:12]}" for _ in range(2))
    for name in (schema, forged):
        admin.execute(f"CREATE SCHEMA {name}")

    def url_of(name: str) -> str:
        return f"{BASE_URL}?options={quote(f'-csearch_path={name}')}"

    def execute(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(url_of(schema), autocommit=True) as conn:
            conn.execute("ALTER TABLE ledger_events DISABLE TRIGGER USER")
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def overwrite_with(_: str) -> None:
        for table in ("ledger_events", "ledger_head", "ledger_runs", "ledger_run_tags"):
            execute(f"DELETE FROM {schema}.{table}", ())
            execute(f"INSERT INTO {schema}.{table} SELECT * FROM {forged}.{table}", ())

    try:
        yield Backend(
            "postgres", url_of(schema), tmp_path / "state", execute, overwrite_with, url_of(forged)
        )
    finally:
        for name in (schema, forged):
            admin.execute(f"DROP SCHEMA {name} CASCADE")
        admin.close()


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    (tmp_path / "state").mkdir()
    (tmp_path / "forged").mkdir()
    factory = _sqlite if request.param == "sqlite" else _postgres
    yield from factory(tmp_path)


def record_runs(ledger: Ledger, loss: float = 0.5) -> None:
    """Five events: two runs with tags and metrics, and a session."""
    ledger.append("session_started", session_id="s1", payload={"tool": "claude"})
    for run_id in ("r1", "r2"):
        ledger.append(
            "run_submitted",
            run_id=run_id,
            session_id="s1",
            payload={"experiment": "e", "tags": ["sweep"]},
        )
    ledger.append("run_finished", run_id="r1", payload={"exit_code": 0, "metrics": {"loss": loss}})
    ledger.append("run_failed", run_id="r2", payload={"exit_code": 1, "reason": "diverged"})


@pytest.fixture
def recorded(backend: Backend) -> tuple[int, str]:
    """The head after :func:`record_runs`, as the user would have kept it."""
    with backend.open() as ledger:
        record_runs(ledger)
        report = ledger.verify()
        assert report.ok, report.problems
        assert report.runs == 2 and report.anchored == [1, 5]
        return ledger.head()


def problems_of(backend: Backend, head: tuple[int, str] | None = None) -> list[str]:
    with backend.open() as ledger:
        report = ledger.verify(head)
    return [p.problem for p in report.problems]


def test_verify_catches_a_forged_metric_in_the_runs_table_that_show_reads(
    backend: Backend, recorded: tuple[int, str]
) -> None:
    (doc,) = backend.execute("SELECT doc FROM ledger_runs WHERE run_id = %s", ("r1",))[0]
    forged = doc.replace('"loss":0.5', '"loss":0.01')
    backend.execute("UPDATE ledger_runs SET doc = %s WHERE run_id = %s", (forged, "r1"))
    with backend.open() as ledger:
        assert ledger.run("r1").metrics == {"loss": 0.01}  # what `ledger show` would print
        report = ledger.verify()
    assert not report.ok
    (problem,) = report.problems
    assert problem.run_id == "r1"
    assert "metrics={'loss': 0.01}" in problem.problem
    assert "metrics={'loss': 0.5}" in problem.problem


def test_verify_catches_edited_columns_forged_rows_and_removed_tags_of_derived_tables(
    backend: Backend, recorded: tuple[int, str]
) -> None:
    backend.execute("UPDATE ledger_runs SET state = 'finished' WHERE run_id = %s", ("r2",))
    (row,) = backend.execute("SELECT * FROM ledger_runs WHERE run_id = %s", ("r1",))
    backend.execute(
        "INSERT INTO ledger_runs VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        ("r9", *row[1:7], row[7].replace('"r1"', '"r9"')),
    )
    backend.execute("DELETE FROM ledger_run_tags WHERE run_id = %s", ("r1",))
    with backend.open() as ledger:
        report = ledger.verify()
    by_run = {p.run_id: p.problem for p in report.problems}
    assert set(by_run) == {"r1", "r2", "r9"}, report.problems
    assert "indexed state ('finished')" in by_run["r2"] and "'failed'" in by_run["r2"]
    assert "no event does" in by_run["r9"]
    assert "tags table has [] for it" in by_run["r1"]


def test_verify_catches_a_chain_cut_short_with_its_head_edited_to_match(
    backend: Backend, recorded: tuple[int, str]
) -> None:
    """The attacker deletes the last events, points the head at what is left, and removes the
    rows they had folded in, so the chain and the tables agree with each other."""
    (kept_hash,) = backend.execute("SELECT hash FROM ledger_events WHERE seq = 3", ())[0]
    backend.execute("DELETE FROM ledger_events WHERE seq > 3", ())
    backend.execute("UPDATE ledger_head SET seq = 3, hash = %s", (kept_hash,))
    for run_id in ("r1", "r2"):
        (doc,) = backend.execute("SELECT doc FROM ledger_runs WHERE run_id = %s", (run_id,))[0]
        backend.execute(
            "UPDATE ledger_runs SET doc = %s, state = 'submitted', last_seq = first_seq "
            "WHERE run_id = %s",
            (_as_submitted(doc), run_id),
        )
    problems = problems_of(backend)
    assert problems, "the truncation went unnoticed"
    assert all("anchor file" in p and "cut from the end" in p for p in problems), problems


def test_verify_catches_a_whole_chain_rebuilt_and_rehashed_from_the_start(
    backend: Backend, recorded: tuple[int, str]
) -> None:
    """A forged ledger, written with the ledger's own code (so every hash, head and derived row
    is consistent), replaces the real one: only a head kept outside the database can tell."""
    with open_ledger(backend.forged_url) as forged:
        record_runs(forged, loss=0.01)
        assert forged.verify().ok
    backend.overwrite_with(backend.forged_url)
    problems = problems_of(backend)
    assert problems and all("re-hashed" in p for p in problems), problems


def test_a_head_the_user_kept_catches_a_rehash_even_when_the_anchor_was_rewritten_too(
    backend: Backend, recorded: tuple[int, str]
) -> None:
    with open_ledger(backend.forged_url) as forged:
        record_runs(forged, loss=0.01)
    backend.overwrite_with(backend.forged_url)
    anchor = anchor_path(backend.url, backend.state_dir)
    assert anchor is not None
    forged_anchor = anchor_path(backend.forged_url, backend.state_dir.parent / "forged")
    if forged_anchor is not None and forged_anchor.exists():
        shutil.copyfile(forged_anchor, anchor)
    else:
        anchor.unlink()
    assert problems_of(backend) == []  # the state dir is the attacker's too: no help here
    (problem,) = problems_of(backend, recorded)
    assert problem.startswith("the head you gave is seq 5") and "re-hashed" in problem


def test_ledger_head_prints_what_verify_head_checks(
    backend: Backend,
    recorded: tuple[int, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "ws").mkdir()
    monkeypatch.setenv("AR_STATE_DIR", str(backend.state_dir))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("AR_LEDGER__URL", backend.url)
    runner = CliRunner()
    ws = ["-w", str(tmp_path / "ws")]
    printed = runner.invoke(app, ["ledger", "head", *ws], catch_exceptions=False)
    assert printed.output.strip() == f"{recorded[0]}:{recorded[1]}"
    ok = runner.invoke(app, ["ledger", "verify", "--head", printed.output.strip(), *ws])
    assert ok.exit_code == 0, ok.output
    assert "2 runs replayed" in ok.output and "kept head(s) at seq 1, 5" in ok.output
    wrong = runner.invoke(app, ["ledger", "verify", "--head", f"5:{'ab' * 32}", *ws])
    assert wrong.exit_code == 1 and "the head you gave is seq 5" in wrong.output
    bad = runner.invoke(app, ["ledger", "verify", "--head", "five", *ws])
    assert bad.exit_code == 2 and "SEQ:HASH" in bad.output


def _as_submitted(doc: str) -> str:
    """A run document as it stood after its submission (the fields later events added removed)."""
    import json

    data = json.loads(doc)
    for name in ("exit_code", "metrics", "reason", "ended_at"):
        data.pop(name, None)
    data["state"], data["last_seq"] = "submitted", data["first_seq"]
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
