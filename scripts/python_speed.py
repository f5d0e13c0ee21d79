"""Print how long this interpreter takes for a fixed piece of pure Python (seconds, best of 5);
exit 1 if it cannot build the project's environment (older than 3.11, or no venv module)."""

import sys
import time

if sys.version_info < (3, 11):
    sys.exit(1)
try:
    import ensurepip  # noqa: F401  (Debian ships it apart, in python3-venv)
    import venv  # noqa: F401
except ImportError:
    sys.exit(1)


class Point:
    __slots__ = ("x", "y")

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


def work() -> int:
    counts: dict[str, int] = {}
    total = 0
    for i in range(60_000):
        p = Point(i, i & 7)
        key = f"k{p.y}"
        counts[key] = counts.get(key, 0) + 1
        if key.startswith("k1") or p.x % 3 == 0:
            total += len(key)
    return total + sum(counts.values())


best = float("inf")
for _ in range(5):
    start = time.perf_counter()
    work()
    best = min(best, time.perf_counter() - start)
print(f"{best:.6f}")
