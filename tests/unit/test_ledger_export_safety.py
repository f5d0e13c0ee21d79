"""`ledger export` output is data for files and pipes, but what a job wrote must neither drive a
terminal nor become a spreadsheet formula."""

from __future__ import annotations

import csv
import io

from framework.ledger.commands import for_output
from framework.ledger.tables import export_rows


def test_csv_cells_and_names_a_job_chose_never_start_a_formula() -> None:
    rows = [{'=HYPERLINK("http://x")': "@SUM(A1)", "loss": -0.5, "note": "-3", "tag": "+cmd"}]
    data = export_rows(rows, "csv", None)
    assert data is not None
    header, row = list(csv.reader(io.StringIO(data.decode())))
    assert header == ['\'=HYPERLINK("http://x")', "loss", "note", "tag"]
    assert row == ["'@SUM(A1)", "-0.5", "-3", "'+cmd"]  # numbers stay numbers


def test_export_to_a_terminal_escapes_control_characters_and_to_a_pipe_keeps_the_bytes() -> None:
    data = b"run,loss\x1b]0;PWNED\x07\x1b[2J\n1,2\n"
    shown = for_output(data, terminal=True)
    assert b"\x1b" not in shown and b"\x07" not in shown and shown.count(b"\n") == 2
    assert for_output(data, terminal=False) == data
