"""Versioned training checkpoints: written atomically, read with torch's weights-only unpickler.

A checkpoint is `{"version", "kind", ...}` where every value is a tensor, a plain container, a number or a
string (configs and RNG states go in as JSON strings), so reading one can never run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mapforge.errors import InputError
from mapforge.io.atomic import atomic_path
from mapforge.io.torch_files import load_torch_file

CHECKPOINT_NAME = "checkpoint.pt"
# 2: the shared layout of mapforge.training (splat checkpoints were version 1, NeRF ones had no version).
CHECKPOINT_VERSION = 2


def save_checkpoint(path: Path, kind: str, state: dict) -> Path:
    """Write `state` as a checkpoint of `kind` ("splat", "nerf") to `path`, atomically."""
    with atomic_path(path) as tmp:
        torch.save({"version": CHECKPOINT_VERSION, "kind": kind, **state}, tmp)
    return path


def load_checkpoint(path: Path, kind: str) -> dict:
    """The state stored by `save_checkpoint` for `kind`; `InputError` for anything else, a file of another
    version or kind included."""
    state = load_torch_file(path, f"{kind} checkpoint")
    version = state.get("version") if isinstance(state, dict) else None
    if version != CHECKPOINT_VERSION:
        raise InputError(f"{path} is not a mapforge checkpoint of format version {CHECKPOINT_VERSION} "
                         f"(found {version}); train again without --resume")
    if state.get("kind") != kind:
        raise InputError(f"{path} holds a {state.get('kind')} checkpoint, not a {kind} one")
    return state


def find_checkpoint(model: str | Path, command: str) -> Path:
    """The checkpoint of a training output folder `model` (or `model` itself, a checkpoint file)."""
    model = Path(model)
    path = model / CHECKPOINT_NAME if model.is_dir() else model
    if not path.is_file():
        raise InputError(f"{model}: no {CHECKPOINT_NAME} (give a `{command}` output folder)")
    return path


def read_run_config(folder: str | Path) -> dict:
    """The `config.json` a training run wrote into `folder` (data path, downscale, config ...); {} without one."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: malformed JSON ({exc})") from None
    return data if isinstance(data, dict) else {}
