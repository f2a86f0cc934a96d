"""Every runtime dependency installs from wheels on Linux aarch64 (CPython 3.11 and 3.13).

Runs scripts/check_aarch64_wheels.sh, which needs PyPI and downloads ~60 MB, so it is opt-in:
TINYPDS_CHECK_WHEELS=1 pytest tests/ops/test_wheels.py (.ci/run runs the script directly).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_aarch64_wheels.sh"


@pytest.mark.slow
def test_runtime_dependencies_have_aarch64_wheels():
    if os.environ.get("TINYPDS_CHECK_WHEELS") != "1":
        pytest.skip("needs PyPI and ~60 MB of downloads; set TINYPDS_CHECK_WHEELS=1 (CI runs the script directly)")
    out = subprocess.run([str(SCRIPT)], env={**os.environ, "PYTHON": sys.executable},
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for version in ("3.11", "3.13"):
        assert f"== CPython {version}" in out.stdout
    assert "apsw-" in out.stdout and "manylinux" in out.stdout and "aarch64" in out.stdout
