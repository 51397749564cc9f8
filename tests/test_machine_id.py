"""Machine ids differ whenever fingerprints do; ids stored before that keep working.

Two AMD EPYC VMs (48 KiB/1 MiB and 32 KiB/512 KiB L1d/L2) shared the old id 2c-24g-0d940d9a, so
recording a baseline on one overwrote the other's. Both are fabricated here from the committed
baseline's environment.json.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from subquad.analysis.check import find_baseline, run_check
from subquad.analysis.perfmodel.machine import load_calibration
from subquad.cli import main
from subquad.errors import ConfigError
from subquad.harness.calibrate import write_calibration
from subquad.harness.environment import fingerprint, machine_id

OLD_ID = "2c-24g-0d940d9a"
RECORDED = Path(__file__).resolve().parents[1] / "results" / "check-scaling" / "baselines" / OLD_ID
KIB = 1 << 10


def _envs() -> tuple[dict, dict]:
    """(the recorded 48 KiB/1 MiB machine, the same with 32 KiB/512 KiB L1d/L2)."""
    big = json.loads((RECORDED / "environment.json").read_text())
    small = copy.deepcopy(big)
    small["caches"][0]["size"], small["caches"][1]["size"] = 32 * KIB, 512 * KIB
    assert big["machine"] == small["machine"] == OLD_ID  # what both stored before
    return big, small


def _run(tmp_path: Path, name: str, env: dict) -> Path:
    """A tiny fitted run of ``env``: the committed baseline with its environment.json swapped."""
    run = tmp_path / name
    shutil.copytree(RECORDED, run)
    (run / "environment.json").write_text(json.dumps(env))
    return run


def test_cache_sizes_change_the_machine_id():
    big, small = _envs()
    assert fingerprint(big) != fingerprint(small)
    a, b = machine_id(big), machine_id(small)
    assert a != b and a.startswith("2c-24g-") and b.startswith("2c-24g-")
    assert machine_id(copy.deepcopy(big)) == a  # a function of the environment alone
    assert machine_id(dict(big, hostname="elsewhere", date_utc="x")) == a


def test_baselines_of_the_two_machines_do_not_overwrite_each_other(tmp_path, capsys):
    big, small = _envs()
    root = tmp_path / "baselines"
    shutil.copytree(RECORDED, root / OLD_ID)  # the big machine's baseline, stored by old id
    runs = {"big": _run(tmp_path, "big", big), "small": _run(tmp_path, "small", small)}
    for name in ("small", "big", "small"):
        assert main(["check", str(runs[name]), "--record-baseline", str(root)]) == 0
    capsys.readouterr()
    # the old-id directory held the big machine's fingerprint: migrated to its new id
    assert sorted(p.name for p in root.iterdir()) == sorted([machine_id(big), machine_id(small)])
    for env in (big, small):
        dest = root / machine_id(env)
        assert fingerprint(json.loads((dest / "environment.json").read_text())) \
            == fingerprint(env)
        assert find_baseline(root, env) == dest


def test_old_id_baselines_are_found_by_fingerprint(tmp_path):
    big, small = _envs()
    shutil.copytree(RECORDED, tmp_path / OLD_ID)
    assert find_baseline(tmp_path, dict(big, machine=machine_id(big))) == tmp_path / OLD_ID
    assert find_baseline(tmp_path, small) is None


def test_a_run_with_the_new_id_compares_seconds_with_its_old_id_baseline(tmp_path):
    """Same fingerprint, old id in the baseline, new id in the run: the factor gate decides."""
    big, _ = _envs()
    new = machine_id(big)
    run = _run(tmp_path, "run", dict(big, machine=new))
    for f in ("runs.csv", "fits.csv"):
        (run / f).write_text((RECORDED / f).read_text().replace(OLD_ID, new))
    factor = [r for r in run_check(run, RECORDED) if r.name.startswith("factor:")]
    assert factor and all(r.decided and r.passed for r in factor)
    other = _run(tmp_path, "other", dict(big, cpu_model="another CPU", machine="x"))
    (other / "runs.csv").write_text((RECORDED / "runs.csv").read_text().replace(OLD_ID, "x"))
    assert not any(r.decided for r in run_check(other, RECORDED)
                   if r.name.startswith("factor:"))


def test_old_id_calibration_entries_are_found_by_fingerprint(tmp_path):
    big, small = _envs()
    cal_big = json.loads((RECORDED / "calibration.json").read_text())["machines"][OLD_ID]
    assert fingerprint(cal_big) == fingerprint(big)
    cal_small = dict(copy.deepcopy(cal_big), machine="old-small", caches=small["caches"])
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"format": 1, "machines": {OLD_ID: cal_big,
                                                          "old-small": cal_small}}))
    got = load_calibration(path, machine_id(big))
    assert got.id == machine_id(big) and got.caches == cal_big["caches"]
    assert load_calibration(path, machine_id(small)).caches == small["caches"]
    assert load_calibration(path, OLD_ID).caches == cal_big["caches"]  # the stored id itself
    with pytest.raises(ConfigError, match="none is"):
        load_calibration(path, "2c-24g-00000000")


def test_write_calibration_keeps_each_fingerprint_apart(tmp_path):
    big, small = _envs()
    cal_big = json.loads((RECORDED / "calibration.json").read_text())["machines"][OLD_ID]
    path = tmp_path / "calibration.json"
    write_calibration(cal_big, path)  # as committed: the old id
    new_big = dict(cal_big, machine=machine_id(big), loop_rate=1.0)
    new_small = dict(cal_big, machine=machine_id(small), caches=small["caches"])
    write_calibration(new_small, path)
    write_calibration(new_big, path)  # replaces the old-id entry of its own fingerprint
    machines = json.loads(path.read_text())["machines"]
    assert sorted(machines) == sorted([machine_id(big), machine_id(small)])
    assert machines[machine_id(big)]["loop_rate"] == 1.0
    assert machines[machine_id(small)]["caches"] == small["caches"]
