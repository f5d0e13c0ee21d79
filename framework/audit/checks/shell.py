"""Split a command line into simple commands (argv lists) and the files it redirects into."""

from __future__ import annotations

import re

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
    tokens = _tokens(command.replace("\\\n", " ").replace("\n", " ; "))
    if tokens is None:
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


PUNCTUATION = r"[;&|()<>]+"
WORD = r"""(?:[^ \t\r\n;&|()<>'"\\]+|\\[\s\S]|'[^']*'|"(?:[^"\\]|\\[\s\S])*")+"""
TOKEN = re.compile(rf"({PUNCTUATION})|({WORD})|[^ \t\r\n]")
"""A run of operator characters, a word (plain text, escaped characters, quoted strings), or a
character that starts neither: a quote never closed or a backslash at the end."""
PART = re.compile(r"""\\([\s\S])|'([^']*)'|"((?:[^"\\]|\\[\s\S])*)"|([^'"\\]+)""")
QUOTED_ESCAPE = re.compile(r"\\([\\\"])")


def _tokens(text: str) -> list[str] | None:
    """The tokens ``shlex.shlex(text, posix=True, punctuation_chars=";&|()<>")`` yields with
    ``whitespace_split`` on and no comment characters, or None where it raises ValueError (an
    unclosed quote, a trailing backslash). Same rules, done with two regexes instead of shlex's
    character-by-character Python loop, which cost about 1 µs a character: a tenth of a second for
    a hundred long commands, and a long session has tens of thousands of distinct ones.

    Words are runs of characters other than whitespace (space, tab, CR, LF) and ``;&|()<>``; in
    them ``\\x`` is ``x``, single quotes keep everything, and in double quotes a backslash only
    escapes ``\\`` and ``"``. A run of ``;&|()<>`` characters is one token."""
    tokens: list[str] = []
    for operator, word in TOKEN.findall(text):
        if operator:
            tokens.append(operator)
        elif not word:
            return None
        elif "'" in word or '"' in word or "\\" in word:
            tokens.append("".join(map(_unquote, PART.findall(word))))
        else:
            tokens.append(word)
    return tokens


def _unquote(part: tuple[str, str, str, str]) -> str:
    escaped, single, double, plain = part
    if double:
        return QUOTED_ESCAPE.sub(r"\1", double)
    return escaped or single or plain


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
