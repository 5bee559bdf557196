"""How long a training run lasts: a number of iterations, or minutes of training time. One meaning everywhere."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """`minutes` of training time when set (the iteration count is then ignored), else `iterations` steps.

    Training time is what the steps themselves take: data loading, checkpoints, logging and evaluation come on
    top. Schedules are laid over the budget through `progress`, so a minutes budget stretches or squeezes the
    same schedule over however many steps the machine manages.
    """

    iterations: int
    minutes: float | None = None

    @property
    def timed(self) -> bool:
        return self.minutes is not None

    @property
    def total(self) -> float:
        """The budget in its own unit: seconds when timed, else iterations."""
        return 60.0 * self.minutes if self.timed else float(self.iterations)

    def spent(self, step: int, seconds: float) -> float:
        """How much of the budget `step` steps taking `seconds` of training time have used, in its unit."""
        return seconds if self.timed else float(step)

    def progress(self, step: int, seconds: float) -> float:
        """The fraction of the run done: 0 at the start, 1 (or more) when the budget is spent."""
        return self.spent(step, seconds) / self.total

    def done(self, step: int, seconds: float) -> bool:
        return self.progress(step, seconds) >= 1.0
