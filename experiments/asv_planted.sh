#!/usr/bin/env bash
# Planted regression for the asv suite (README, "Scaling history with asv"): in a temporary
# clone, a commit that makes subquad's update quadratic (the scatter update replaced by the
# dense rank-n update W += H^T (c V), counted as n m^2 multiply-adds) is placed between good
# commits of the real history; then
#   asv continuous BASE PLANTED   must exit non-zero and name work.WorkExponents.track_update
#   asv find BASE..TIP            must name the planted commit.
# Only the deterministic counted-work benchmarks run (work.WorkExponents), so the answer does
# not depend on the machine's noise. Output: results/asv-planted/ (logs and summary.md).
#
#   experiments/asv_planted.sh [OUT]          (make asv-planted)
#
# Environment: ASV (default .venv/bin/asv), ASV_MACHINE (default amd-epyc-2core-vm),
# PLANT_BASE (default 27b822a), PLANT_AFTER (default 31817c3; the planted commit goes on top of
# it), PLANT_TOP (default 2bce31b: the commits after PLANT_AFTER up to it are replayed on top).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/results/asv-planted}
ASV=${ASV:-$ROOT/.venv/bin/asv}
MACHINE=${ASV_MACHINE:-amd-epyc-2core-vm}
BASE=${PLANT_BASE:-27b822a}
AFTER=${PLANT_AFTER:-31817c3}
TOP=${PLANT_TOP:-2bce31b}
BENCH='^work\.WorkExponents\.'
WORK=$(mktemp -d /tmp/subquad-asv-planted.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

echo "asv-planted: cloning into $WORK/repo"
git clone --quiet --no-local "$ROOT" "$WORK/repo"
cd "$WORK/repo"
git config user.name "asv planted regression"
git config user.email "planted@localhost"
git checkout --quiet -b planted "$AFTER"

python3 - <<'PY'
from pathlib import Path

p = Path("subquad/model/subquadratic.py")
s = p.read_text()
old = ("                self.kern.update_scatter(net.Wt[l - 1], Hin, Vout, coef)\n"
       "                madds += block\n")
new = ("                # PLANTED REGRESSION: the dense rank-n update at every width\n"
       "                Hd, Vd = Hin.to_dense(self.xp), Vout.to_dense(self.xp)\n"
       "                net.Wt[l - 1] += Hd.T @ (coef[:, None] * Vd)\n"
       "                madds += float(Hin.n) * Hin.m * Vout.m\n")
assert s.count(old) == 1, "the scatter update lines to replace are not there"
p.write_text(s.replace(old, new))
PY
git commit --quiet -am "PLANTED: dense rank-n update at every width (quadratic update)"
PLANTED=$(git rev-parse HEAD)
for c in $(git rev-list --reverse "$AFTER..$TOP"); do
    git cherry-pick --quiet --allow-empty "$c" >/dev/null
done
TIP=$(git rev-parse HEAD)
BASE=$(git rev-parse "$BASE")

# the suite and its configuration come from this checkout; the project from the clone
python3 - "$ROOT" "$WORK" <<'PY'
import json
import re
import sys
from pathlib import Path

root, work = Path(sys.argv[1]), Path(sys.argv[2])
text = re.sub(r"^\s*//.*$", "", (root / "asv.conf.json").read_text(), flags=re.M)
conf = json.loads(text)
conf.update(repo=str(work / "repo"), benchmark_dir=str(root / "asv_bench"),
            env_dir=str(root / ".asv" / "env-planted"), results_dir=str(work / "results"),
            html_dir=str(work / "html"))
(work / "asv.conf.json").write_text(json.dumps(conf, indent=2))
PY
CONF=$WORK/asv.conf.json
{
    echo "# planted regression, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "history of the temporary clone (oldest first; BASE = $BASE):"
    echo
    git log --reverse --format='    %h %s' "$BASE~1..$TIP" | cut -c1-110
    echo
    echo "planted commit: $PLANTED"
} > "$OUT/history.txt"
cat "$OUT/history.txt"

cd "$WORK"
set +e
"$ASV" --config "$CONF" continuous --machine "$MACHINE" --factor 1.05 --show-stderr \
    -b "$BENCH" "$BASE" "$PLANTED" 2>&1 | tee "$OUT/continuous.txt"
CONT_RC=${PIPESTATUS[0]}
"$ASV" --config "$CONF" find --machine "$MACHINE" --show-stderr \
    "$BASE..$TIP" \
    '^work\.WorkExponents\.track_update$' 2>&1 | tee "$OUT/find.txt"
FIND_RC=${PIPESTATUS[0]}
set -e
FOUND=$(sed -n 's/.*Greatest regression found: \([0-9a-f]*\).*/\1/p' "$OUT/find.txt" | tail -1)

status=ok
[[ $CONT_RC -ne 0 ]] && grep -q "track_update" "$OUT/continuous.txt" || status=FAILED
[[ -n $FOUND && $PLANTED == "$FOUND"* ]] || status=FAILED
{
    echo "# Planted regression: result"
    echo
    echo "- status: **$status**"
    echo "- \`asv continuous --factor 1.05 $BASE ${PLANTED:0:8}\`: exit $CONT_RC"
    echo "  (continuous.txt; non-zero and naming work.WorkExponents.track_update expected)"
    echo "- \`asv find ${BASE:0:8}..${TIP:0:8} track_update\`: exit $FIND_RC, named"
    echo "  \`${FOUND:-nothing}\`; planted commit \`${PLANTED:0:8}\` (find.txt)"
    echo "- history of the clone: history.txt"
} > "$OUT/summary.md"
cat "$OUT/summary.md"
[[ $status == ok ]]
