"""Split a command line into simple commands (argv lists) and the files it redirects into."""

from __future__ import annotations

import shlex

OPERATORS = frozenset({"&&", "||", ";", "|", "&", ";;", "(", ")", "|&"})
REDIRECTS = frozenset({">", ">>", "&>", "&>>", ">|", "1>", "2>", "1>>", "2>>"})
WRAPPERS = frozenset(
    {"sudo", "env", "nohup", "time", "timeout", "nice", "exec", "command", "xargs"}
)


def split_command(command: str) -> list[list[str]]:
    """Simple commands of ``command``; a redirect target appears as ``[">", path]``.

    Uses shell-like tokenizing (quotes, ``&&``, ``|``, ``;``, newlines). Text that does not tokenize
    (an unclosed quote in a heredoc) falls back to whitespace splitting, so a check still sees words.
    """
    lexer = shlex.shlex(
        command.replace("\\\n", " ").replace("\n", " ; "), posix=True, punctuation_chars=";&|()<>"
    )
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:
        tokens = command.split()
    commands: list[list[str]] = []
    current: list[str] = []
    pending_redirect = False
    for token in tokens:
        if pending_redirect:
            commands.append([">", token])
            pending_redirect = False
        elif token in OPERATORS:
            if current:
                commands.append(current)
            current = []
        elif token in REDIRECTS or (token.endswith(">") and token.rstrip(">").isdigit()):
            pending_redirect = True
        elif token in ("<", "<<", "<<<"):
            continue
        else:
            current.append(token)
    if current:
        commands.append(current)
    return [_unwrap(c) for c in commands]


def _unwrap(argv: list[str]) -> list[str]:
    """Drop ``sudo``/``env X=1``/``timeout 10`` style prefixes so argv[0] is the real program."""
    while argv:
        head = argv[0]
        if "=" in head and not head.startswith("=") and head.split("=", 1)[0].isidentifier():
            argv = argv[1:]
        elif head.rsplit("/", 1)[-1] in WRAPPERS:
            argv = argv[1:]
            while argv and (argv[0].startswith("-") or argv[0].replace(".", "").isdigit()):
                argv = argv[1:]
        else:
            break
    if argv:
        argv = [argv[0].rsplit("/", 1)[-1], *argv[1:]]
    return argv


def git_subcommand(argv: list[str]) -> tuple[str, list[str]] | None:
    """``("push", [args])`` for ``git [-C dir] [-c k=v] push args``; None when not a git command."""
    if not argv or argv[0] != "git":
        return None
    rest = argv[1:]
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in ("-C", "-c", "--git-dir", "--work-tree", "--namespace") and rest:
            rest.pop(0)
    if not rest:
        return None
    return rest[0], rest[1:]
