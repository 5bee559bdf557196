"""LPIPS perceptual distance (Zhang et al. 2018), AlexNet variant v0.1, in plain torch (no torchvision).

mapforge ships no network weights and downloads nothing. LPIPS needs two files the user supplies:

- the ImageNet AlexNet weights in torchvision's layout, e.g. torchvision's `alexnet-owt-7be5be79.pth`
  (`IMAGENET1K_V1`): a state dict with keys `features.0.weight`, `features.0.bias`, ..., `features.10.bias`
  (`classifier.*` keys, if present, are ignored);
- the LPIPS linear calibration weights for AlexNet v0.1, `lpips/weights/v0.1/alex.pth` of the `lpips` package:
  keys `lin0.model.1.weight` ... `lin4.model.1.weight`, shapes `[1, C, 1, 1]` with C = 64, 192, 384, 256, 256.

Load them with `LPIPS.from_files(alexnet_path, lin_path)`, or save the pair once as a single combined file with
`LPIPS.save(path)` (the union of both key sets, `.pth` or `.safetensors`) and load it with `LPIPS.from_file`.

The network follows the published LPIPS definition: inputs in [0, 1] are mapped to [-1, 1], shifted and scaled
by the LPIPS scaling layer, passed through AlexNet's conv layers; the ReLU outputs after conv1..conv5 are
normalised to unit length along channels, their squared differences weighted per channel by the linear layers,
averaged over space and summed over the five layers.

Tested against a distance computed by hand (`tests/metrics/test_lpips.py`: a network whose convolutions use only
their centre taps, on single-colour images, written out layer by layer with the published scaling constants),
besides the plumbing (layer shapes, key names, loading, metric properties). Not checked: parity with the `lpips`
package's numbers on its released weights, which were not available on the machine this was written on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mapforge.errors import InputError, MapforgeError
from mapforge.io.atomic import atomic_path
from mapforge.io.torch_files import first_line, load_torch_file

# AlexNet conv layers as (index in torchvision's `features`, in, out, kernel, stride, padding).
_ALEXNET_CONVS = (
    (0, 3, 64, 11, 4, 2),
    (3, 64, 192, 5, 1, 2),
    (6, 192, 384, 3, 1, 1),
    (8, 384, 256, 3, 1, 1),
    (10, 256, 256, 3, 1, 1),
)
# LPIPS taps the ReLU after each conv: the slices features[0:2], [2:5], [5:8], [8:10], [10:12].
_TAP_ENDS = (2, 5, 8, 10, 12)
# The LPIPS scaling layer constants (applied to inputs in [-1, 1]).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_NORM_EPS = 1e-10
# Smallest side for which AlexNet up to conv5 still has at least one output pixel.
MIN_SIDE = 31


class _LinearHead(nn.Module):
    """One LPIPS linear layer, kept under `model.1` so that the lpips `linK.model.1.weight` keys load as they are.

    (In lpips, `model.0` is a dropout used only when training the calibration; it has no weights.)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _alexnet_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, c_in, c_out, kernel, stride, padding in _ALEXNET_CONVS:
        if index in (3, 6):
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
        layers.append(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding))
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)  # 12 modules, indices as in torchvision's alexnet().features[:12]


def _load_state(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix != ".safetensors":
        state = load_torch_file(path, "LPIPS weights file")
    elif not path.is_file():
        raise InputError(f"LPIPS weights file {path} not found")
    else:
        try:
            state = load_file(str(path))
        except Exception as exc:  # any failure to parse is the user's file being wrong
            raise InputError(f"cannot read the LPIPS weights file {path}: {first_line(exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"LPIPS weights {path} is not a state dict of tensors")
    return state


class LPIPS(nn.Module):
    """LPIPS distance with AlexNet features (v0.1). Build it with `from_files` or `from_file`.

    `LPIPS()` alone has randomly initialised weights and refuses to run until weights are loaded (through the
    constructors above or `load_weights`), so a missing weights file can never produce plausible-looking numbers.
    Move it to a device with `.to(device)`; it is in eval mode and has no trainable use here.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _alexnet_features()
        for k, (_, _, c_out, *_) in enumerate(_ALEXNET_CONVS):
            setattr(self, f"lin{k}", _LinearHead(c_out))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.weights_loaded = False
        self.eval().requires_grad_(False)

    @classmethod
    def from_files(cls, alexnet_path: str | Path, lin_path: str | Path) -> LPIPS:
        """From torchvision AlexNet weights and the lpips v0.1 `alex.pth` linear weights (see the module doc)."""
        model = cls()
        alex = {k: v for k, v in _load_state(alexnet_path).items() if k.startswith("features.")}
        lin = {k: v for k, v in _load_state(lin_path).items() if k.startswith("lin")}
        model._load(alex, "features.", str(alexnet_path))
        model._load(lin, "lin", str(lin_path))
        model.weights_loaded = True
        return model

    @classmethod
    def from_file(cls, path: str | Path) -> LPIPS:
        """From one combined file holding both the `features.*` and `lin*` keys (as written by `save`)."""
        model = cls()
        model.load_weights(_load_state(path), str(path))
        return model

    def load_weights(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load a combined state dict (`features.*` and `lin*` keys); other keys, e.g. `classifier.*`, are ignored."""
        self._load({k: v for k, v in state.items() if k.startswith("features.")}, "features.", source)
        self._load({k: v for k, v in state.items() if k.startswith("lin")}, "lin", source)
        self.weights_loaded = True

    def save(self, path: str | Path) -> None:
        """Write the combined weights (`.safetensors` if the name ends so, else a torch `.pth`), atomically."""
        if not self.weights_loaded:
            raise MapforgeError("LPIPS has no weights loaded; there is nothing to save")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(path) as tmp:
            if Path(path).suffix == ".safetensors":
                save_file(state, str(tmp))
            else:
                torch.save(state, tmp)

    def _load(self, state: dict[str, torch.Tensor], prefix: str, source: str) -> None:
        expected = {k: v for k, v in self.state_dict().items() if k.startswith(prefix)}
        missing = sorted(set(expected) - set(state))
        if missing:
            listed = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise InputError(f"{source}: missing LPIPS weights {listed}")
        for key, value in expected.items():
            if tuple(state[key].shape) != tuple(value.shape):
                shape = tuple(state[key].shape)
                raise InputError(f"{source}: {key} has shape {shape}, LPIPS (AlexNet v0.1) needs {tuple(value.shape)}")
        with torch.no_grad():
            for key, value in expected.items():
                value.copy_(state[key].to(value.dtype))

    def forward(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> torch.Tensor:
        """LPIPS distance `[B]` between images in [0, 1], `[B, 3, H, W]` or one `[H, W, 3]` (gives `[1]`).

        Differentiable with respect to the inputs. Sides must be at least `MIN_SIDE` (31) pixels.
        """
        if not self.weights_loaded:
            raise MapforgeError("LPIPS weights are not loaded; build it with LPIPS.from_files(alexnet, lin)")
        x, y = self._prepare(pred, "pred"), self._prepare(target, "target")
        if x.shape != y.shape:
            raise InputError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        feat_x, feat_y = self._normalise(x), self._normalise(y)
        start = 0
        for k, end in enumerate(_TAP_ENDS):
            block = self.features[start:end]
            feat_x, feat_y = block(feat_x), block(feat_y)
            unit_x = feat_x / (feat_x.square().sum(1, keepdim=True).sqrt() + _NORM_EPS)
            unit_y = feat_y / (feat_y.square().sum(1, keepdim=True).sqrt() + _NORM_EPS)
            total = total + getattr(self, f"lin{k}")((unit_x - unit_y).square()).mean(dim=(1, 2, 3))
            start = end
        return total

    def _prepare(self, image: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
        tensor = torch.from_numpy(np.asarray(image)) if isinstance(image, np.ndarray) else image
        if not tensor.is_floating_point():
            raise InputError(f"LPIPS {name} must be a floating-point image in [0, 1], got {tensor.dtype}")
        if tensor.ndim == 3 and tensor.shape[-1] == 3:
            tensor = tensor.permute(2, 0, 1)[None]
        if tensor.ndim != 4 or tensor.shape[1] != 3:
            raise InputError(f"LPIPS {name} must be [B, 3, H, W] or [H, W, 3], got shape {tuple(tensor.shape)}")
        if min(tensor.shape[-2:]) < MIN_SIDE:
            size = tuple(tensor.shape[-2:])
            raise InputError(f"LPIPS needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels, got {size}")
        return tensor.to(device=self.shift.device, dtype=self.shift.dtype)

    def _normalise(self, image: torch.Tensor) -> torch.Tensor:
        return (image * 2 - 1 - self.shift) / self.scale


def load_lpips(paths: str | Path | Sequence[str | Path]) -> LPIPS:
    """LPIPS from one combined weights file, or from two: the AlexNet weights then the lpips `alex.pth` linear
    weights (see the module doc). Raises `InputError` for any other number of files."""
    files = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if len(files) == 1:
        return LPIPS.from_file(files[0])
    if len(files) == 2:
        return LPIPS.from_files(files[0], files[1])
    raise InputError(f"LPIPS takes one combined weights file or two (AlexNet, linear), got {len(files)}")
