"""The same ledger contract on a real PostgreSQL server (.ci/components/20-postgres.sh starts one).
Each test gets its own schema, so tests never see each other's events."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from framework.ledger import Ledger, NewEvent, open_ledger
from tests.support import REPO_ROOT, unavailable

pytestmark = pytest.mark.postgres

BASE_URL = os.environ.get(
    "AR_TEST_POSTGRES_URL", "postgresql://ar_test:ar_test@127.0.0.1:5432/ar_ledger_test"
)


@pytest.fixture
def pg_url() -> Iterator[str]:
    try:
        import psycopg
    except ImportError:
        unavailable("postgresql", "the psycopg package is not installed")
    try:
        admin = psycopg.connect(BASE_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        unavailable("postgresql", f"cannot connect to {BASE_URL.split('@')[-1]}: {exc}")
    schema = f"ledger_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{BASE_URL}?options={quote(f'-csearch_path={schema}')}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture
def ledger(pg_url: str) -> Iterator[Ledger]:
    with open_ledger(pg_url) as opened:
        yield opened


def test_postgres_ledger_records_runs_and_verifies(ledger: Ledger) -> None:
    ledger.append("session_started", session_id="s1", payload={"tool": "claude"})
    ledger.append(
        "run_submitted", run_id="r1", session_id="s1", payload={"experiment": "e", "tags": ["t"]}
    )
    ledger.append("run_finished", run_id="r1", payload={"exit_code": 0, "metrics": {"acc": 0.9}})
    ledger.append_many(
        [NewEvent("run_submitted", f"b{i}", "s1", {"experiment": "e"}) for i in range(20)]
    )
    run = ledger.run("r1")
    assert (run.state, run.metrics, run.session_id) == ("finished", {"acc": 0.9}, "s1")
    assert [r.run_id for r in ledger.runs(tag="t")] == ["r1"]
    assert len(ledger.runs(experiment="e", state="submitted")) == 20
    report = ledger.verify()
    assert report.ok, report.problems
    assert report.events == 23 and ledger.head() == (23, report.head_hash)


def test_postgres_refuses_changes_to_events(ledger: Ledger, pg_url: str) -> None:
    import psycopg

    ledger.append("run_submitted", run_id="r1", payload={"experiment": "e"})
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in (
            "UPDATE ledger_events SET kind = 'run_failed'",
            "DELETE FROM ledger_events",
            "TRUNCATE ledger_events",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
    assert ledger.verify().ok


def test_postgres_verify_catches_an_edit_made_with_triggers_disabled(
    ledger: Ledger, pg_url: str
) -> None:
    import psycopg

    for i in range(4):
        ledger.append(
            "run_submitted", run_id=f"r{i}", payload={"experiment": "e", "params": {"i": i}}
        )
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE ledger_events DISABLE TRIGGER USER")
        conn.execute(
            "UPDATE ledger_events SET body = convert_to(replace(convert_from(body, 'UTF8'), '\"i\":2', '\"i\":7'), 'UTF8') "
            "WHERE seq = 3"
        )
        conn.execute("DELETE FROM ledger_events WHERE seq = 1")
    report = ledger.verify()
    assert not report.ok
    assert [p.seq for p in report.problems][:2] == [2, 3]


def test_postgres_verify_catches_an_indexed_column_that_disagrees_with_the_body(
    ledger: Ledger, pg_url: str
) -> None:
    import psycopg

    for i in range(4):
        ledger.append("run_submitted", run_id=f"r{i}", payload={"experiment": "e"})
    assert ledger.verify().ok
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE ledger_events DISABLE TRIGGER USER")
        conn.execute("UPDATE ledger_events SET run_id = 'someone-else' WHERE seq = 2")
    report = ledger.verify()
    assert [p.seq for p in report.problems if p.run_id is None] == [2]
    assert "indexed columns" in report.problems[0].problem


APPENDER = textwrap.dedent(
    """
    import sys
    from framework.ledger import NewEvent, open_ledger

    with open_ledger(sys.argv[1]) as ledger:
        for i in range(60):
            ledger.append("run_submitted", run_id=f"{sys.argv[2]}-{i}", payload={"experiment": "c"})
        ledger.append_many([NewEvent("run_finished", f"{sys.argv[2]}-{i}", None, {}) for i in range(60)])
    """
)


def test_postgres_concurrent_processes_keep_one_valid_chain(pg_url: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, pg_url, f"p{n}"],
            cwd=REPO_ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    with open_ledger(pg_url) as ledger:
        report = ledger.verify()
        assert report.ok, report.problems
        assert report.events == 4 * 120
        assert len(ledger.runs(state="finished")) == 240


def test_postgres_password_is_not_echoed_in_errors() -> None:
    from framework.ledger import LedgerError

    with pytest.raises(LedgerError) as caught:
        open_ledger("postgresql://ar_test:s3cret-pw@127.0.0.1:1/none")
    assert "s3cret-pw" not in str(caught.value)
