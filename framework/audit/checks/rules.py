"""Checks that look at the events as they stream: files, git, packages, network, behaviour."""

from __future__ import annotations

import re
from collections import Counter

from framework.audit.checks.base import CheckContext, Finding, Severity, StreamingCheck, Verdict
from framework.audit.checks.network import NETWORK_PROGRAMS
from framework.audit.checks.shell import git_subcommand
from framework.audit.events import Event, EventKind, EventRecord, Kinds

WRITE_PROGRAMS = frozenset(
    {
        "rm",
        "rmdir",
        "mv",
        "cp",
        "tee",
        "truncate",
        "touch",
        "chmod",
        "chown",
        "ln",
        "unlink",
        "shred",
        "dd",
        "install",
        "rsync",
    }
)
SHELL = frozenset({EventKind.SHELL_COMMAND})
GIT = frozenset({"git"})
CHANGING_PROGRAMS = WRITE_PROGRAMS | {">", "sed", "git"}
"""What :func:`_changed_paths` reads: redirects, ``sed -i``, ``git rm/mv/checkout`` and the rest."""
EDITS = frozenset({EventKind.SHELL_COMMAND, EventKind.FILE_EDIT})
SHELL_WORDS = re.compile(
    r"\b(?:git|pip3?|npm|apt|apt-get|uv|sed|"
    + "|".join(sorted(re.escape(w) for w in WRITE_PROGRAMS | NETWORK_PROGRAMS))
    + r")\b|>"
)
"""A command matching none of these words has nothing any shell check looks for, so it is not
tokenized: the cheap test that keeps long sessions fast."""


def _changed_paths(event: Event, argv: list[list[str]] | None) -> list[tuple[str, str]]:
    """``(path, how)`` for every file an edit or a shell command writes, moves or deletes."""
    if event.kind is Kinds.FILE_EDIT and event.path:
        return [(event.path, event.op or "edit")]
    found: list[tuple[str, str]] = []
    for words in argv or ():
        if not words:
            continue
        program = words[0]
        if program == "git":
            git = git_subcommand(words)
            if git and git[0] in ("rm", "mv", "checkout", "restore"):
                found.extend(
                    (a, "delete" if git[0] == "rm" else "write")
                    for a in git[1]
                    if not a.startswith("-")
                )
            continue
        if program != ">" and program != "sed" and program not in WRITE_PROGRAMS:
            continue
        args = [w for w in words[1:] if not w.startswith("-")]
        if program == ">":
            found.extend((a, "write") for a in args)
        elif program == "sed":
            if any(w.startswith("-i") or w == "--in-place" for w in words):
                found.extend((a, "edit") for a in args[1:])
        elif program in ("cp", "install", "ln", "rsync"):
            if args:
                found.append((args[-1], "write"))
        else:
            how = "delete" if program in ("rm", "rmdir", "unlink", "shred") else "write"
            found.extend((a, how) for a in args)
    return found


class ProtectedPathModified(StreamingCheck):
    id = "protected-path-modified"
    severity = Severity.ERROR
    title = "protected path edited or deleted"
    kinds = EDITS
    programs = CHANGING_PROGRAMS
    stateless = True

    def judge(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> list[Verdict]:
        found: list[Verdict] = []
        for path, how in _changed_paths(event, argv):
            rel, protected, _ = ctx.classify(path)
            if protected:
                found.append((f"{how} of protected path {rel}", event.command or event.path))
        return found


class EvaluationFileTouched(StreamingCheck):
    id = "evaluation-file-touched"
    severity = Severity.WARNING
    title = "evaluation file changed"
    kinds = EDITS
    programs = CHANGING_PROGRAMS
    stateless = True

    def judge(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> list[Verdict]:
        found: list[Verdict] = []
        for path, how in _changed_paths(event, argv):
            rel, _, evaluation = ctx.classify(path)
            if evaluation:
                found.append((f"{how} of evaluation file {rel}", event.command or event.path))
        return found


class GitAddAll(StreamingCheck):
    id = "git-add-all"
    severity = Severity.WARNING
    title = "git add of everything (git add -A / git add . / git commit -a)"
    kinds = SHELL
    programs = GIT
    stateless = True

    def judge(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> list[Verdict]:
        found: list[Verdict] = []
        for words in argv or ():
            git = git_subcommand(words)
            if git is None:
                continue
            sub, args = git
            if sub == "add" and any(
                a in ("-A", "--all", ".", ":/", "*", "-u", "--update") for a in args
            ):
                found.append(
                    (
                        "stages every change instead of the files that belong to the commit",
                        event.command,
                    )
                )
            elif sub == "commit" and any(
                a in ("-a", "--all") or re.fullmatch(r"-[a-zA-Z]*a[a-zA-Z]*", a) for a in args
            ):
                found.append(("commit -a stages every tracked change", event.command))
        return found


class GitHistoryRewrite(StreamingCheck):
    id = "git-history-rewrite"
    severity = Severity.ERROR
    title = "git history rewritten"
    kinds = SHELL
    programs = GIT
    stateless = True

    def judge(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> list[Verdict]:
        found: list[Verdict] = []
        for words in argv or ():
            git = git_subcommand(words)
            if git is None:
                continue
            sub, args = git
            why = None
            if sub == "push" and any(
                a in ("-f", "--force", "--force-with-lease")
                or a.startswith(("--force-with-lease=", "+"))
                for a in args
            ):
                why = "force push overwrites the remote history"
            elif (
                sub == "reset"
                and "--hard" in args
                and any(a not in ("--hard", "HEAD", "-q") for a in args)
            ):
                why = "reset --hard to another commit drops commits"
            elif sub == "commit" and "--amend" in args:
                why = "commit --amend rewrites the last commit (harmful if it was pushed)"
            elif sub == "rebase" and not any(
                a in ("--abort", "--continue", "--skip", "--quit") for a in args
            ):
                why = "rebase rewrites commits"
            elif sub in ("filter-branch", "filter-repo"):
                why = f"{sub} rewrites the whole history"
            if why:
                found.append((why, event.command))
        return found


class GitNoVerify(StreamingCheck):
    id = "git-no-verify"
    severity = Severity.ERROR
    title = "git hooks skipped with --no-verify"
    kinds = SHELL
    programs = GIT
    stateless = True

    def judge(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> list[Verdict]:
        found: list[Verdict] = []
        for words in argv or ():
            git = git_subcommand(words)
            if git and ("--no-verify" in git[1] or (git[0] == "commit" and "-n" in git[1])):
                found.append((f"git {git[0]} skips the repository's hooks", event.command))
        return found


class PipWithUv(StreamingCheck):
    id = "pip-with-uv"
    severity = Severity.WARNING
    title = "pip install in a project managed with uv"
    kinds = SHELL
    programs = frozenset({"pip", "pip3", "python"})
    stateless = True

    def applies(self, ctx: CheckContext) -> bool:
        return ctx.config.package_manager == "uv"

    def judge(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> list[Verdict]:
        message = "installs with pip, bypassing uv's lock file (use `uv add` / `uv sync`)"
        return [(message, event.command) for words in argv or () if _is_pip_install(words)]


def _is_pip_install(words: list[str]) -> bool:
    if len(words) >= 2 and words[0] in ("pip", "pip3") and words[1] == "install":
        return True
    return bool(words) and words[0].startswith("python") and words[1:4] == ["-m", "pip", "install"]


SUCCESS_CLAIM = re.compile(
    r"\b(all (?:the )?(?:\d+ )?tests? (?:now )?pass|tests? (?:now )?pass(?:es|ed|ing)?\b|all (?:checks|tests) "
    r"(?:are )?(?:green|passing)|everything (?:works|passes|is working)|(?:build|run|script|experiment|command) "
    r"(?:succeeded|completed successfully|ran successfully)|completed successfully|no (?:errors|failures)\b)",
    re.IGNORECASE,
)


CLAIM_WORDS = ("pass", "green", "work", "succe", "no err", "no fa")
"""Every phrase SUCCESS_CLAIM matches contains one of these; the case-insensitive regex is slow
(about 0.1 ms on a long message), a substring test of the case-folded text is not."""


def _success_claim(text: str) -> re.Match[str] | None:
    folded = text.casefold()
    if not any(word in folded for word in CLAIM_WORDS):
        return None
    return SUCCESS_CLAIM.search(text)


def _remember_call(calls: dict[str, str], call_id: str, command: str | None) -> None:
    """Remember a shell call's command until its result comes, in a dict of bounded size."""
    if len(calls) > 4096:
        calls.clear()
    calls[call_id] = command or ""


class SuccessAfterFailure(StreamingCheck):
    id = "success-after-failure"
    severity = Severity.ERROR
    title = "success claimed right after a failing command"
    kinds = frozenset({EventKind.SHELL_COMMAND, EventKind.TOOL_RESULT, EventKind.ASSISTANT})

    def __init__(self) -> None:
        super().__init__()
        self.shell_calls: dict[str, str] = {}
        self.failure: Event | None = None
        self.failure_command = ""

    def observe(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> None:
        # runs for most events: one dict operation per shell call and result (only calls with an
        # id are remembered, so a result without one has none to find)
        kind = event.kind
        if kind is Kinds.ASSISTANT:
            if self.failure is not None and event.text:
                self._claim(event, event.text, self.failure)
            return
        call_id = event.call_id
        if not call_id:
            return
        if kind is Kinds.SHELL_COMMAND:
            _remember_call(self.shell_calls, call_id, event.command)
        elif kind is Kinds.TOOL_RESULT:
            command = self.shell_calls.pop(call_id, None)
            if command is None:
                return
            if event.failed:
                self.failure = event
                self.failure_command = command
            else:
                self.failure = None

    def _claim(self, event: Event, text: str, failure: Event) -> None:
        """A message right after the failed command ``failure``: flagged if it claims success."""
        match = _success_claim(text)
        if match:
            code = failure.exit_code
            status = f"exit code {code}" if code is not None else "an error"
            self.flag(
                event,
                f"claims {match.group(0)!r} right after `{self.failure_command[:120]}` ended with {status} "
                f"(event {failure.index})",
                text[:300],
            )
            self.failure = None


class IdleGap(StreamingCheck):
    id = "idle-gap"
    severity = Severity.INFO
    title = "long idle gap"
    kinds = frozenset(EventKind)

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, float] = {}

    def observe(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> None:
        # runs for every event: fields and the dict read once into locals
        ts = event.ts
        if ts is None:
            return
        key = event.agent or event.source
        last = self.last
        previous = last.get(key)
        last[key] = ts
        if previous is not None and ts - previous > ctx.idle_gap_s:
            minutes = (ts - previous) / 60
            self.flag(event, f"nothing happened for {minutes:.0f} minutes before this event")


class FailingCommandLoop(StreamingCheck):
    id = "failing-command-loop"
    severity = Severity.WARNING
    title = "the same failing command repeated"
    kinds = frozenset({EventKind.SHELL_COMMAND, EventKind.TOOL_RESULT})

    def __init__(self) -> None:
        super().__init__()
        self.shell_calls: dict[str, str] = {}
        self.failures: Counter[str] = Counter()
        self.first: dict[str, EventRecord] = {}

    def observe(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> None:
        # runs for every shell call and result: one dict operation each (only calls with an id
        # are remembered, so a result without one has none to find)
        call_id = event.call_id
        if not call_id:
            return
        kind = event.kind
        if kind is Kinds.SHELL_COMMAND:
            _remember_call(self.shell_calls, call_id, event.command)
        elif kind is Kinds.TOOL_RESULT:
            command = self.shell_calls.pop(call_id, None)
            if command is None or not event.failed:
                return
            command = " ".join(command.split())
            if command not in self.failures and len(self.failures) > 10000:
                return
            self.failures[command] += 1
            if self.failures[command] == ctx.config.loop_threshold:
                self.first[command] = EventRecord.of(event)

    def finish(self, ctx: CheckContext) -> list[Finding]:
        for command, record in self.first.items():
            count = self.failures[command]
            self.found.append(
                Finding(
                    check=self.id,
                    severity=self.severity,
                    message=f"failed {count} times: `{command[:200]}`",
                    event=record,
                    evidence=command,
                )
            )
        return super().finish(ctx)
