"""Checks of the written report against the ledger and the bibliography (run once, at the end).

``report.tex`` cites runs with ``\\run{ID}`` (the macro of the report skeleton). A number in the
document body counts as supported when some metric of some run of the session, printed at the same
precision (or as a percentage), gives that number.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from framework.audit.checks.base import CheckContext, Finding, Severity
from framework.audit.ledger import LedgerRun

RUN_CITE = re.compile(r"\\run\{([^}]*)\}")
CITE = re.compile(r"\\(?:[a-zA-Z]*cite[a-zA-Z]*|nocite)\*?(?:\[[^\]]*\]){0,2}\{([^}]*)\}")
NUMBER = re.compile(r"(?<![\w.\\{])[-+]?\d+\.\d+(?![\w.])\s*(\\%)?")
SKIP_ARGUMENT = re.compile(
    r"\\(?:run|cite[a-zA-Z]*|ref|eqref|label|includegraphics|input|include|url|href|bibliography|"
    r"addbibresource|usepackage|documentclass|vspace|hspace|setlength|newcommand)\*?(?:\[[^\]]*\])?\{[^}]*\}"
)
BIB_ENTRY = re.compile(r"@(\w+)\s*\{\s*([^,\s]+)\s*,", re.IGNORECASE)
DOI = re.compile(r"\b10\.\d{4,9}/\S+")
ARXIV = re.compile(r"\b(?:\d{4}\.\d{4,5}(?:v\d+)?|[a-z\-]+(?:\.[A-Z]{2})?/\d{7})\b")
PLACEHOLDER_IDS = frozenset({"ID", "", "..."})


def _body(tex: str) -> str:
    """The document body without comments or arguments that hold labels, ids and file names."""
    text = re.sub(r"(?<!\\)%.*", "", tex)
    begin = text.find("\\begin{document}")
    if begin >= 0:
        text = text[begin:]
    return SKIP_ARGUMENT.sub(" ", text)


def _supported(number: str, runs: list[LedgerRun]) -> bool:
    decimals = len(number.split(".")[1])
    value = float(number)
    for run in runs:
        for metric in run.metrics.values():
            for candidate in (metric, metric * 100):
                if round(candidate, decimals) == value:
                    return True
    return False


def _line_of(tex: str, needle: str) -> int:
    at = tex.find(needle)
    return tex.count("\n", 0, at) + 1 if at >= 0 else 0


def report_findings(
    ctx: CheckContext, enabled: set[str], severity: dict[str, Severity]
) -> list[Finding]:
    """Findings of the report checks that are enabled; nothing when there is no report file."""
    path = ctx.workspace.root / ctx.config.report_tex
    if not path.is_file():
        return []
    tex = path.read_text(errors="replace")
    body = _body(tex)
    findings: list[Finding] = []

    def add(check: str, default: Severity, message: str, evidence: str | None = None) -> None:
        if check in enabled:
            findings.append(
                Finding(
                    check=check,
                    severity=severity.get(check, default),
                    message=message,
                    evidence=evidence,
                )
            )

    cited_runs = {
        m.strip() for m in RUN_CITE.findall(re.sub(r"(?<!\\)%.*", "", tex))
    } - PLACEHOLDER_IDS
    if ctx.runs is not None:
        known = {r.run_id: r for r in ctx.runs}
        for run_id in sorted(cited_runs - set(known)):
            add(
                "report-run-missing",
                Severity.ERROR,
                f"{path.name}:{_line_of(tex, run_id)}: \\run{{{run_id}}} is not a run of this session in the ledger",
            )
        for match in NUMBER.finditer(body):
            number = match.group(0).rstrip("\\% ").lstrip("+")
            if not _supported(number, ctx.runs):
                add(
                    "report-number-unmatched",
                    Severity.WARNING,
                    f"{path.name}:{_line_of(tex, match.group(0))}: {match.group(0).strip()} matches no metric of any ledger run of the session",
                    body[max(0, match.start() - 60) : match.end() + 20].replace("\n", " "),
                )
        for run in ctx.runs:
            if run.state in ("failed", "cancelled") or run.run_id in cited_runs:
                continue
            add(
                "experiment-unreported",
                Severity.WARNING,
                f"run {run.run_id} ({run.experiment or 'no experiment name'}, {run.state}) is not cited in {path.name}",
            )
    _citation_checks(path, tex, add)
    return findings


def _citation_checks(path: Path, tex: str, add: Callable[..., None]) -> None:
    keys: set[str] = set()
    for group in CITE.findall(re.sub(r"(?<!\\)%.*", "", tex)):
        keys.update(k.strip() for k in group.split(",") if k.strip())
    bib_files = _bib_files(path, tex)
    entries: dict[str, str] = {}
    for bib in bib_files:
        entries.update(_bib_entries(bib.read_text(errors="replace")))
    for key in sorted(keys - set(entries)):
        where = ", ".join(b.name for b in bib_files) or "no .bib file found"
        add(
            "citation-missing",
            Severity.ERROR,
            f"\\cite{{{key}}} has no entry in the bibliography ({where})",
        )
    for key, body in sorted(entries.items()):
        if not (DOI.search(body) or _has_arxiv(body)):
            add(
                "citation-unverified",
                Severity.WARNING,
                f"bibliography entry {key!r} has no DOI or arXiv id: unverified",
                body[:200],
            )


def _has_arxiv(entry: str) -> bool:
    lowered = entry.lower()
    if "arxiv" not in lowered and "eprint" not in lowered:
        return False
    return bool(ARXIV.search(entry))


def _bib_files(path: Path, tex: str) -> list[Path]:
    names: list[str] = []
    for group in re.findall(r"\\(?:bibliography|addbibresource)\{([^}]*)\}", tex):
        names.extend(n.strip() for n in group.split(","))
    files = []
    for name in names:
        candidate = path.parent / (name if name.endswith(".bib") else name + ".bib")
        if candidate.is_file():
            files.append(candidate)
    return files or sorted(path.parent.glob("*.bib"))


def _bib_entries(text: str) -> dict[str, str]:
    """``key -> entry text`` for each entry (``@string``, ``@comment``, ``@preamble`` skipped)."""
    matches = list(BIB_ENTRY.finditer(text))
    entries = {}
    for i, match in enumerate(matches):
        if match.group(1).lower() in ("string", "comment", "preamble"):
            continue
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        entries[match.group(2)] = text[match.start() : end]
    return entries
