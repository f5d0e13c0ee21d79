"""One rule, one place: host-side code touches the file system only through framework/safefs.py,
or says on the line why the path it touches is the host's own.

What this proves: in every module of :data:`HOST_SIDE` (code that runs with the host's privileges
and acts on the workspace, the agent home, run directories or the broker's channel), every raw
file-system call (:data:`PATH_METHODS` on any object, :data:`OS_CALLS`, :data:`OS_PATH_CALLS`,
``shutil.*``, the ``open`` builtin) carries a ``# host-path: <why>`` comment, on a line of the
call's own statement (the header only, for ``if``/``for``/``with``) or alone on the line above it,
saying why that path is not in an agent-writable tree: a state-dir file no sandbox can write, the
ledger, the snapshot or session store, a file the user named, ``/proc`` or ``/sys``. A new raw call
fails this test with its ``file:line``: whoever adds one uses safefs, or writes down why not.

What it cannot prove (a lint, not taint tracking): that a ``host-path`` comment is true; that a
path handed to a program (git, bwrap, docker) is safe to hand; calls made through an alias
(``from os import open as o``), ``getattr`` or a library (``tarfile``, ``sqlite3``) are not seen;
``str.replace`` is told from ``Path.replace`` by its arity only.

Out of scope: the audit, the ledger and the CLI (they read paths the user names or the host
owns), ``framework/testing`` (test servers), ``dispatch/client.py`` and ``sandbox/forward.py``
(they run inside the sandbox as the agent), and :data:`NOT_YET`: modules another part of issue 16 is rewriting at the same time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.support import REPO_ROOT

FRAMEWORK = REPO_ROOT / "framework"
HOST_SIDE = (
    "dispatch",
    "sandbox",
    "agents",
    "prompts.py",
    "workspace.py",
    "init.py",
    "evaluation.py",
    "hostgit.py",
    "gitplanted.py",
)
"""Modules (files, or every ``*.py`` beneath a directory) whose file accesses are checked."""
EXEMPT = {"safefs.py", "dispatch/client.py", "sandbox/forward.py"}
"""safefs itself, and code that runs inside the sandbox as the agent (the client, the port
forwarder): it has no privileges over the agent's trees to misuse."""
NOT_YET = {
    # Rewritten by the job-limits part (cgroups for jobs).
    "sandbox/cgroups.py",
}

PATH_METHODS = {
    "open",
    "read_text",
    "read_bytes",
    "write_text",
    "write_bytes",
    "exists",
    "is_file",
    "is_dir",
    "is_symlink",
    "iterdir",
    "glob",
    "rglob",
    "stat",
    "lstat",
    "unlink",
    "rmdir",
    "mkdir",
    "rename",
    "replace",
    "touch",
    "chmod",
    "symlink_to",
    "hardlink_to",
    "readlink",
}
OS_CALLS = {
    "open",
    "chown",
    "lchown",
    "chmod",
    "listdir",
    "scandir",
    "walk",
    "fwalk",
    "rename",
    "replace",
    "remove",
    "unlink",
    "rmdir",
    "mkdir",
    "makedirs",
    "stat",
    "lstat",
    "link",
    "symlink",
    "readlink",
    "truncate",
}
OS_PATH_CALLS = {"exists", "lexists", "isfile", "isdir", "islink", "getsize", "getmtime"}
SHUTIL_HARMLESS = {"which"}  # a PATH lookup: touches no tree
MARK = "# host-path:"


def host_side_files() -> list[Path]:
    files: set[Path] = set()
    for entry in HOST_SIDE:
        path = FRAMEWORK / entry
        if path.is_dir():
            files.update(path.rglob("*.py"))
        elif path.is_file():
            files.add(path)
    skipped = EXEMPT | NOT_YET
    return sorted(f for f in files if f.relative_to(FRAMEWORK).as_posix() not in skipped)


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def raw_call(call: ast.Call) -> str | None:
    """The name of the raw file-system call ``call`` makes, or None."""
    func = call.func
    if isinstance(func, ast.Name):
        return "open" if func.id == "open" else None
    if not isinstance(func, ast.Attribute):
        return None
    receiver = _dotted(func.value)
    if receiver == "safefs":
        return None
    if receiver == "os":
        return f"os.{func.attr}" if func.attr in OS_CALLS else None
    if receiver == "os.path":
        return f"os.path.{func.attr}" if func.attr in OS_PATH_CALLS else None
    if receiver == "shutil":
        return None if func.attr in SHUTIL_HARMLESS else f"shutil.{func.attr}"
    if func.attr in PATH_METHODS:
        if func.attr == "replace" and len(call.args) + len(call.keywords) != 1:
            return None  # str.replace(old, new): Path.replace takes one target
        return f".{func.attr}()"
    return None


def _own_span(statement: ast.stmt) -> tuple[int, int]:
    """The lines a statement owns: a compound statement's header, not its body (a mark in an
    ``if`` block's body must not excuse a call in its test)."""
    end = statement.end_lineno or statement.lineno
    body = getattr(statement, "body", None)
    if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
        end = max(statement.lineno, body[0].lineno - 1)
    return statement.lineno, end


def offenders(source: str, name: str) -> Iterator[str]:
    lines = source.splitlines()
    tree = ast.parse(source, name)
    spans = [_own_span(n) for n in ast.walk(tree) if isinstance(n, ast.stmt)]

    def marked(call: ast.Call) -> bool:
        holding = [s for s in spans if s[0] <= call.lineno <= s[1]]
        start, end = min(holding, key=lambda s: s[1] - s[0], default=(call.lineno, call.lineno))
        end = max(end, call.end_lineno or call.lineno)
        if start > 1 and lines[start - 2].strip().startswith(MARK):
            start -= 1
        return any(_has_reason(lines[i - 1]) for i in range(start, end + 1))

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (what := raw_call(node)) and not marked(node):
            yield f"{name}:{node.lineno}: {what}"


def _has_reason(line: str) -> bool:
    _, found, why = line.partition(MARK)
    return bool(found) and bool(why.strip())


def test_host_side_code_touches_agent_trees_only_through_safefs() -> None:
    found = sorted(
        offence
        for path in host_side_files()
        for offence in offenders(path.read_text(), path.relative_to(REPO_ROOT).as_posix())
    )
    assert not found, (
        "raw file-system calls in host-side code: use framework/safefs.py for anything in the "
        "workspace, the agent home, a run directory or the channel, or mark a host-owned path with "
        "'# host-path: <why>' on the line:\n  " + "\n  ".join(found)
    )


def test_a_new_plain_open_of_a_run_dir_file_fails_the_scan() -> None:
    broker = FRAMEWORK / "dispatch" / "broker.py"
    planted = broker.read_text() + (
        "\n\ndef _peek(run_dir: Path) -> str:\n"
        '    with open(run_dir / "metrics.json") as fh:\n'
        "        return fh.read()\n"
    )
    found = list(offenders(planted, "broker.py"))
    assert found and found[-1].endswith(": open")


def test_the_lint_sees_raw_calls_and_honours_only_a_reasoned_mark() -> None:
    source = (
        "import os, shutil\n"
        "open(p)\n"
        "p.read_text()\n"
        "os.chown(p, 1, 1)\n"
        "shutil.copyfile(a, b)\n"
        "p.replace(q)\n"
        "text.replace('a', 'b')\n"
        "safefs.replace(root, 'x', b'')\n"
        "shutil.which('bwrap')\n"
        "open(ledger)  # host-path: the ledger, outside every sandbox\n"
        "# host-path: the session store\n"
        "store.mkdir(\n    parents=True,\n)\n"
        "open(q)  # host-path:\n"
        "if p.exists():\n"
        "    x = 1  # host-path: a mark in the body does not excuse the test above\n"
    )
    assert list(offenders(source, "m.py")) == [
        "m.py:2: open",
        "m.py:3: .read_text()",
        "m.py:4: os.chown",
        "m.py:5: shutil.copyfile",
        "m.py:6: .replace()",
        "m.py:15: open",
        "m.py:16: .exists()",
    ]


def test_the_scope_names_modules_that_exist() -> None:
    files = {p.relative_to(FRAMEWORK).as_posix() for p in host_side_files()}
    for expected in (
        "dispatch/broker.py",
        "dispatch/runner.py",
        "dispatch/jobsandbox.py",
        "sandbox/launch.py",
        "sandbox/store.py",
        "prompts.py",
        "init.py",
        "agents/base.py",
    ):
        assert expected in files
