"""Loading DUSt3R / MASt3R weights: the released `.pth` checkpoints, bare state dicts and `.safetensors` files.

A released checkpoint is `{'args': Namespace(model="AsymmetricCroCo3DStereo(...)", ...), 'model': state_dict}`.
The constructor string is parsed (call name and literal keyword values), never evaluated, and mapped onto a
`PointmapConfig`. Without it, the architecture is read from the key shapes, or from a `config.json` beside a
`.safetensors` file (the Hugging Face layout), or given by the caller.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
from pathlib import Path
from typing import Any

import torch

from mapforge.errors import InputError
from mapforge.io.torch_files import load_torch_file
from mapforge.pointmap.models import PointmapConfig, PointmapNet

CONSTRUCTORS = ("AsymmetricCroCo3DStereo", "AsymmetricMASt3R")

# Keyword defaults of the upstream constructors (CroCoNet, AsymmetricCroCo3DStereo, AsymmetricMASt3R), used for
# any keyword a constructor string leaves out. 'cosine' is CroCo's default, unsupported here (no released model).
UPSTREAM_DEFAULTS: dict[str, Any] = {
    "img_size": 224, "patch_size": 16, "enc_embed_dim": 768, "enc_depth": 12, "enc_num_heads": 12,
    "dec_embed_dim": 512, "dec_depth": 8, "dec_num_heads": 16, "mlp_ratio": 4, "norm_im2_in_dec": True,
    "pos_embed": "cosine", "output_mode": "pts3d", "head_type": "linear",
    "depth_mode": ("exp", -math.inf, math.inf), "conf_mode": ("exp", 1, math.inf),
    "desc_mode": "norm", "two_confs": False, "desc_conf_mode": None,
}
# Keywords that only matter for training or for how upstream feeds portrait images; inference ignores them (the
# upstream loader itself swaps ManyAR_PatchEmbed for PatchEmbedDust3R and forces landscape_only=False).
IGNORED_KEYWORDS = {"freeze", "mask_ratio", "landscape_only", "patch_embed_cls"}
PATCH_EMBED_CLASSES = {"PatchEmbedDust3R", "ManyAR_PatchEmbed"}

# DPT registers each of its four input convolutions twice ('layerK_rn' and 'layer_rn.{K-1}').
_SCRATCH_ALIAS = re.compile(r"(.*\.scratch\.)(?:layer(\d)_rn|layer_rn\.(\d))\.weight$")


def _literal(node: ast.AST) -> Any:
    """Value of a literal expression node: numbers, strings, booleans, None, tuples/lists, `inf`, `-x`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in ("inf", "nan"):
        return float(node.id)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float"
            and len(node.args) == 1 and not node.keywords):
        value = _literal(node.args[0])
        if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "-inf", "infinity", "-infinity"):
            return float(value)
    raise ValueError(ast.unparse(node))


def parse_constructor(text: str) -> tuple[str, dict[str, Any]]:
    """Split `"Name(key=literal, ...)"` into the name and its keyword values, without evaluating anything.

    Tuples and lists come back as tuples; `inf`, `-inf` and `float('inf')` as floats.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise InputError(f"cannot parse the model constructor {text!r}: {exc.msg}") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.args:
        raise InputError(f"the model constructor {text!r} is not of the form Name(key=value, ...)")
    kwargs: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise InputError(f"the model constructor {text!r} uses ** arguments")
        try:
            kwargs[keyword.arg] = _literal(keyword.value)
        except ValueError as exc:
            raise InputError(f"model constructor argument {keyword.arg}={exc} is not a literal") from None
    return call.func.id, kwargs


def _mode(value: Any, name: str) -> tuple[str, float, float] | None:
    if value is None:
        return None
    if not (isinstance(value, (tuple, list)) and len(value) == 3 and isinstance(value[0], str)):
        raise InputError(f"{name} must be (mode, vmin, vmax), got {value!r}")
    return (value[0], float(value[1]), float(value[2]))


def config_from_constructor(name: str, kwargs: dict[str, Any]) -> PointmapConfig:
    """The `PointmapConfig` of an upstream constructor call (`AsymmetricCroCo3DStereo` / `AsymmetricMASt3R`)."""
    if name not in CONSTRUCTORS:
        raise InputError(f"unsupported model class {name!r} (expected {' or '.join(CONSTRUCTORS)})")
    unknown = sorted(set(kwargs) - set(UPSTREAM_DEFAULTS) - IGNORED_KEYWORDS)
    if unknown:
        raise InputError(f"unsupported model constructor argument(s) for {name}: {', '.join(unknown)}")
    mast3r_only = sorted({"desc_mode", "two_confs", "desc_conf_mode"} & set(kwargs))
    if name != "AsymmetricMASt3R" and mast3r_only:
        raise InputError(f"{name} does not take {', '.join(mast3r_only)}")
    args = {**UPSTREAM_DEFAULTS, **kwargs}
    patch_embed = kwargs.get("patch_embed_cls", "PatchEmbedDust3R")
    if patch_embed not in PATCH_EMBED_CLASSES:
        raise InputError(f"unsupported patch embedding {patch_embed!r}")
    pos_embed = str(args["pos_embed"])
    if not pos_embed.startswith("RoPE"):
        raise InputError(f"unsupported position embedding {pos_embed!r} (only RoPE models are supported)")
    if not args["norm_im2_in_dec"]:
        raise InputError("models without the decoder memory norm (norm_im2_in_dec=False) are not supported")
    output_mode = str(args["output_mode"])
    desc_dim = 0
    if output_mode.startswith("pts3d+desc"):
        desc_dim = int(output_mode[len("pts3d+desc"):])
    elif output_mode != "pts3d":
        raise InputError(f"unsupported output mode {output_mode!r}")
    if desc_dim and (name != "AsymmetricMASt3R" or args["head_type"] != "catmlp+dpt"):
        raise InputError(f"output mode {output_mode!r} needs AsymmetricMASt3R with head_type='catmlp+dpt'")
    if "norm" not in str(args["desc_mode"]):
        raise InputError(f"unsupported descriptor mode {args['desc_mode']!r}")
    img_size = args["img_size"]
    patch_size = args["patch_size"]
    return PointmapConfig(
        head_type=str(args["head_type"]),
        img_size=int(max(img_size) if isinstance(img_size, tuple) else img_size),
        patch_size=int(patch_size[0] if isinstance(patch_size, tuple) else patch_size),
        enc_embed_dim=int(args["enc_embed_dim"]),
        enc_depth=int(args["enc_depth"]),
        enc_num_heads=int(args["enc_num_heads"]),
        dec_embed_dim=int(args["dec_embed_dim"]),
        dec_depth=int(args["dec_depth"]),
        dec_num_heads=int(args["dec_num_heads"]),
        mlp_ratio=float(args["mlp_ratio"]),
        rope_base=float(pos_embed[len("RoPE"):] or 100.0),
        depth_mode=_mode(args["depth_mode"], "depth_mode"),
        conf_mode=_mode(args["conf_mode"], "conf_mode"),
        desc_dim=desc_dim,
        two_confs=bool(args["two_confs"]) and desc_dim > 0,
        desc_conf_mode=_mode(args["desc_conf_mode"], "desc_conf_mode"),
    )


def infer_config(state_dict: dict[str, torch.Tensor], **overrides: Any) -> PointmapConfig:
    """Architecture from the key shapes of a state dict.

    Widths, depths, patch size, head type and descriptor size are read from shapes. What shapes cannot tell comes
    from the released models: 64-channel attention heads, RoPE base 100, 'exp' activations, a MASt3R descriptor
    confidence channel, 512 px; pass `overrides` (PointmapConfig fields) for anything else.
    """
    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise InputError(f"not a DUSt3R/MASt3R state dict: key {key!r} is missing")
        return tuple(state_dict[key].shape)

    enc_dim, _, patch, _ = shape("patch_embed.proj.weight")
    dec_dim = shape("decoder_embed.weight")[0]

    def depth(prefix: str) -> int:
        return len({k.split(".")[1] for k in state_dict if k.startswith(prefix + ".")})

    fields: dict[str, Any] = dict(
        patch_size=patch, enc_embed_dim=enc_dim, enc_depth=depth("enc_blocks"), enc_num_heads=max(enc_dim // 64, 1),
        dec_embed_dim=dec_dim, dec_depth=depth("dec_blocks"), dec_num_heads=max(dec_dim // 64, 1),
        mlp_ratio=shape("enc_blocks.0.mlp.fc1.weight")[0] / enc_dim,
    )
    if "downstream_head1.proj.weight" in state_dict:
        fields["head_type"] = "linear"
        channels = shape("downstream_head1.proj.weight")[0] // patch**2
    elif "downstream_head1.dpt.head.4.weight" in state_dict:
        channels = shape("downstream_head1.dpt.head.4.weight")[0]
        if "downstream_head1.head_local_features.fc2.weight" in state_dict:
            fields.update(head_type="catmlp+dpt", two_confs=True, desc_conf_mode=("exp", 0.0, math.inf))
            fields["desc_dim"] = shape("downstream_head1.head_local_features.fc2.weight")[0] // patch**2 - 1
        else:
            fields["head_type"] = "dpt"
    else:
        raise InputError("not a DUSt3R/MASt3R state dict: no known downstream head keys")
    if channels not in (3, 4):
        raise InputError(f"the point head has {channels} channels, expected 3 (xyz) or 4 (xyz + confidence)")
    if channels == 3:
        fields["conf_mode"] = None
    fields.update(overrides)
    return PointmapConfig(**fields)


def _alias(key: str) -> str | None:
    m = _SCRATCH_ALIAS.match(key)
    if m is None:
        return None
    if m.group(2) is not None:
        return f"{m.group(1)}layer_rn.{int(m.group(2)) - 1}.weight"
    return f"{m.group(1)}layer{int(m.group(3)) + 1}_rn.weight"


def check_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Raise InputError naming the first missing, unexpected or wrongly shaped keys."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k} {tuple(state_dict[k].shape)} (expected {expected[k]})"
             for k in expected if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{what}: {', '.join(keys[:3])}{more}")
    if problems:
        raise InputError(f"checkpoint does not match the {model.config.head_type} model: {'; '.join(problems)}")


def _read(path: Path) -> tuple[dict[str, torch.Tensor], PointmapConfig | None]:
    """State dict and, when the file says, its architecture."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state_dict = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise InputError(f"cannot read the safetensors checkpoint {path}: {exc}") from None
        config_file = path.with_name("config.json")
        config = None
        if config_file.is_file():
            try:
                kwargs = json.loads(config_file.read_text())
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read {config_file}: {exc}") from None
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
            name = "AsymmetricMASt3R" if str(kwargs.get("output_mode", "")).startswith("pts3d+desc") \
                else "AsymmetricCroCo3DStereo"
            config = config_from_constructor(name, kwargs)
        return state_dict, config
    # Released checkpoints keep their training arguments in an argparse.Namespace.
    data = load_torch_file(path, "checkpoint", allowed=[argparse.Namespace])
    if not isinstance(data, dict):
        raise InputError(f"{path} holds a {type(data).__name__}, not a checkpoint or state dict")
    if "model" in data and isinstance(data["model"], dict):
        args = data.get("args")
        config = None
        if args is not None:
            text = args.get("model") if isinstance(args, dict) else getattr(args, "model", None)
            if not isinstance(text, str):
                raise InputError(f"{path}: 'args' does not hold a model constructor string")
            config = config_from_constructor(*parse_constructor(text))
        return data["model"], config
    return data, None


def load_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", config: PointmapConfig | None = None
) -> PointmapNet:
    """A DUSt3R / MASt3R network with its weights, float32, in eval mode on `device`.

    `path`: a released `.pth` checkpoint (`{'args': Namespace(model=...), 'model': state_dict}`), a bare state dict
    `.pth`, or a `.safetensors` file (with an optional `config.json` of constructor keywords beside it).
    `config` overrides whatever the file says; without either, the architecture is inferred from key shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    state_dict, file_config = _read(path)
    if not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise InputError(f"{path} is not a state dict of tensors")
    state_dict = dict(state_dict)
    for key in list(state_dict):
        alias = _alias(key)
        if alias is not None and alias not in state_dict:
            state_dict[alias] = state_dict[key]  # files written with shared tensors deduplicated
    config = config or file_config or infer_config(state_dict)
    with torch.device("meta"):
        model = PointmapNet(config)
    check_state_dict(model, state_dict)
    state_dict = {k: v.to(torch.float32).contiguous() for k, v in state_dict.items()}
    model.load_state_dict(state_dict, assign=True)
    return model.to(device).eval()
