"""A time budget instead of a number of epochs (``TrainConfig.minutes``, as arivis trains for a set time).

The epochs that fit are estimated from the first learning steps (the learning-rate schedule is sized
to them), estimated again from the first whole epoch (with its validation), and after that only
lowered when the epochs turn out slower: the run ends within the budget, or at most one epoch after
it when a single epoch is longer than the time left. The learning-rate range test is skipped (a
fixed :data:`LEARNING_RATE`, unless one is given).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

FIRST_STEPS = 4  # learning steps timed before the first estimate
# an automatic learning rate under a budget: the range test (24 trial steps, 3 minutes on a loaded
# 2-core CPU) would eat a short budget whole; the demo's and the tests' searches land at 2-5e-3
LEARNING_RATE = 3e-3
VALIDATION_GUESS = 0.15  # share of an epoch's time validation is assumed to take before it was timed


@dataclass
class TimeBudget:
    seconds: float
    t_start: float  # time.perf_counter() when the run (this session of it) started
    estimates: int = 0

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t_start)

    def fit(self, done: int, planned: int, per_epoch: float) -> int:
        """The run's epochs, ``done`` of them finished, at ``per_epoch`` seconds each (at least ``done``
        and 1): the first two estimates set it, later ones may only lower it."""
        fits = max(done, 1, done + int(self.left() // max(per_epoch, 1e-6)))
        self.estimates += 1
        return fits if self.estimates <= 2 else min(planned, fits)
