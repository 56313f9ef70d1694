"""`configbus up` from a wheel installed in a fresh venv, run outside the checkout."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow

_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".configbus", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


def test_up_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE, symlinks=True)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("configbus-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    # Dependencies come from the test venv as a plain path: its .pth files (the editable
    # install of the checkout among them) are not processed, so configbus comes only from
    # the wheel.
    (site / "_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([*pip, "--python", python, "install", "--no-deps", wheel], check=True)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONFIGBUS_", "PYTHON"))}
    where = subprocess.check_output(
        [python, "-c", "import configbus; print(configbus.__file__)"], cwd=outside, text=True
    )
    assert where.startswith(str(site)), where

    proc = subprocess.Popen(
        [venv / "bin" / "configbus", "up", "--port-base", "0", "--run-dir", outside / "run"],
        cwd=outside,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "Ctrl-C stops the fleet" not in "".join(lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        out = "".join(lines)
        assert "Ctrl-C stops the fleet" in out, out
        replica = re.search(r"replica-1\s+(\S+)", out)
        key = re.search(r"client key:\s+(\S+)", out)
        assert replica and key, out
        answer = httpx.post(
            replica[1] + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key[1]}"},
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == 0
