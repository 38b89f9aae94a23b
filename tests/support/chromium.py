"""Headless Chromium (Debian's `chromium`) as a user's browser: the DOM of a page after its scripts ran."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
# Running as root needs --no-sandbox; the rest keeps it from phoning home (there is no network to phone).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--virtual-time-budget=15000",  # let the page's scripts fetch /openapi.json and render
)


def chromium_binary() -> str:
    """The chromium executable; skips (fails in CI, where .ci/run installs it) when there is none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "headless Chromium is not installed (apt-get install chromium; .ci/run installs it)"
        if IN_CI:
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    return found


def dump_dom(url: str, *, prefix: Sequence[str] = (), timeout: float = 120) -> str:
    """`chromium --headless --dump-dom URL`, optionally run through `prefix` (e.g. nsenter into a container's
    network namespace)."""
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        result = subprocess.run(
            [*prefix, binary, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    assert result.returncode == 0, f"chromium failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result.stdout
