"""Training the NeRF models on a `Dataset`: the model, its loss and its schedule, over the shared training loop of
`mapforge.training` (budget, history, checkpoints with resume, evaluation, outputs).

Schedule. The learning rate decays exponentially from `lr` to `lr_final` over the run's progress (its iterations,
or its minutes of training time when timed); the fast model also ramps it up over `warmup_steps`, refreshes its
occupancy grid every `grid_update_every` steps and adapts its ray batch to about `target_samples` samples a step.
The original NeRF draws its first `precrop_steps` batches from the image centres.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from mapforge.datasets.base import Dataset
from mapforge.errors import InputError
from mapforge.io.torch_files import first_line
from mapforge.nerf.config import CONFIGS, FastNeRFConfig, NeRFConfig, OriginalNeRFConfig
from mapforge.nerf.evaluate import evaluate
from mapforge.nerf.models import FastNeRFModel
from mapforge.nerf.setup import SceneSetup, build_model, make_setup, training_rays
from mapforge.training.checkpoint import load_checkpoint as load_checkpoint_file
from mapforge.training.trainer import TrainResult, Trainer, check_dataset, load_training_data

# Bounds of the fast model's adaptive ray batch: enough rays for a stable gradient, few enough for memory.
MIN_BATCH_RAYS, MAX_BATCH_RAYS = 256, 1 << 16


class NeRFTrainer(Trainer):
    """Trains `config.model` on the "train" split of `dataset` into `out_dir`; `run()` optimises, `finish()`
    writes the outputs and evaluates. With `resume`, continues from the checkpoint there (same model expected).

    `model` and `setup` are the field and how world rays reach it (see `SceneSetup`)."""

    kind = "nerf"

    def __init__(self, dataset: Dataset, config: NeRFConfig, out_dir: str | Path, resume: bool = False):
        super().__init__(config, out_dir)
        self.title = f"{config.model} NeRF"
        check_dataset(dataset, config.image_scale, self.lpips)
        self.dataset = dataset
        torch.manual_seed(config.seed)
        self._restore(make_setup(dataset, config), None)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.batch_rays = _first_batch(config)
        if resume:
            self.resume()
        start = time.perf_counter()
        precrop = isinstance(config, OriginalNeRFConfig) and config.precrop_steps > 0
        self.rays, self.crop = training_rays(dataset, self.setup, config.image_scale,
                                             config.precrop_fraction if precrop else 0.0)
        self.setup_seconds = time.perf_counter() - start
        background = self.setup.background
        self.background = None if background is None else torch.tensor(background, dtype=torch.float32,
                                                                        device=self.device)
        self.samples = 0  # density samples evaluated by this process, for its samples per second
        self.seconds_before = self.seconds

    def _restore(self, setup: SceneSetup, state: dict | None) -> None:
        """A model over `setup` and its optimiser, with the weights and optimiser state of `state` if given."""
        self.setup = setup
        self.model = build_model(self.config, setup).to(self.device)
        if state is not None:
            _load_weights(self.model, state)
        self.optimizer = _optimizer(self.model, self.config)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])

    # -- the schedule and the loss -----------------------------------------------------------------------------

    def train_step(self, progress: float) -> dict[str, float]:
        """One step on a random batch of training rays (see the module doc for the schedule)."""
        cfg, fast = self.config, isinstance(self.model, FastNeRFModel)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * self._lr_factor(progress)
        # No update at step 0: the untrained field is dense everywhere, and the grid starts all occupied anyway.
        if fast and self.step > 0 and self.step % cfg.grid_update_every == 0:
            fraction = 1.0 if self.step < cfg.grid_warmup_steps else cfg.grid_update_fraction
            self.model.update_grid(fraction, cfg.grid_threshold)
        index = self._ray_indices()
        batch = {key: value[index].to(self.device) for key, value in self.rays.items()}
        outputs = self.model.render_rays(batch["origins"], batch["directions"], batch["near"], batch["far"],
                                         self.background, perturb=True)
        loss = self.model.loss(outputs, batch["rgb"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._count_samples(fast)
        mse = float(torch.mean((self.model.final(outputs).rgb.detach() - batch["rgb"]) ** 2))
        return {"loss": loss.item(), "mse": mse}

    def _lr_factor(self, progress: float) -> float:
        """Exponential decay over the run's progress, times the fast model's linear warm-up."""
        cfg = self.config
        decay = (cfg.lr_final / cfg.lr) ** min(progress, 1.0)
        if isinstance(cfg, FastNeRFConfig) and cfg.warmup_steps:
            return decay * min(1.0, (self.step + 1) / cfg.warmup_steps)
        return decay

    def _ray_indices(self) -> torch.Tensor:
        cfg = self.config
        if isinstance(cfg, OriginalNeRFConfig) and self.step < cfg.precrop_steps and len(self.crop):
            return self.crop[torch.randint(len(self.crop), (self.batch_rays,), generator=self.generator)]
        return torch.randint(self.rays["rgb"].shape[0], (self.batch_rays,), generator=self.generator)

    def _count_samples(self, fast: bool) -> None:
        """Count the step's density samples; the fast model then resizes its batch towards `target_samples`."""
        if fast:
            self.samples += self.model.last_num_samples
            wanted = self.batch_rays * self.config.target_samples / max(self.model.last_num_samples, 1)
            self.batch_rays = int(min(max(wanted, MIN_BATCH_RAYS), MAX_BATCH_RAYS))
        else:
            model = self.model
            per_ray = 2 * model.num_coarse + model.num_fine if model.fine is not None else model.num_coarse
            self.samples += self.batch_rays * per_ray

    # -- checkpoints -------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        state = {
            "model_type": self.config.model,
            "setup": json.dumps(self.setup.to_dict()),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "batch_rays": self.batch_rays,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if isinstance(self.model, FastNeRFModel):
            state["grid"] = self.model.grid.state_dict()
        if self.device.type == "cuda":  # sampling jitter on a GPU draws from its own generator
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict) -> None:
        if state["model_type"] != self.config.model:
            raise InputError(f"{self.checkpoint_path} holds a {state['model_type']!r} NeRF, not {self.config.model!r}")
        self._restore(SceneSetup.from_dict(json.loads(state["setup"])), state)
        self.batch_rays = int(state["batch_rays"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    # -- outputs -----------------------------------------------------------------------------------------------

    def run_info(self) -> dict:
        return {"model": self.config.model, "setup": self.setup.to_dict()}

    def evaluate_split(self, split: str) -> dict:
        """Render `config.eval_views` views of `split` (evenly spread; all by default) and score them."""
        indices = self.dataset.subset(split)
        count = self.config.eval_views
        if count is not None and len(indices) > count:
            indices = [indices[int(k)] for k in np.linspace(0, len(indices) - 1, count).round()] if count else []
        start = time.perf_counter()
        metrics = evaluate(self.model, self.setup, self.dataset, indices, self.config.image_scale,
                           self.out_dir / "renders" / split, self.lpips)
        seconds = self.seconds - self.seconds_before
        metrics.update({"model": self.config.model, "eval_seconds": time.perf_counter() - start,
                        "setup_seconds": self.setup_seconds,
                        "samples_per_second": self.samples / seconds if seconds > 0 else None})
        return metrics


def _first_batch(config: NeRFConfig) -> int:
    if isinstance(config, FastNeRFConfig):
        # The grid starts all occupied, so a ray first costs up to `render_steps` samples: start small and let
        # the batch grow as the grid empties.
        return min(config.batch_rays, max(MIN_BATCH_RAYS, 2 * config.target_samples // config.render_steps))
    return config.batch_rays


def _optimizer(model: torch.nn.Module, config: NeRFConfig) -> torch.optim.Optimizer:
    # The fused update is one pass over each tensor: on a CPU, 8x faster than the per-operation one for the
    # hash table's 3.4M values (2.4 against 20 ms a step). Other devices keep torch's default.
    fused = {"fused": True} if next(model.parameters()).device.type in ("cpu", "cuda") else {}
    if isinstance(config, FastNeRFConfig):
        grid = [p for n, p in model.named_parameters() if "encoding" in n]
        mlp = [p for n, p in model.named_parameters() if "encoding" not in n]
        groups = [{"params": grid, "weight_decay": 0.0}, {"params": mlp, "weight_decay": config.weight_decay}]
        return torch.optim.Adam(groups, lr=config.lr, betas=(0.9, 0.99), eps=1e-15, **fused)
    return torch.optim.Adam(model.parameters(), lr=config.lr, **fused)


def _load_weights(model: torch.nn.Module, state: dict) -> None:
    model.load_state_dict(state["model"])
    if isinstance(model, FastNeRFModel):
        model.grid.load_state_dict(state["grid"])


def train(dataset: Dataset, config: NeRFConfig, out_dir: str | Path, *, resume: bool = False,
          extra: dict | None = None) -> TrainResult:
    """Train `config.model` on the train split of `dataset` into `out_dir` and evaluate it on the test split.

    Writes (the same layout as the splatting stage): `checkpoint.pt` (every `config.checkpoint_minutes`, at the
    end and on Ctrl-C), `config.json` (config, scene set-up and `extra`, e.g. the data path and downscale),
    `history.json` and its chart `training_curve.svg`, the test renders under `renders/test/` and `metrics.json`
    (test PSNR/SSIM overall and per view, LPIPS with `config.lpips_weights`, iterations, training, set-up and
    evaluation seconds, density samples per second). `resume` continues from the checkpoint there.
    """
    return NeRFTrainer(dataset, config, out_dir, resume=resume).complete(extra)


def train_path(data: str | Path, config: NeRFConfig, out_dir: str | Path, *, downscale: int = 1,
               resume: bool = False) -> TrainResult:
    """`train` on the data set at `data` (any layout `mapforge.datasets.load_dataset` reads), images shrunk by
    `downscale`; the data path and downscale go into `config.json` for `mapforge nerf render` / `export`."""
    dataset, extra = load_training_data(data, downscale)
    return train(dataset, config, out_dir, resume=resume, extra=extra)


def load_checkpoint(path: str | Path, device: str = "auto") -> tuple[torch.nn.Module, NeRFConfig, SceneSetup, dict]:
    """Rebuild a trained model from a checkpoint -> (model, config, setup, the checkpoint's state)."""
    from mapforge.devices import select_device

    path = Path(path)
    state = load_checkpoint_file(path, "nerf")
    try:
        trained = state["trainer"]
        config = _saved_config(json.loads(state["config"]), trained["model_type"])
        setup = SceneSetup.from_dict(json.loads(trained["setup"]))
        model = build_model(config, setup)
        _load_weights(model, trained)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path} is not a mapforge NeRF checkpoint ({first_line(exc)})") from None
    return model.to(select_device(device)), config, setup, state


def _saved_config(saved: dict, model: str) -> NeRFConfig:
    config_cls = CONFIGS[model]
    names = {f.name for f in fields(config_cls)}
    return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names})
