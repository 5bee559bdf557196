from __future__ import annotations

import numpy as np
import pytest
import torch

from mapforge.errors import InputError, MapforgeError
from mapforge.metrics.lpips import LPIPS, MIN_SIDE, load_lpips
from tests.conftest import HOSTILE_KINDS, plant_hostile_file

ALEXNET_SHAPES = {
    "features.0.weight": (64, 3, 11, 11),
    "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5),
    "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3),
    "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3),
    "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3),
    "features.10.bias": (256,),
}
LIN_SHAPES = {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}


@pytest.fixture
def weight_files(tmp_path):
    """Random weights in the two published layouts (torchvision AlexNet with its classifier, lpips alex.pth)."""
    gen = torch.Generator().manual_seed(0)
    alexnet = {}
    for key, shape in ALEXNET_SHAPES.items():
        scale = (2.0 / np.prod(shape[1:])) ** 0.5 if len(shape) > 1 else 0.01
        alexnet[key] = torch.randn(shape, generator=gen) * scale
    alexnet["classifier.1.weight"] = torch.randn(4096, 9216 // 64, generator=gen)
    lin = {key: torch.rand(shape, generator=gen) for key, shape in LIN_SHAPES.items()}
    torch.save(alexnet, tmp_path / "alexnet.pth")
    torch.save(lin, tmp_path / "alex.pth")
    return tmp_path / "alexnet.pth", tmp_path / "alex.pth"


def images(count: int = 2, size: int = 48) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_state_dict_keys_follow_torchvision_and_lpips():
    shapes = {k: tuple(v.shape) for k, v in LPIPS().state_dict().items()}
    assert shapes == {**ALEXNET_SHAPES, **LIN_SHAPES}


def test_metric_properties(weight_files):
    model = LPIPS.from_files(*weight_files)
    x = images()
    small = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    large = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    same = model(x, x)
    assert same.shape == (2,) and torch.all(same.abs() < 1e-6)
    d_small, d_large = model(x, small), model(x, large)
    torch.testing.assert_close(d_small, model(small, x))
    assert torch.all(d_small > 0) and torch.all(d_large > d_small)
    one = model(x[0].permute(1, 2, 0).numpy(), large[0].permute(1, 2, 0).numpy())
    torch.testing.assert_close(one, d_large[:1])


def test_gradient_flows_to_prediction(weight_files):
    model = LPIPS.from_files(*weight_files)
    pred = images(1).requires_grad_()
    model(pred, images(1, 48).flip(-1)).sum().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["combined.pth", "combined.safetensors"])
def test_combined_file_round_trip(weight_files, tmp_path, name):
    model = LPIPS.from_files(*weight_files)
    model.save(tmp_path / name)
    again = LPIPS.from_file(tmp_path / name)
    x, y = images(), images().flip(-2)
    torch.testing.assert_close(again(x, y), model(x, y))


def test_smallest_image(weight_files):
    model = LPIPS.from_files(*weight_files)
    x = torch.rand(1, 3, MIN_SIDE, MIN_SIDE)
    assert model(x, x.flip(-1)).shape == (1,)
    with pytest.raises(InputError):
        model(x[..., :-1], x[..., :-1])


def test_bad_weights_and_inputs(weight_files, tmp_path):
    alexnet_path, lin_path = weight_files
    with pytest.raises(MapforgeError, match="not loaded"):
        LPIPS()(images(), images())
    with pytest.raises(InputError, match="not found"):
        LPIPS.from_files(tmp_path / "missing.pth", lin_path)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        LPIPS.from_files(alexnet_path, tmp_path / "garbage.pth")
    with pytest.raises(InputError, match="missing LPIPS weights features.0.bias"):
        LPIPS.from_files(lin_path, alexnet_path)
    # a VGG-sized linear layer (lpips' vgg.pth has 64, 128, 256, 512, 512 channels)
    wrong = {k: torch.rand(1, c, 1, 1) for k, c in zip(LIN_SHAPES, (64, 128, 256, 512, 512))}
    torch.save(wrong, tmp_path / "vgg.pth")
    with pytest.raises(InputError, match=r"lin1.model.1.weight has shape \(1, 128, 1, 1\)"):
        LPIPS.from_files(alexnet_path, tmp_path / "vgg.pth")
    model = LPIPS.from_files(alexnet_path, lin_path)
    with pytest.raises(InputError):
        model(images(), images(size=40))
    with pytest.raises(InputError):
        model(torch.rand(1, 1, 40, 40), torch.rand(1, 1, 40, 40))
    with pytest.raises(InputError, match="floating-point"):
        model(torch.zeros(1, 3, 40, 40, dtype=torch.uint8), torch.zeros(1, 3, 40, 40, dtype=torch.uint8))


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_planted_weights_are_refused_without_running_code(kind, weight_files, tmp_path):
    planted = tmp_path / "planted.pth"
    marker = plant_hostile_file(planted, kind)
    for paths in ([planted], [weight_files[0], planted], [planted, weight_files[1]]):
        with pytest.raises(InputError) as info:
            load_lpips(paths)
        assert "\n" not in str(info.value) and str(planted) in str(info.value)
    assert not marker.exists()


def _relu(v: np.ndarray) -> np.ndarray:
    return np.maximum(v, 0.0)


# A tiny LPIPS network by hand: every convolution has weights only on its centre tap and only between the first
# few channels, so on a single-colour image each layer's features are one small vector per layer, the same at
# every pixel (centre taps never reach the zero padding; max pooling keeps a constant map constant).
HAND_CONVS = {  # features index: (centre tap, {(out, in): weight}, {out: bias})
    0: (5, {(0, 0): 1.0, (1, 1): 1.0, (2, 2): 1.0}, {}),
    3: (2, {(0, 0): 1.0, (0, 1): 1.0, (1, 2): 2.0}, {2: 0.5}),
    6: (1, {(0, 0): 1.0, (1, 1): -1.0, (2, 2): 1.0}, {1: 4.0}),
    8: (1, {(0, 0): 3.0, (1, 1): 1.0, (1, 2): 1.0}, {}),
    10: (1, {(0, 0): 1.0, (1, 1): 1.0, (2, 0): 0.25, (2, 1): -1.0}, {}),
}
HAND_LINS = ([1.0, 2.0, 3.0], [0.5, 1.0, 0.25], [2.0, 1.0, 0.5], [1.0, 1.0], [1.0, 0.5, 2.0])


def hand_features(rgb: tuple[float, float, float]) -> list[np.ndarray]:
    """The five layers' feature vectors of an image of colour `rgb`, written out from the definitions above and
    the published LPIPS input scaling (shift -0.030, -0.088, -0.188 and scale 0.458, 0.448, 0.450 on [-1, 1])."""
    v = _relu((2 * np.asarray(rgb) - 1 - np.array([-0.030, -0.088, -0.188])) / np.array([0.458, 0.448, 0.450]))
    f1 = v
    f2 = _relu(np.array([f1[0] + f1[1], 2 * f1[2], 0.5]))
    f3 = _relu(np.array([f2[0], 4.0 - f2[1], f2[2]]))
    f4 = _relu(np.array([3 * f3[0], f3[1] + f3[2]]))
    f5 = _relu(np.array([f4[0], f4[1], 0.25 * f4[0] - f4[1]]))
    return [f1, f2, f3, f4, f5]


def hand_lpips(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """Sum over layers of the lin-weighted squared difference of the unit-normalised feature vectors."""
    total = 0.0
    for fa, fb, weights in zip(hand_features(a), hand_features(b), HAND_LINS):
        total += float(np.sum(np.asarray(weights) * (fa / np.linalg.norm(fa) - fb / np.linalg.norm(fb)) ** 2))
    return total


def hand_weights() -> dict[str, torch.Tensor]:
    state = {key: torch.zeros(shape) for key, shape in {**ALEXNET_SHAPES, **LIN_SHAPES}.items()}
    for index, (tap, weights, biases) in HAND_CONVS.items():
        for (out, inp), value in weights.items():
            state[f"features.{index}.weight"][out, inp, tap, tap] = value
        for out, value in biases.items():
            state[f"features.{index}.bias"][out] = value
    for k, weights in enumerate(HAND_LINS):
        state[f"lin{k}.model.1.weight"][0, : len(weights), 0, 0] = torch.tensor(weights)
    return state


@pytest.mark.parametrize("a, b", [((0.9, 0.7, 0.6), (0.6, 0.8, 0.95)), ((0.55, 0.9, 0.7), (0.8, 0.6, 0.9))])
def test_lpips_matches_a_hand_computed_network(a, b):
    model = LPIPS()
    model.load_weights(hand_weights())
    expected = hand_lpips(a, b)
    assert expected > 0.05  # the pair is far apart in every layer, not a trivial zero
    x = torch.tensor(a, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 40, 36)
    y = torch.tensor(b, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 40, 36)
    assert float(model(x, y)[0]) == pytest.approx(expected, rel=1e-5)
