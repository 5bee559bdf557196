"""The training history (`history.json`, what the report reads) and its chart (`training_curve.svg`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mapforge.io.atomic import atomic_path, write_json
from mapforge.report.svg import Series, line_chart


def psnr_of_mse(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-10))


class History:
    """Every `interval` steps (and at the last one), an entry `{iteration, seconds, loss, psnr, ...}`: the mean
    loss over the steps since the previous entry, the PSNR of their mean squared error, the training seconds so
    far, and the latest value of every other statistic the trainer reports (e.g. `num_gaussians`)."""

    def __init__(self, interval: int):
        self.interval = interval
        self.entries: list[dict] = []
        self._sums = {"loss": 0.0, "mse": 0.0}
        self._count = 0

    def add(self, step: int, seconds: float, stats: dict[str, float], last: bool = False) -> dict | None:
        """Record the statistics of step `step` (1-based): `loss`, `mse` and any others; returns the entry
        written, if this step ends a window."""
        for key in self._sums:
            self._sums[key] += stats[key]
        self._count += 1
        if step % self.interval and not last:
            return None
        entry = {"iteration": step, "seconds": round(seconds, 3), "loss": self._sums["loss"] / self._count,
                 "psnr": psnr_of_mse(self._sums["mse"] / self._count)}
        entry.update({k: v for k, v in stats.items() if k not in self._sums})
        self.entries.append(entry)
        self._sums = dict.fromkeys(self._sums, 0.0)
        self._count = 0
        return entry

    def state_dict(self) -> dict:
        """The history as plain data (for checkpoints)."""
        return {"entries": json.dumps(self.entries), "sums": json.dumps(self._sums), "count": self._count}

    def load_state_dict(self, state: dict) -> None:
        self.entries = json.loads(state["entries"])
        self._sums = json.loads(state["sums"])
        self._count = int(state["count"])

    def write(self, out_dir: Path, title: str) -> dict[str, Path]:
        """Write `history.json` and `training_curve.svg` (training PSNR against iterations) to `out_dir`."""
        x = np.array([entry["iteration"] for entry in self.entries], dtype=np.float64)
        y = np.array([entry["psnr"] for entry in self.entries], dtype=np.float64)
        chart = line_chart([Series("training PSNR", x, y)], title, "iteration", "PSNR (dB)", width=720, height=300)
        with atomic_path(out_dir / "training_curve.svg") as tmp:
            tmp.write_text(chart + "\n", encoding="utf-8")
        return {"history": write_json(out_dir / "history.json", self.entries), "curve": out_dir / "training_curve.svg"}
