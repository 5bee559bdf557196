"""The training loop both trainers share: budget, clock, history, checkpoints, progress bar and outputs.

A trainer subclasses `Trainer` and brings only its model, its loss and its schedule: `train_step` (one step at a
given progress of the run), `state_dict` / `load_state_dict` (everything a resumed run needs beyond the loop's own
counters), `evaluate_split` and, where it has them, `export` and `run_info`. The loop counts steps and training
seconds, records the history, writes a versioned checkpoint every `config.checkpoint_minutes` of training, when
training ends and on Ctrl-C, and resumes at the exact step.
"""

from __future__ import annotations

import contextlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from mapforge.datasets import load_dataset
from mapforge.datasets.base import Dataset
from mapforge.devices import select_device
from mapforge.errors import InputError
from mapforge.interrupts import keyboard_interrupts
from mapforge.io.atomic import write_json
from mapforge.io.torch_files import first_line
from mapforge.metrics.lpips import MIN_SIDE as LPIPS_MIN_SIDE
from mapforge.metrics.lpips import LPIPS, load_lpips
from mapforge.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from mapforge.training.config import TrainingConfig
from mapforge.training.evaluation import quality_text
from mapforge.training.history import History

# The smallest image side the trainers accept: SSIM, in the loss and the evaluation, looks at 11x11 windows.
MIN_IMAGE_SIDE = 11


class Trainer(ABC):
    """One training run into `out_dir`. Subclasses set `kind` (the checkpoint's kind) and `title` (for the
    progress bar and the chart); `clock` measures training time (a test may replace it)."""

    kind = "model"
    title = "model"
    clock: Callable[[], float] = staticmethod(time.perf_counter)

    def __init__(self, config: TrainingConfig, out_dir: str | Path):
        self.config = config
        self.out_dir = Path(out_dir)
        self.budget = config.budget
        self.device = select_device(config.device)
        # Read before any training, so that bad weights fail at once and not after the budget.
        self.lpips: LPIPS | None = load_lpips(config.lpips_weights).to(self.device) if config.lpips_weights else None
        self.step = 0
        self.seconds = 0.0
        self.history = History(config.log_interval)

    # -- what each trainer provides ----------------------------------------------------------------------------

    @abstractmethod
    def train_step(self, progress: float) -> dict[str, float]:
        """One optimisation step, `self.step` steps into the run, at `progress` in [0, 1). Returns its `loss`, its
        mean squared `mse` and any statistics for the history (e.g. `num_gaussians`)."""

    @abstractmethod
    def state_dict(self) -> dict:
        """Everything a resumed run needs besides the loop's counters: tensors, containers, numbers, strings."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""

    @abstractmethod
    def evaluate_split(self, split: str) -> dict:
        """Render and score the views of `split` into `out_dir/renders/<split>/` (see `evaluate_views`)."""

    def check_resumable(self, saved: dict) -> None:
        """Raise `InputError` when a checkpoint trained with the config `saved` cannot continue under this one."""

    def export(self) -> dict[str, Path]:
        """Write the trained model's own files (besides the checkpoint); returns them by name."""
        return {}

    def run_info(self) -> dict:
        """What `config.json` records about the run besides the config (e.g. the scene set-up)."""
        return {}

    def training_context(self) -> contextlib.AbstractContextManager:
        """Entered around the whole loop (e.g. to set torch's thread count)."""
        return contextlib.nullcontext()

    # -- the loop ----------------------------------------------------------------------------------------------

    def progress(self) -> float:
        """The fraction of the budget spent (see `Budget.progress`)."""
        return self.budget.progress(self.step, self.seconds)

    def run(self, max_steps: int | None = None, callback: Callable[[Trainer], None] | None = None) -> None:
        """Train until the budget is spent (or for at most `max_steps` more steps), checkpointing periodically, at
        the end and on Ctrl-C (which is then re-raised). `callback(self)` runs after every step, off the clock."""
        bar = self._progress_bar()
        last_checkpoint, done = self.seconds, 0
        try:
            with keyboard_interrupts(), self.training_context():
                while not self.budget.done(self.step, self.seconds) and (max_steps is None or done < max_steps):
                    start = self.clock()
                    stats = self.train_step(self.progress())
                    self.seconds += self.clock() - start
                    self.step, done = self.step + 1, done + 1
                    entry = self.history.add(self.step, self.seconds, stats, self.budget.done(self.step, self.seconds))
                    self._advance(bar, entry)
                    period = 60.0 * self.config.checkpoint_minutes
                    if period and self.seconds - last_checkpoint >= period:
                        self.save_checkpoint()
                        last_checkpoint = self.seconds
                    if callback is not None:
                        callback(self)
        except KeyboardInterrupt:
            bar.close()
            self.save_checkpoint()
            raise
        bar.close()
        self.save_checkpoint()

    def _progress_bar(self) -> tqdm:
        timed = self.budget.timed
        return tqdm(total=int(self.budget.total), initial=int(self.budget.spent(self.step, self.seconds)),
                    unit="s" if timed else "it", desc=f"training {self.title}", dynamic_ncols=True, disable=None)

    def _advance(self, bar: tqdm, entry: dict | None) -> None:
        if entry is not None:
            shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in entry.items()
                     if k not in ("iteration", "seconds")}
            bar.set_postfix(shown, refresh=False)
        bar.update(min(int(self.budget.spent(self.step, self.seconds)), bar.total) - bar.n)

    # -- checkpoints -------------------------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def save_checkpoint(self) -> Path:
        """Write everything needed to continue training to `out_dir/checkpoint.pt`, atomically."""
        return save_checkpoint(self.checkpoint_path, self.kind, {
            "config": json.dumps(asdict(self.config)), "step": self.step, "seconds": self.seconds,
            "history": self.history.state_dict(), "trainer": self.state_dict(),
        })

    def resume(self) -> bool:
        """Continue from the checkpoint in `out_dir`, if there is one; returns whether there was."""
        if not self.checkpoint_path.exists():
            return False
        state = load_checkpoint(self.checkpoint_path, self.kind)
        try:
            self.check_resumable(json.loads(state["config"]))
            self.load_state_dict(state["trainer"])
            self.history.load_state_dict(state["history"])
            self.step, self.seconds = int(state["step"]), float(state["seconds"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            reason = first_line(exc)
            raise InputError(f"{self.checkpoint_path}: cannot resume from this checkpoint ({reason})") from None
        return True

    # -- outputs -----------------------------------------------------------------------------------------------

    def write_outputs(self, extra: dict | None = None) -> dict[str, Path]:
        """Write the model's files (`export`), `config.json` (the config, `run_info` and `extra`, e.g. the data
        path), `history.json` and `training_curve.svg`."""
        paths = self.export()
        info = {"config": asdict(self.config), "device": str(self.device), **self.run_info(), **(extra or {})}
        paths["config"] = write_json(self.out_dir / "config.json", info)
        paths.update(self.history.write(self.out_dir, f"{self.title} training"))
        return paths

    def finish(self, extra: dict | None = None, split: str = "test") -> dict:
        """`write_outputs`, then evaluate on `split` and write `metrics.json`; returns the metrics."""
        self.write_outputs(extra)
        metrics = self.evaluate_split(split)
        metrics.update({"split": split, "iterations": self.step, "train_seconds": self.seconds})
        write_json(self.out_dir / "metrics.json", metrics)
        return metrics

    def complete(self, extra: dict | None = None) -> TrainResult:
        """Train to the end of the budget, write the outputs and evaluate on the test split."""
        self.run()
        return TrainResult(self, self.finish(extra))


@dataclass
class TrainResult:
    """What a run produced: the trainer (its model, history and counters) and the test metrics."""

    trainer: Trainer
    metrics: dict

    @property
    def step(self) -> int:
        return self.trainer.step

    @property
    def seconds(self) -> float:
        return self.trainer.seconds

    @property
    def history(self) -> list[dict]:
        return self.trainer.history.entries

    def summary(self, what: str) -> str:
        """The end-of-run line: "trained WHAT for N iterations (M min); <scores>"."""
        return (f"trained {what} for {self.step} iterations ({self.seconds / 60:.1f} min); "
                f"{quality_text(self.metrics)}")


def check_dataset(dataset: Dataset, scale: float = 1.0, lpips: LPIPS | None = None) -> None:
    """Raise `InputError` unless `dataset` has poses, training views and images of a size the trainers handle
    (after resizing by `scale`; with `lpips`, test views of LPIPS's smallest size too), before any work."""
    if dataset.cam_from_world is None:
        raise InputError(f"data set {dataset.name} has no camera poses; run structure from motion first (mapforge sfm)")
    if not dataset.split.get("train"):
        raise InputError(f"data set {dataset.name} has no training images")
    scored = set(dataset.split.get("test", ())) if lpips is not None else set()
    for index, camera in enumerate(dataset.cameras):
        smallest = max(MIN_IMAGE_SIDE, LPIPS_MIN_SIDE) if index in scored else MIN_IMAGE_SIDE
        width, height = round(camera.width * scale), round(camera.height * scale)
        if min(width, height) < smallest:
            raise InputError(f"image {dataset.image_names[index]} would be {width}x{height} pixels as loaded; "
                             f"training needs at least {smallest} a side (use a smaller --downscale)")


def load_training_data(data: str | Path, downscale: int = 1) -> tuple[Dataset, dict]:
    """The data set at `data` (any layout `load_dataset` reads), images shrunk by `downscale`, and what
    `config.json` records of it (for rendering and exporting the run later)."""
    dataset = load_dataset(data, downscale=downscale)
    return dataset, {"data": str(Path(data).resolve()), "downscale": downscale}
