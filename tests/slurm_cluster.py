"""A single-node Slurm cluster for the Slurm tests, through experiments/slurm/local-cluster.sh.

``cluster()`` reuses a cluster the script already runs (and leaves it running), or starts one
(installing the Debian packages with apt-get when missing, which needs root) and stops exactly
the daemons it started at the end of the session. Where neither is possible the Slurm tests
skip with the reason; with ``SUBQUAD_REQUIRE_SLURM=1`` (CI) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "slurm" / "local-cluster.sh"
DIR = Path(os.environ.get("SUBQUAD_SLURM_DIR", "/tmp/subquad-slurm"))
PARTITION = "debug"
#: apt-get update + install takes about a minute on a fresh machine; starting takes seconds
START_TIMEOUT_S = 900


def required() -> bool:
    return os.environ.get("SUBQUAD_REQUIRE_SLURM", "") == "1"


def unavailable(reason: str) -> None:
    """Skip (or, with SUBQUAD_REQUIRE_SLURM=1, fail) the test asking for the cluster."""
    if required():
        pytest.fail(f"SUBQUAD_REQUIRE_SLURM=1 but no Slurm cluster: {reason}", pytrace=False)
    pytest.skip(f"no Slurm cluster: {reason} (SUBQUAD_REQUIRE_SLURM=1 makes this a failure)")


def _script(command: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command, str(DIR)], capture_output=True,
                          text=True, timeout=timeout)


def _why_not() -> str | None:
    """Why this machine cannot start the cluster, or None."""
    if not sys.platform.startswith("linux"):
        return f"the local cluster script needs Linux, this is {sys.platform}"
    try:
        import submitit  # noqa: F401, PLC0415
    except ImportError:
        return "submitit is not installed (pip install 'subquad[cluster]')"
    if os.geteuid() != 0:
        return (f"starting munged, slurmctld and slurmd needs root (or start them first: "
                f"sudo {SCRIPT.relative_to(ROOT)} start)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "the Slurm packages are not installed and there is no apt-get to install them"
    return None


@contextmanager
def cluster() -> Iterator[dict]:
    """A running cluster for the session: {"conf", "partition", "started", "version"}."""
    started = False
    if _script("status", 60).returncode != 0:
        why = _why_not()
        if why is not None:
            unavailable(why)
        try:
            proc = _script("start", START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            unavailable(f"{SCRIPT.name} start took over {START_TIMEOUT_S} s")
        if proc.returncode != 0:
            unavailable(f"{SCRIPT.name} start failed: {(proc.stdout + proc.stderr)[-1500:]}")
        started = True
    conf = str(DIR / "slurm.conf")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    version = subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout
    try:
        yield {"conf": conf, "partition": PARTITION, "started": started,
               "version": version.strip()}
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        if started:
            _script("stop", 120)
