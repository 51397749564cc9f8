"""``time_*``: one training iteration in process, one thread, at a few widths.

Uses ``subquad.model.train.TrainConfig`` and ``build_trainer`` (present at every benchmarked
commit): setup draws the network, runs the initial forward and one warm-up step (numba
compile, caches); each timed call is one ``Trainer.step()``. Kept short (one process, at
most 5 samples per width) so that a commit costs seconds here; the exponents are elsewhere.
"""

from __future__ import annotations

from . import common

common.one_thread()


class Iteration:
    params = (["subquad", "dense-gn"], [1024, 2048, 4096])
    param_names = ["method", "m"]
    number = 1
    processes = 1
    repeat = (2, 5, 5.0)
    warmup_time = 0.0
    timeout = 300

    def setup(self, method, m):
        import numba  # noqa: PLC0415
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        from subquad.model.train import TrainConfig, build_trainer  # noqa: PLC0415

        numba.set_num_threads(1)
        self._limits = threadpool_limits(1)
        cfg = TrainConfig(method=method, m=m, iters=1, **common.BASE)
        self.trainer = build_trainer(cfg)
        self.trainer.start()
        self.trainer.step()

    def teardown(self, method, m):
        self._limits.restore_original_limits()

    def time_iteration(self, method, m):
        self.trainer.step()
