"""Headless Chromium for the HTML report: load it (DOM dump after the page's load event) and take a
PNG screenshot. Chromium comes from the system (tools/system-deps.sh browser: Debian's chromium).
The browser gets a new empty profile folder, no network features, and a time limit."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--hide-scrollbars")


class BrowserError(RuntimeError):
    pass


def find_chromium() -> str | None:
    return next((p for p in (shutil.which(c) for c in CANDIDATES) if p), None)


@dataclass
class PageLoad:
    dom: str
    console_errors: list[str]  # console messages at error level and uncaught exceptions
    stderr: str

    def figures(self) -> tuple[int, int] | None:
        """(decoded, total) figures, as the report's own load handler recorded them on <body>."""
        m = re.search(r'data-figures="(\d+)/(\d+)"', self.dom)
        return (int(m.group(1)), int(m.group(2))) if m else None


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise BrowserError("no Chromium found (install it: tools/system-deps.sh browser)")
    with tempfile.TemporaryDirectory(prefix="trainscale-chromium-") as profile:
        cmd = [exe, *FLAGS, f"--user-data-dir={profile}", *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"Chromium did not finish within {timeout_s:g} s") from None


def load(html_file: Path, timeout_s: float = 120) -> PageLoad:
    """The DOM after the page loaded (its scripts ran), and the console errors it logged."""
    url = Path(html_file).resolve().as_uri()
    proc = _run(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", url], timeout_s)
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise BrowserError(f"Chromium failed on {html_file} (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
    errors = [line for line in proc.stderr.splitlines()
              if ("CONSOLE" in line and ("ERROR" in line.split("CONSOLE")[0] or "Uncaught" in line))
              or "Uncaught" in line]
    return PageLoad(dom=proc.stdout, console_errors=errors, stderr=proc.stderr)


def screenshot(html_file: Path, png: Path, width: int = 1400, height: int = 3000, timeout_s: float = 120) -> Path:
    url = Path(html_file).resolve().as_uri()
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    proc = _run([f"--screenshot={png}", f"--window-size={width},{height}", "--virtual-time-budget=5000", url],
                timeout_s)
    if proc.returncode != 0 or not png.exists() or png.stat().st_size == 0:
        raise BrowserError(f"Chromium wrote no screenshot of {html_file} (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-400:]}")
    return png
