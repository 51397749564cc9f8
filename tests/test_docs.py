"""A newcomer with only the repository reaches every file README.md and docs/*.md mention."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
#: where a repository path can start
TOP = ("subquad/", "docs/", "experiments/", "results/", "tests/", "benchmarks/", "Makefile",
       "pyproject.toml", "README.md")
#: outputs that a documented command creates (they are not in a fresh clone, by design)
OUTPUTS = ("results/smoke", "results/check-scaling/run", "results/check-scaling/fresh")
#: a repository path anywhere in the text (prose, code spans, code blocks), and the character
#: after it: a path followed by a placeholder (`results/<name>/`, `experiments/*.toml`) is a
#: pattern, not a file
PATH = re.compile(r"(?<![\w/.$-])((?:subquad|docs|experiments|results|tests|benchmarks)/"
                  r"[\w./-]*|Makefile|pyproject\.toml|README\.md)(.?)")
LINK = re.compile(r"\]\(([^)\s#]+)")


def _mentioned(doc: Path) -> set[str]:
    text = doc.read_text()
    found = set()
    for link in LINK.findall(text):
        if not link.startswith(("http://", "https://", "mailto:")):
            target = (doc.parent / link).resolve()
            found.add(str(target.relative_to(ROOT)) if target.is_relative_to(ROOT) else link)
    for path, after in PATH.findall(text):
        if after not in ("<", "*", "{", "$"):
            found.add(path.rstrip(".,;:"))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_a_document_mentions_exists(doc: Path) -> None:
    paths = _mentioned(doc)
    assert paths, f"{doc.name} mentions no repository path (the parser is broken?)"
    missing = sorted(p for p in paths if not (ROOT / p).exists()
                     and not p.rstrip("/").startswith(OUTPUTS))
    assert not missing, f"{doc.name} mentions paths a clone does not have: {missing}"


def test_readme_does_not_send_users_outside_the_repository() -> None:
    text = (ROOT / "README.md").read_text()
    assert "shared folder" not in text and "/work/shared" not in text
    for name in ("ALGORITHM.md", "MEASUREMENT.md", "CPU_KERNELS.md", "DESIGN.md"):
        assert f"docs/{name}" in text and (ROOT / "docs" / name).is_file()


def test_readme_names_every_experiment_key() -> None:
    """Every key the experiment parser accepts is named in a TOML block of the README, and
    every key the README's TOML blocks set is accepted: the two cannot drift apart."""
    from dataclasses import fields

    from subquad.harness import config as c

    accepted = {*c.TOP_KEYS, *c.METHOD_KEYS, *c.FIXED_KEYS, *c.SWEEP_KEYS, *c.FACTORIAL_KEYS,
                *c.GRID_KEYS, *c.EXECUTOR_KEYS, *c.FIT_KEYS, *c.TRAINING_KEYS,
                *c.CALIBRATION_KEYS, *(f.name for f in fields(c.Timing))}
    blocks = "\n".join(re.findall(r"```toml\n(.*?)```", README.read_text(), re.S))
    named = set(re.findall(r"[A-Za-z_]+", blocks))
    assert sorted(accepted - named) == []
    set_keys = set(re.findall(r"^\s*#?\s*([A-Za-z_]+)\s*=", blocks, re.M))
    set_keys |= set(re.findall(r"[{,]\s*([A-Za-z_]+)\s*=", blocks))
    assert sorted(set_keys - accepted) == []
