"""Network attempts, judged against the sandbox's network policy.

One detector (:func:`network_attempts`) finds what a shell command or a web tool call tries to
reach, and the host when the command names one. Two checks judge the attempts: under policy 'none'
``network-when-offline`` reports any attempt that leaves loopback; under 'allowlist'
``network-egress`` reports named hosts missing from ``sandbox.network_allowlist``. Under 'open'
neither reports anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from framework.audit.checks.base import CheckContext, Severity, StreamingCheck, Verdict
from framework.audit.checks.shell import git_subcommand
from framework.audit.events import Event, EventKind, Kinds

NETWORK_PROGRAMS = frozenset(
    {
        "curl",
        "wget",
        "ssh",
        "scp",
        "sftp",
        "ftp",
        "nc",
        "ncat",
        "netcat",
        "telnet",
        "aria2c",
        "http",
        "https",
        "lynx",
        "links",
    }
)
NETWORK_GIT = frozenset({"clone", "fetch", "pull", "push", "ls-remote", "submodule"})
NETWORK_INSTALLERS = {
    "pip": "install",
    "pip3": "install",
    "npm": "install",
    "apt-get": "install",
    "apt": "install",
    "uv": "add",
}
NETWORK_WORDS = NETWORK_PROGRAMS | {"git", *NETWORK_INSTALLERS}
"""Programs whose command lines this module reads (besides ``python*``)."""
WEB_TOOLS = frozenset({"webfetch", "websearch", "web_fetch", "web_search", "google_web_search"})


def _options(names: str) -> frozenset[str]:
    return frozenset(names.split())


VALUE_OPTIONS = {
    "curl": _options(
        "-o -d -H -u -A -e -x -T -F -X -b -c -K -w -m -r -E -U -Y -y -z --output --data "
        "--data-binary --data-raw --header --user --user-agent --referer --proxy --upload-file "
        "--form --request --cookie --cookie-jar --config --write-out --max-time --connect-timeout "
        "--retry --range --cert --key --cacert --resolve --connect-to"
    ),
    "wget": _options("-O -o -a -P -e -t -T -U -w -i -B --output-document --user-agent"),
    "ssh": _options("-b -c -D -E -e -F -I -i -J -L -l -m -O -o -p -Q -R -S -W -w"),
    "nc": _options("-e -i -I -O -p -q -s -T -V -w -X -x"),
}
"""Options whose value is the next word, so that word is not taken for the host."""
VALUE_OPTIONS["ncat"] = VALUE_OPTIONS["netcat"] = VALUE_OPTIONS["nc"]
URL = re.compile(r"\b[a-zA-Z][\w+.-]*://[^\s'\"\\)<>]+")
SCP_LIKE = re.compile(r"^(?:[\w.-]+@)?([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|localhost):")
BARE_HOST = re.compile(
    r"^(?:[\w.+-]+@)?([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}|localhost|\d{1,3}(?:\.\d{1,3}){3})"
    r"(?::\d+)?(?:/\S*)?$"
)
PYTHON_NETWORK = re.compile(r"urllib|requests|http\.client|httpx|aiohttp|socket|urlopen")
PYTHON_HOST = re.compile(
    r"(?:HTTPS?Connection|create_connection|connect|gethostbyname|getaddrinfo)"
    r"\(\s*\(?\s*['\"]([^'\"\s]+)['\"]"
)
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "::1", "0.0.0.0"})


@dataclass(frozen=True)
class Attempt:
    """What ``program`` tries to reach: ``host`` when the command names one, else None (``pip
    install numpy`` and ``git fetch origin`` use the network without naming a host)."""

    program: str
    host: str | None


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    return host in LOOPBACK_NAMES or host.startswith("127.") or host.endswith(".localhost")


def network_attempts(event: Event, argv: list[list[str]] | None) -> list[Attempt]:
    """Network attempts of a web tool call or a shell command (one per host it names)."""
    if event.kind is Kinds.TOOL_CALL:
        tool = event.tool or ""
        if tool.lower() not in WEB_TOOLS:
            return []
        hosts = _url_hosts(event.text or "")
        return [Attempt(tool, h) for h in hosts] or [Attempt(tool, None)]
    command = event.command or ""
    found: list[Attempt] = []
    for words in argv or ():
        if words and (words[0] in NETWORK_WORDS or words[0].startswith("python")):
            found.extend(_command_attempts(words))
    if "python" in command and PYTHON_NETWORK.search(command):
        # The code may sit in -c, a heredoc or a pipe; the literal hosts are what the audit can see.
        hosts = _url_hosts(command) + PYTHON_HOST.findall(command)
        found.extend(Attempt("python", h.lower()) for h in hosts)
    if not found:
        return found
    unique: dict[tuple[str, str | None], Attempt] = {}
    for attempt in found:
        unique.setdefault((attempt.program, attempt.host), attempt)
    return list(unique.values())


def _command_attempts(words: list[str]) -> list[Attempt]:
    program = words[0]
    args = words[1:]
    hosts: list[str] = []
    if program in NETWORK_PROGRAMS:
        hosts = _url_hosts(" ".join(args)) or _program_hosts(program, args)
    elif program == "git":
        git = git_subcommand(words)
        if git is None or git[0] not in NETWORK_GIT:
            return []
        program = "git " + git[0]
        for arg in git[1]:
            scp = SCP_LIKE.match(arg)
            hosts.extend(_url_hosts(arg) or ([scp.group(1)] if scp else []))
    elif _is_pip(words) or (
        program in NETWORK_INSTALLERS and NETWORK_INSTALLERS[program] in args[:2]
    ):
        hosts = _url_hosts(" ".join(args))
    else:
        return []
    return [Attempt(program, h.lower()) for h in hosts] or [Attempt(program, None)]


def _is_pip(words: list[str]) -> bool:
    """``pip install``/``pip download`` (also ``python -m pip ...``): they fetch packages."""
    if words[0].startswith("python") and words[1:3] == ["-m", "pip"]:
        words = words[2:]
    return words[0] in ("pip", "pip3") and len(words) > 1 and words[1] in ("install", "download")


def _program_hosts(program: str, args: list[str]) -> list[str]:
    """Hosts named without a scheme: ``ssh user@host``, ``scp f host:dir``, ``nc host 80``."""
    takes_value = VALUE_OPTIONS.get(program, frozenset())
    positional: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in takes_value
        else:
            positional.append(arg)
    if program in ("scp", "sftp"):
        return [m.group(1) for a in positional if (m := SCP_LIKE.match(a))]
    for arg in positional:
        match = BARE_HOST.match(arg)
        if match:
            return [match.group(1)]
    return []


def _url_hosts(text: str) -> list[str]:
    if "://" not in text:
        return []
    hosts = []
    for url in URL.findall(text):
        try:
            host = urlsplit(url).hostname
        except ValueError:
            continue
        if host:
            hosts.append(host)
    return hosts


NETWORK_KINDS = frozenset({EventKind.SHELL_COMMAND, EventKind.TOOL_CALL})


class NetworkWhenOffline(StreamingCheck):
    id = "network-when-offline"
    severity = Severity.ERROR
    title = "network used although the policy is 'none'"
    kinds = NETWORK_KINDS
    stateless = True

    def applies(self, ctx: CheckContext) -> bool:
        return ctx.config.network_policy == "none"

    def judge(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> list[Verdict]:
        for attempt in network_attempts(event, argv):
            if attempt.host is None or not is_loopback(attempt.host):
                where = attempt.host or "the network"
                message = f"{attempt.program} reaches {where} although the network policy is 'none'"
                return [(message, event.command or event.text)]
        return []


class NetworkEgress(StreamingCheck):
    id = "network-egress"
    severity = Severity.WARNING
    title = "network access to a host off the allowlist"
    kinds = NETWORK_KINDS
    stateless = True

    def applies(self, ctx: CheckContext) -> bool:
        return ctx.config.network_policy == "allowlist"

    def judge(self, event: Event, argv: list[list[str]] | None, ctx: CheckContext) -> list[Verdict]:
        attempts = network_attempts(event, argv)
        if not attempts:
            return []
        refused = sorted(
            {
                f"{a.host} ({a.program})"
                for a in attempts
                if a.host is not None and not is_loopback(a.host) and not ctx.host_allowed(a.host)
            }
        )
        if not refused:
            return []
        message = (
            f"tries to reach {', '.join(refused)}: not in sandbox.network_allowlist "
            "(the sandbox's egress proxy refuses it)"
        )
        return [(message, event.command or event.text)]
