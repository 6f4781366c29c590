"""The datatrove extra is optional: without it the step says what to install, and neither
`import colorfilter` nor the API imports it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_step_without_datatrove_names_the_extra():
    done = python(
        "import sys; sys.modules['datatrove'] = None\n"
        "from colorfilter.errors import MissingExtraError\n"
        "try:\n    import colorfilter.integrations.datatrove\n"
        "except MissingExtraError as exc:\n    print(exc)"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "install it with: pip install 'colorfilter[datatrove]'" in done.stdout


def test_the_api_does_not_import_datatrove_or_load_on_import():
    done = python(
        "import sys, colorfilter as cf; assert 'colorfilter.api' not in sys.modules\n"
        "cf.load_config; print(sorted(m for m in ('datatrove', 'torch') if m in sys.modules))"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
