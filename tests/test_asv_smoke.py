"""Quick smoke of the asv suite on the checked-out code (part of make test, < 1 minute).

``asv check`` and ``asv run --python=same --quick --dry-run`` (the suite in this environment,
nothing recorded) over the fast benchmarks: the default counted-work exponents (four short
``subquad train`` runs). The machine file asv insists on goes to a temporary HOME and the
results directory to a temporary copy of the configuration (experiments/asv_conf.py), so the
user's ~/.asv-machine.json and the committed results/asv/ are left alone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAST = r"^work\.WorkExponents\."

pytestmark = pytest.mark.slow


def _asv(args: list[str], home: Path, timeout: float = 240) -> str:
    env = {**os.environ, "HOME": str(home)}
    conf = ["--config", str(home / "asv.conf.json")]
    proc = subprocess.run([sys.executable, "-m", "asv", *conf, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"asv {' '.join(args)} exited {proc.returncode}:\n{out[-3000:]}"
    return out


def test_asv_check_and_quick_run(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "experiments" / "asv_conf.py"),
                    str(tmp_path / "asv.conf.json"), f"results_dir={tmp_path / 'results'}",
                    f"html_dir={tmp_path / 'html'}", f"env_dir={tmp_path / 'env'}"],
                   check=True)
    out = _asv(["check", "--python=same"], tmp_path)
    assert "No problems found" in out, out
    _asv(["machine", "--yes", "--machine", "smoke"], tmp_path)
    out = _asv(["run", "--python=same", "--quick", "--dry-run", "--machine", "smoke",
                "--show-stderr", "-b", FAST], tmp_path)
    assert "failed" not in out.lower(), out[-3000:]
    values = dict(re.findall(r"(work\.WorkExponents\.track_\w+)\s+([-\d.e]+)\s*$", out, re.M))
    assert set(values) == {f"work.WorkExponents.track_{p}"
                           for p in ("iteration", "forward", "update", "backward")}, out[-3000:]
    # the subquadratic claim on this grid (counted work, deterministic): every phase tracked
    # grows slower than m^2 and faster than m
    for name, value in values.items():
        assert 1.0 < float(value) < 1.95, (name, value)
    assert not (ROOT / "results" / "asv" / "smoke").exists(), "the smoke recorded results"
