"""The experiment files of the tests' tiny sweeps, written once: methods, grid and timing."""

from __future__ import annotations

#: dense Gauss-Newton beside subquad with the scatter update
DENSE_AND_SCATTER = """
[[methods]]
method = "dense-gn"

[[methods]]
method = "subquad"
update = "scatter"
"""


def grid(values: str, samples: int = 2) -> str:
    """The [fixed], [[sweeps]] and [timing] tables: n = 4, d = 8, L = 2, m = ``values``."""
    return f"""
[fixed]
n = 4
d = 8
L = 2
seed = 0

[[sweeps]]
axis = "m"
values = [{values}]

[timing]
warmup = 1
samples = {samples}
min_sample_seconds = 0
cell_budget_seconds = 60
"""
