"""The HTML audit report in a real headless Chromium: no console errors, findings visible, not blank."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from framework.audit.audit import resolve, run_audit
from framework.audit.render.html import render_html
from framework.config import Settings
from tests.support import unavailable

pytestmark = pytest.mark.browser

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"
CLAUDE = FIXTURES / "claude" / "-work-project" / "5b0c6f1e-0d5a-4c1e-9a57-2f7f1b0b9c01.jsonl"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    unavailable(
        "chromium", "not on PATH (apt-get install -y chromium; see .ci/components/50-chromium.sh)"
    )
    raise AssertionError("unreachable")


def browse(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def console_errors(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)
    ]


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Decode an 8-bit RGB(A) PNG with the standard library: width, height, raw scanlines."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 4
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), "expected 8-bit RGB or RGBA"
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    pixels = bytearray()
    previous = bytearray(stride)
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (
                    line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)
                ) & 255
        pixels += line
        previous = line
    return width, height, bytes(pixels)


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    report = run_audit(resolve(str(CLAUDE)), Settings(), Path("/work/project"))
    page = tmp_path_factory.mktemp("report") / "audit.html"
    page.write_text(render_html(report))
    return page


def test_report_loads_without_console_errors(report_page: Path, tmp_path: Path) -> None:
    done = browse(report_page, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_errors(done.stderr) == []


def test_console_error_detection_catches_a_broken_page(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    done = browse(broken, tmp_path / "profile", "--dump-dom")
    assert console_errors(done.stderr), "the detector must see an uncaught error"


def test_findings_are_in_the_rendered_dom_and_link_to_events(
    report_page: Path, tmp_path: Path
) -> None:
    dom = browse(report_page, tmp_path / "profile", "--dump-dom").stdout
    for check in (
        "success-after-failure",
        "protected-path-modified",
        "git-no-verify",
        "git-add-all",
        "pip-with-uv",
    ):
        assert check in dom
    assert 'class="finding"' in dom
    assert dom.count('href="#e') >= 5
    assert 'id="e7"' in dom  # the success claim the first finding links to


def test_screenshot_is_not_blank(report_page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    done = browse(
        report_page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1000,800"
    )
    assert shot.is_file(), done.stderr[-2000:]
    width, height, pixels = png_pixels(shot)
    assert (width, height) == (1000, 800)
    sample = pixels[::97]
    mean = sum(sample) / len(sample)
    variance = sum((v - mean) ** 2 for v in sample) / len(sample)
    assert variance > 100, f"screenshot looks blank (variance {variance:.1f})"
    assert len(set(sample)) > 20


def test_token_chart_draws_each_models_bars_on_that_models_row(tmp_path: Path) -> None:
    """Each model's segments (input, cache read, cache write, output) lie on its own row, the
    row of its label: the chart once took the row from the inner loop's index."""
    import json
    import re

    lines = []
    for n, model in enumerate(["claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5"]):
        usage = {
            "input_tokens": 100 * (n + 1),
            "output_tokens": 50,
            "cache_read_input_tokens": 400,
            "cache_creation_input_tokens": 30,
        }
        message = {
            "id": f"m{n}",
            "role": "assistant",
            "model": model,
            "usage": usage,
            "content": [{"type": "text", "text": "ok"}],
        }
        lines.append(
            json.dumps(
                {
                    "type": "assistant",
                    "sessionId": "s",
                    "parentUuid": None,
                    "requestId": f"r{n}",
                    "message": message,
                }
            )
        )
    transcript = tmp_path / "s.jsonl"
    transcript.write_text("\n".join(lines) + "\n")
    page = tmp_path / "audit.html"
    page.write_text(render_html(run_audit(resolve(str(transcript)), Settings(), tmp_path)))
    dom = browse(page, tmp_path / "profile", "--dump-dom").stdout
    svg = dom[dom.index('aria-label="tokens per model"') :]
    svg = svg[: svg.index("</svg>")]
    rows: dict[str, set[str]] = {}
    for model, y in re.findall(
        r'<rect class="bar" data-model="([^"]+)" x="[^"]+" y="([^"]+)"', svg
    ):
        rows.setdefault(model, set()).add(y)
    labels = dict(re.findall(r'<text x="0" y="([^"]+)" font-size="12">([^<]+)</text>', svg))
    assert len(rows) == 3 and all(len(ys) == 1 for ys in rows.values()), rows
    for label_y, model in labels.items():
        (bar_y,) = rows[model]
        assert float(bar_y) + 12 == float(label_y), (model, bar_y, label_y)
    shot = tmp_path / "chart.png"
    browse(page, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1000,1400")
    assert shot.is_file()
