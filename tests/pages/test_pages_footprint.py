"""The pages cost an idle server nothing: building the whole app (routes, template config)
imports neither jinja2 nor the 2FA libraries; the first page rendered loads jinja2. Fresh
interpreters, since this test process has imported everything already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LAZY = ("jinja2", "pyotp", "webauthn", "qrcode")

_SCRIPT = """
import json, sys
from tinypds.app import create_app
from tinypds.config import load_settings
app = create_app(load_settings({"data_dir": sys.argv[1]}, environ={}))
before = sorted(m for m in sys.modules if m.split(".")[0] in %r)
app.template_engine.get_template("signin.html")
after = "jinja2" in sys.modules
print(json.dumps([before, after]))
""" % (LAZY,)


def test_building_the_app_imports_no_template_or_2fa_library(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYPDS_")}
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "data")], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == [] and after is True
