"""The claims engine's seams: a claim is one registered function, training claims are per
variant, every number comes from limits.toml, and every family goes through one downgrade."""

from pathlib import Path

import pandas as pd
import pytest

from subquad.analysis.claims import catalog
from subquad.analysis.claims.engine import (
    FAMILIES,
    Claim,
    evaluate,
    register,
)
from subquad.analysis.limits import load_limits
from subquad.analysis.report import write_report
from subquad.analysis.rundata import RunData
from subquad.files import read_table
from subquad.vocabulary import INCONCLUSIVE, REJECTED, SUPPORTED

PACKAGED = Path(catalog.__file__).parents[1] / "limits.toml"


def _limits(tmp_path: Path, **claims: object):
    """The packaged limits with keys of [claims] replaced."""
    text = PACKAGED.read_text()
    for key, value in claims.items():
        head, sep, tail = text.partition("\n[claims]\n")
        lines = [ln for ln in tail.splitlines() if not ln.startswith(f"{key} =")]
        text = head + sep + f"{key} = {value}\n" + "\n".join(lines) + "\n"
    path = tmp_path / "limits.toml"
    path.write_text(text)
    return load_limits(path)


def test_one_registered_function_is_a_new_claim(tmp_path: Path) -> None:
    """A function registered in a family reaches claims.csv and report.md with no other edit."""
    @register(catalog.FAMILIES[0])
    def sky(data: RunData, scope) -> list[Claim]:
        return [Claim("the sky is blue", "blue", "blue", verdict=SUPPORTED, reason="looked")]

    try:
        report = write_report(tmp_path).read_text()
    finally:
        FAMILIES[catalog.FAMILIES[0]].remove(sky)
    claims = read_table(tmp_path / "claims.csv", "claims.csv")
    assert claims[claims["claim"] == "the sky is blue"]["verdict"].tolist() == [SUPPORTED]
    assert "| the sky is blue | blue | blue | - | **supported** | looked |" in report


def _training(drift: float = 3.0) -> pd.DataFrame:
    """Two variants of subquad (adaptive threshold: activity near Q(beta); fixed: drifting) and
    dense-gn on the same networks, losses falling geometrically."""
    rows = []
    for method, threshold, ratio in (("subquad", "adaptive", 1.1), ("subquad", "fixed", drift),
                                     ("dense-gn", "adaptive", 1.0), ("dense-gn", "fixed", 1.0)):
        options = ("solver=cholesky;update=auto;lr=1" if method == "subquad"
                   else "solver=cholesky;lr=1")
        for it in range(5):
            for layer in range(3):
                rows.append({"cell": f"{method}|{threshold}", "method": method, "label": method,
                             "options": options, "threshold": threshold, "data": "synthetic",
                             "m": 1024, "n": 8, "d": 8, "L": 2, "c": 0.2, "seed": 0,
                             "iteration": it, "layer": layer, "loss": 0.1**it,
                             "active_fraction": 0.05 * (1 + (ratio - 1) * it / 4),
                             "expected_active_fraction": 0.05})
    return pd.DataFrame(rows)


def _verdicts(claims: list[Claim], start: str) -> dict[str, str]:
    return {c.claim: c.verdict for c in claims if c.claim.startswith(start)}


def test_training_claims_are_per_variant() -> None:
    """The fixed-threshold cells drift; the adaptive variant's verdict is its own."""
    _, claims = evaluate(RunData(Path("."), training=_training()), ["paper"])
    active = _verdicts(claims, "training: active fraction")
    assert active == {
        "training: active fraction stays near Q(beta) [dense-gn (cholesky), adaptive "
        "threshold]": SUPPORTED,
        "training: active fraction stays near Q(beta) [dense-gn (cholesky), fixed "
        "threshold]": SUPPORTED,
        "training: active fraction stays near Q(beta) [subquad (cholesky, auto), adaptive "
        "threshold]": SUPPORTED,
        "training: active fraction stays near Q(beta) [subquad (cholesky, auto), fixed "
        "threshold]": REJECTED}
    assert list(_verdicts(claims, "training: loss falls").values()) == [SUPPORTED] * 4
    same = _verdicts(claims, "training: subquad (exact solve)")
    assert list(same.values()) == [SUPPORTED] * 2 and all("subquad (cholesky" in k for k in same)


def test_tolerances_come_from_limits_toml(tmp_path: Path) -> None:
    """The near tolerance and the activity ratio of [claims] decide the verdicts."""
    fits = pd.DataFrame([{"fit": "slope", "axis": "n", "quantity": "work", "method": "subquad",
                          "phase": "gram", "options": "solver=cholesky", "context": "m=4096",
                          "fit_range": "n=4..256", "n_points": 7, "exponent": 2.0,
                          "ci_low": 1.95, "ci_high": 2.05}])
    data = RunData(Path("."), fits=fits, training=_training(drift=1.2))
    default = evaluate(data, ["axes", "paper"])[1]
    strict = evaluate(data, ["axes", "paper"], _limits(tmp_path, tolerance=0.01,
                                                       activity_ratio=1.1))[1]
    assert list(_verdicts(default, "gram work").values()) == [SUPPORTED]
    assert list(_verdicts(strict, "gram work").values()) == [INCONCLUSIVE]
    fixed = "training: active fraction stays near Q(beta) [subquad (cholesky, auto), fixed " \
            "threshold]"
    assert _verdicts(default, fixed)[fixed] == SUPPORTED
    assert _verdicts(strict, fixed)[fixed] == REJECTED


@pytest.mark.parametrize(("limits", "flagged", "note"), [
    ({"grid_axes": '["m", "n"]'}, False, "grid too small to judge (5 points"),
    ({}, True, "the calibration self-check flagged"),
])
def test_axis_claims_go_through_the_one_downgrade(tmp_path: Path, limits: dict,
                                                  flagged: bool, note: str) -> None:
    """An axis claim is downgraded by the same rules (grid, self-check) as an exponent in m."""
    fits = pd.DataFrame([{"fit": "slope", "axis": "n", "quantity": "seconds", "phase": "gram",
                          "method": "subquad", "options": "solver=cholesky", "context": "m=4096",
                          "fit_range": "n=4..64", "n_points": 5, "exponent": 2.0,
                          "ci_low": 1.98, "ci_high": 2.02}])
    check = pd.DataFrame([{"kernel": "calib-gemv", "exponent": 2.5, "ok": not flagged}])
    data = RunData(Path("."), fits=fits, selfcheck=check)
    (claim,) = evaluate(data, ["axes"], _limits(tmp_path, **limits))[1]
    assert claim.verdict == INCONCLUSIVE
    assert claim.reason.startswith("downgraded from supported") and note in claim.reason
    (plain,) = evaluate(RunData(Path("."), fits=fits), ["axes"])[1]
    assert plain.verdict == SUPPORTED
