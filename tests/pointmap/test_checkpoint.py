"""Constructor parsing, full-size key layouts, and checkpoint loading (formats and mismatch errors)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mapforge import cli
from mapforge.errors import InputError
from mapforge.io.images import write_image
from mapforge.pointmap import PointmapConfig, PointmapNet, load_checkpoint, parse_constructor
from mapforge.pointmap.checkpoint import config_from_constructor, infer_config
from tests.conftest import HOSTILE_KINDS, plant_hostile_file, shared_dataset

FULL_SIZE = ["keys_dust3r_vitl_512_dpt.txt", "keys_dust3r_vitl_512_linear.txt", "keys_mast3r_vitl_512_catmlpdpt.txt"]
TINY = dict(enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=16, dec_depth=2, dec_num_heads=2,
            head_type="linear", img_size=64)


def test_parse_constructor_literals() -> None:
    name, kwargs = parse_constructor(
        "AsymmetricMASt3R(img_size=(512, 512), head_type='catmlp+dpt', depth_mode=('exp', -inf, inf), "
        "conf_mode=['exp', 1, float('inf')], two_confs=True, desc_conf_mode=None, mlp_ratio=4.0)"
    )
    assert name == "AsymmetricMASt3R"
    assert kwargs == {
        "img_size": (512, 512), "head_type": "catmlp+dpt", "depth_mode": ("exp", -math.inf, math.inf),
        "conf_mode": ("exp", 1, math.inf), "two_confs": True, "desc_conf_mode": None, "mlp_ratio": 4.0,
    }


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')",
    "AsymmetricCroCo3DStereo(head_type=__import__('os').name)",
    "AsymmetricCroCo3DStereo(norm_layer=partial(nn.LayerNorm, eps=1e-6))",
    "AsymmetricCroCo3DStereo('dpt')",
    "AsymmetricCroCo3DStereo(**kw)",
    "AsymmetricCroCo3DStereo(img_size=(512, 512)",
    "models.AsymmetricCroCo3DStereo()",
])
def test_parse_constructor_rejects_non_literals(text: str) -> None:
    with pytest.raises(InputError):
        parse_constructor(text)


def test_constructor_defaults_and_errors() -> None:
    cfg = config_from_constructor(*parse_constructor(
        "AsymmetricCroCo3DStereo(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), "
        "head_type='dpt', output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
        "enc_embed_dim=1024, enc_depth=24, enc_num_heads=16, dec_embed_dim=768, dec_depth=12, dec_num_heads=12)"
    ))
    assert cfg == PointmapConfig()  # the defaults are the released DUSt3R 512 DPT model
    for text, message in [
        ("Foo(img_size=224)", "unsupported model class"),
        ("AsymmetricCroCo3DStereo(pos_embed='cosine')", "position embedding"),
        ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', wpose=False)", "wpose"),
        ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', two_confs=True)", "does not take"),
        ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', head_type='dpt')", "at least 10"),
        ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', head_type='convnet')", "head type"),
        ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', depth_mode=('exp', 0, inf))", "depth mode"),
    ]:
        with pytest.raises(InputError, match=message):
            config_from_constructor(*parse_constructor(text))


@pytest.mark.parametrize("key_file", FULL_SIZE)
def test_full_size_state_dict_layout(key_file: str) -> None:
    """The released ViT-L/ViT-B 512 models, built on the meta device, have exactly the listed keys and shapes."""
    lines = (shared_dataset("dust3r_parity") / key_file).read_text().splitlines()
    ctor = lines[0].lstrip("# ").strip()
    n_params = int(lines[1].split(",")[1].split()[0])
    expected = [(k, s) for k, s, _ in (line.split("\t") for line in lines[2:] if line.strip())]
    with torch.device("meta"):
        model = PointmapNet(config_from_constructor(*parse_constructor(ctor)))
    state = model.state_dict()
    assert [(k, str(tuple(v.shape))) for k, v in state.items()] == expected
    assert all(v.dtype == torch.float32 for v in state.values())
    assert sum(p.numel() for p in model.parameters()) == n_params  # shared DPT convolutions counted once
    assert infer_config(state, rope_base=model.config.rope_base, img_size=512) == model.config


def _tiny_state(**overrides) -> tuple[PointmapConfig, dict[str, torch.Tensor]]:
    cfg = PointmapConfig(**{**TINY, **overrides})
    return cfg, PointmapNet(cfg).state_dict()


def test_bare_state_dict_needs_or_infers_architecture(tmp_path: Path) -> None:
    cfg, state = _tiny_state(enc_num_heads=1, dec_num_heads=1)  # 32 and 16 wide: 64-channel heads rounded to 1
    torch.save({k: v.half() for k, v in state.items()}, tmp_path / "bare.pth")
    inferred = load_checkpoint(tmp_path / "bare.pth")
    assert inferred.config == PointmapConfig(**{**TINY, "enc_num_heads": 1, "dec_num_heads": 1, "img_size": 512})
    for key, value in state.items():
        assert torch.equal(inferred.state_dict()[key], value.half().float())
    explicit = load_checkpoint(tmp_path / "bare.pth", config=PointmapConfig(**TINY))
    assert explicit.config.enc_num_heads == 2


def test_official_layout_and_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    cfg, state = _tiny_state(head_type="dpt", dec_depth=10)
    ctor = ("AsymmetricCroCo3DStereo(img_size=(64, 64), head_type='dpt', enc_embed_dim=32, enc_depth=1, "
            "enc_num_heads=2, dec_embed_dim=16, dec_depth=10, dec_num_heads=2, pos_embed='RoPE100', "
            "landscape_only=False)")
    torch.save({"args": argparse.Namespace(model=ctor, lr=1e-4), "model": state, "epoch": 3}, tmp_path / "ck.pth")
    model = load_checkpoint(tmp_path / "ck.pth")
    assert model.config == cfg
    assert not model.training and next(model.parameters()).device.type == "cpu"

    # safetensors refuses shared tensors, so files on the Hub keep one name of each aliased DPT convolution
    unique = {k: v.clone() for k, v in state.items() if ".layer_rn." not in k}
    save_file(unique, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({
        "img_size": [64, 64], "head_type": "dpt", "enc_embed_dim": 32, "enc_depth": 1, "enc_num_heads": 2,
        "dec_embed_dim": 16, "dec_depth": 10, "dec_num_heads": 2, "pos_embed": "RoPE100",
        "depth_mode": ["exp", -math.inf, math.inf], "conf_mode": ["exp", 1, math.inf],
    }))
    from_st = load_checkpoint(tmp_path / "model.safetensors")
    assert from_st.config == cfg
    for key, value in state.items():
        assert torch.equal(from_st.state_dict()[key], value), key


def test_mismatching_checkpoints_name_the_keys(tmp_path: Path) -> None:
    cfg, state = _tiny_state()
    broken = dict(state)
    del broken["enc_norm.weight"]
    broken["extra.weight"] = torch.zeros(1)
    broken["decoder_embed.bias"] = torch.zeros(5)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(InputError) as info:
        load_checkpoint(tmp_path / "broken.pth", config=cfg)
    message = str(info.value)
    assert "missing: enc_norm.weight" in message
    assert "unexpected: extra.weight" in message
    assert "decoder_embed.bias (5,) (expected (16,))" in message
    assert "\n" not in message

    with pytest.raises(InputError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pth")
    torch.save({"args": argparse.Namespace(model="eval('1')"), "model": state}, tmp_path / "evil.pth")
    with pytest.raises(InputError, match="not of the form|not a literal|unsupported"):
        load_checkpoint(tmp_path / "evil.pth")
    torch.save({"enc_blocks.0.norm1.weight": torch.ones(3)}, tmp_path / "partial.pth")
    with pytest.raises(InputError, match="patch_embed.proj.weight"):
        load_checkpoint(tmp_path / "partial.pth")


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_planted_weights_are_refused_without_running_code(kind: str, tmp_path: Path, capsys) -> None:
    weights = tmp_path / "weights.pth"
    marker = plant_hostile_file(weights, kind)
    with pytest.raises(InputError) as info:
        load_checkpoint(weights)
    assert "\n" not in str(info.value) and str(weights) in str(info.value)
    images = tmp_path / "images"
    images.mkdir()
    for k in range(2):
        write_image(images / f"{k}.png", np.full((32, 32, 3), 0.2 * k, np.float32))
    assert cli.main(["pointmap", str(images), "--weights", str(weights), "-o", str(tmp_path / "out")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not marker.exists()
