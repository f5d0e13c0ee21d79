"""Which sandbox runtimes work on this host, and why the others do not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from framework.sandbox.cgroups import cgroup_support
from framework.sandbox.runtime import RUNTIME_MODULES, get_runtime


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _user_namespaces() -> Check:
    limit = Path("/proc/sys/user/max_user_namespaces")
    legacy = Path("/proc/sys/kernel/unprivileged_userns_clone")
    if limit.exists() and limit.read_text().strip() == "0":  # host-path: /proc/sys
        return Check("user namespaces", False, "user.max_user_namespaces = 0 (bwrap cannot run)")
    if legacy.exists() and legacy.read_text().strip() == "0":  # host-path: /proc/sys
        return Check("user namespaces", False, "kernel.unprivileged_userns_clone = 0")
    return Check("user namespaces", True, "enabled")


def _cgroups() -> Check:
    # host-path: /sys/fs/cgroup
    mode = "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1/hybrid"
    ok, detail = cgroup_support()
    return Check(f"cgroups ({mode})", ok, detail)


def _host_git() -> Check:
    from framework.hostgit import missing_requirement

    problem = missing_requirement()
    detail = "git on the agent's repository runs confined in bubblewrap, for every runtime"
    return Check("host git (confined)", problem is None, problem or detail)


def diagnose() -> list[Check]:
    """One check per runtime plus the kernel features they rely on, and host git's sandbox."""
    checks = [_user_namespaces(), _cgroups(), _host_git()]
    for name in RUNTIME_MODULES:
        try:
            availability = get_runtime(name).availability()
        except Exception as exc:
            checks.append(Check(name, False, f"probe failed: {exc}"))
            continue
        checks.append(Check(name, availability.ok, availability.detail))
    return checks
