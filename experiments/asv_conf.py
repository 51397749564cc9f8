"""Write a copy of asv.conf.json with some keys replaced and every path made absolute.

asv resolves the paths of a configuration relative to the file's directory; this lets a run
keep its results (or environments, or HTML) away from the committed results/asv/ without
editing asv.conf.json: `make asv-compare` records HEAD-vs-base runs under .asv/compare/.

    python experiments/asv_conf.py OUT.json [key=value ...]    (value: JSON, or a string)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from subquad.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
PATH_KEYS = ("repo", "benchmark_dir", "env_dir", "results_dir", "html_dir")


def derived(overrides: dict) -> dict:
    text = re.sub(r"^\s*//.*$", "", (ROOT / "asv.conf.json").read_text(), flags=re.M)
    conf = json.loads(text)
    conf.update(overrides)
    for key in PATH_KEYS:
        if key in conf and not Path(conf[key]).is_absolute():
            conf[key] = str((ROOT / conf[key]).resolve())
    return conf


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    overrides = {}
    for item in argv[1:]:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    out = Path(argv[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(derived(overrides), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
