"""Where every entry point writes: metrics.json and matplotlib (Agg) figures in one run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_metrics(out: Path, metrics: dict[str, Any]) -> Path:
    """Write metrics.json into ``out`` (created if missing); mpmath numbers become strings."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    return path


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (imported lazily: it is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
