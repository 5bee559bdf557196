"""Numerical parity with upstream DUSt3R / MASt3R on seeded random weights (shared data set `dust3r_parity`).

Weights are rebuilt with the data set's own `regen_weights.py` recipe (it only defines functions when imported);
every stored output and intermediate must agree within atol = rtol = 1e-4.
"""

from __future__ import annotations

import json
import runpy

import pytest
import torch

from mapforge.pointmap import inference, load_checkpoint, load_images, symmetrize
from mapforge.pointmap.checkpoint import config_from_constructor
from mapforge.pointmap.models import PointmapNet
from tests.conftest import shared_dataset

CASES = ["small_linear_224", "small_dpt_176x256", "small_mast3r_176x256"]
TOL = dict(atol=1e-4, rtol=1e-4)


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual - expected).abs().max().item()
    assert torch.allclose(actual, expected, **TOL), f"{what}: max abs error {err:.3g}"


@pytest.fixture(scope="module")
def data():
    return shared_dataset("dust3r_parity")


@pytest.fixture(scope="module")
def models(data):
    """Case name -> model with the case's weights, built once per module."""
    cache: dict[str, PointmapNet] = {}
    regen = runpy.run_path(str(data / "regen_weights.py"))["regen"]

    def get(name: str) -> PointmapNet:
        if name not in cache:
            meta = json.loads((data / f"{name}_kwargs.json").read_text())
            with torch.device("meta"):  # skip the random initialisation, every tensor is replaced
                model = PointmapNet(config_from_constructor(meta["cls"], _kwargs(meta["kwargs"])))
            model.load_state_dict(regen(name), assign=True)
            cache[name] = model.eval()
        return cache[name]

    return get


@pytest.fixture(scope="module", params=CASES)
def case(request, data, models):
    """(name, model with the case's weights, inputs, reference pair outputs)."""
    name = request.param
    inputs = torch.load(data / f"{name}_inputs.pth", weights_only=True)
    reference = torch.load(data / f"{name}_pair_outputs.pth", weights_only=True)
    return name, models(name), inputs, reference


def _kwargs(kwargs: dict) -> dict:
    """JSON kwargs back to constructor values: lists to tuples, "inf" strings to floats."""
    def value(v):
        if isinstance(v, list):
            return tuple(value(x) for x in v)
        if v in ("inf", "-inf"):
            return float(v)
        return v
    return {k: value(v) for k, v in kwargs.items()}


def _views(inputs: dict) -> list[dict]:
    return [
        {"img": img, "true_shape": shape, "idx": i, "instance": str(i)}
        for i, (img, shape) in enumerate(zip(inputs["imgs"], inputs["true_shape"]))
    ]


def test_pair_outputs_and_intermediates(case) -> None:
    """One `model(view1, view2)` call, its intermediates recorded by hooks."""
    name, model, inputs, reference = case
    view1, view2 = _views(inputs)
    seen: dict = {}

    def record(key):
        return lambda module, args, output: seen.__setitem__(key, output)

    hooks = [model.patch_embed.register_forward_hook(record("patch_embed")),
             model.enc_norm.register_forward_hook(record("enc_norm"))]
    hooks += [b.register_forward_hook(record(f"enc_block{k}")) for k, b in enumerate(model.enc_blocks)]
    for which in (1, 2):
        head = getattr(model, f"downstream_head{which}")
        hooks.append(head.register_forward_hook(record(f"head{which}")))
        if hasattr(head, "dpt"):
            hooks.append(head.dpt.register_forward_hook(record(f"dpt{which}")))
    decode = model.decode
    model.decode = lambda *args: seen.setdefault("decode", decode(*args))
    try:
        with torch.inference_mode():
            pred1, pred2 = model(view1, view2)
    finally:
        del model.decode
        for hook in hooks:
            hook.remove()

    expected = reference["intermediates"]
    tokens, pos = seen["patch_embed"]  # both images in one batch, as upstream does for equal sizes
    _close(tokens[:1], expected["patch_embed_img1"], "patch embedding")
    assert torch.equal(pos[:1], expected["pos1"]) and torch.equal(pos[1:], expected["pos2"])
    assert len(expected["enc_blocks_out_img1"]) == len(model.enc_blocks)
    for k, block_out in enumerate(expected["enc_blocks_out_img1"]):
        _close(seen[f"enc_block{k}"][:1], block_out, f"encoder block {k}")
    _close(seen["enc_norm"][:1], expected["enc_out1"], "encoder output 1")
    _close(seen["enc_norm"][1:], expected["enc_out2"], "encoder output 2")
    for which, dec in zip((1, 2), seen["decode"]):
        reference_dec = expected[f"dec_out{which}"]
        assert len(dec) == len(reference_dec) == model.config.dec_depth + 1
        for k, (a, b) in enumerate(zip(dec, reference_dec)):
            _close(a, b, f"decoder {which} output {k}")
        if f"dpt_raw{which}" in expected:
            _close(seen[f"dpt{which}"], expected[f"dpt_raw{which}"], f"DPT {which} raw output")
    for which, pred in (("pred1", pred1), ("pred2", pred2)):
        assert set(pred) == set(reference[which]), f"{which} keys {sorted(pred)}"
        for key, value in reference[which].items():
            _close(pred[key], value, f"{name} {which}[{key}]")
    if "desc" in pred1:
        assert torch.allclose(pred1["desc"].norm(dim=-1), torch.ones(()), atol=1e-5)


@pytest.mark.parametrize("name", ["small_linear_224", "small_dpt_176x256"])
def test_symmetrised_inference(data, models, name: str) -> None:
    model = models(name)
    views = _views(torch.load(data / f"{name}_inputs.pth", weights_only=True))
    reference = torch.load(data / f"{name}_inference_outputs.pth", weights_only=True)
    pairs = symmetrize([(1, 0)])
    assert pairs == [(1, 0), (0, 1)]
    result = inference(model, views, pairs, progress=False)
    for part, expected in reference.items():
        assert set(result[part]) == set(expected), part
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                _close(result[part][key], value, f"{name} {part}[{key}]")
            else:
                assert result[part][key] == value, f"{part}[{key}]"


def test_official_checkpoint_and_fp16_state_dict(data) -> None:
    name = "small_linear_224"
    official = load_checkpoint(data / f"{name}_official_format_ckpt.pth")
    meta = json.loads((data / f"{name}_kwargs.json").read_text())
    assert official.config == config_from_constructor(meta["cls"], _kwargs(meta["kwargs"]))
    bare = load_checkpoint(data / f"{name}_state_dict_fp16.pth", config=official.config)
    regen = runpy.run_path(str(data / "regen_weights.py"))["regen"](name)
    for key, value in regen.items():
        assert official.state_dict()[key].dtype == torch.float32
        assert torch.equal(official.state_dict()[key], value), key
        assert torch.equal(bare.state_dict()[key], value), key


@pytest.mark.parametrize("size", [512, 224])
def test_preprocessing_matches_exactly(data, size: int) -> None:
    reference = torch.load(data / "preproc_load_images.pth", weights_only=True)
    views = load_images(data / "preproc_imgs", size=size)
    assert [p.name for p in sorted((data / "preproc_imgs").iterdir())] == reference["files"]
    assert len(views) == len(reference["by_size"][size])
    for mine, expected in zip(views, reference["by_size"][size]):
        assert torch.equal(mine["img"], expected["img"])
        assert mine["img"].dtype == torch.float32
        assert torch.equal(mine["true_shape"], expected["true_shape"])
        assert mine["true_shape"].dtype == torch.int32
        assert (mine["idx"], mine["instance"]) == (expected["idx"], expected["instance"])
