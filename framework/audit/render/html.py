"""The self-contained HTML report: one file, inline CSS/JS/SVG, no network fetches (enforced by CSP)."""

from __future__ import annotations

from datetime import UTC, datetime

from jinja2 import Environment, PackageLoader, select_autoescape

from framework.audit.events import EventKind
from framework.audit.render.text import duration_text
from framework.audit.report import AuditReport

CALL_KINDS = frozenset({EventKind.TOOL_CALL, EventKind.SHELL_COMMAND, EventKind.FILE_EDIT})


def _bars(report: AuditReport) -> list[dict[str, object]]:
    """Token bars per model for the SVG chart: widths scaled to the largest total."""
    rows = []
    for m in report.summary.models:
        parts = [
            ("input", m.input_tokens, "#4c78a8"),
            ("cache read", m.cache_read_tokens, "#9ecae9"),
            ("cache write", m.cache_write_tokens, "#f58518"),
            ("output", m.output_tokens, "#54a24b"),
        ]
        rows.append(
            {
                "model": m.model,
                "parts": parts,
                "total": sum(p[1] for p in parts),
                "cost": m.cost_usd,
            }
        )
    biggest = max((int(r["total"]) for r in rows), default=0) or 1  # type: ignore[call-overload]
    for row in rows:
        x = 0.0
        segments = []
        for label, value, color in row["parts"]:  # type: ignore[attr-defined]
            width = 480.0 * value / biggest
            segments.append(
                {"label": label, "value": value, "color": color, "x": x, "width": width}
            )
            x += width
        row["segments"] = segments
    return rows


def render_html(report: AuditReport) -> str:
    env = Environment(
        loader=PackageLoader("framework.audit.render", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = env.get_template("report.html.j2")
    return template.render(
        r=report,
        s=report.summary,
        counts=report.counts(),
        bars=_bars(report),
        call_kinds=CALL_KINDS,
        duration=duration_text(report.summary.duration_s),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
