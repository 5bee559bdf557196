"""DUSt3R and MASt3R networks: a shared-weight ViT encoder for both views, two cross-attending decoders, two heads.

One class covers both families; the head type decides which. State dict keys are those of the released checkpoints
(`AsymmetricCroCo3DStereo` for DUSt3R, `AsymmetricMASt3R` for MASt3R).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mapforge.errors import InputError
from mapforge.pointmap.croco import LAYER_NORM_EPS, DecoderBlock, EncoderBlock, PatchEmbed, RoPE2D
from mapforge.pointmap.heads import DPTHead, DPTWithLocalFeaturesHead, LinearHead, activate

HEAD_TYPES = ("linear", "dpt", "catmlp+dpt")
ActivationMode = tuple[str, float, float]


@dataclass(frozen=True)
class PointmapConfig:
    """Architecture of a DUSt3R / MASt3R network.

    Defaults are the released DUSt3R ViT-Large encoder / ViT-Base decoder, 512 px, DPT head model
    (`DUSt3R_ViTLarge_BaseDecoder_512_dpt`); MASt3R's release differs by `head_type="catmlp+dpt"`, `desc_dim=24`,
    `two_confs=True`, `desc_conf_mode=("exp", 0, inf)`.

    Attributes:
        head_type: 'linear' (per-token linear layer), 'dpt' (DUSt3R DPT) or 'catmlp+dpt' (MASt3R: DPT + descriptors).
        img_size: training resolution (longest side, 224 or 512); tells `load_images` which size to prepare. The
            network itself accepts any multiple of the patch size.
        patch_size: side of the square patches, pixels.
        enc_embed_dim, enc_depth, enc_num_heads: encoder width, block count, attention heads.
        dec_embed_dim, dec_depth, dec_num_heads: decoder width, block count, attention heads.
        mlp_ratio: hidden width of every block MLP relative to the block width.
        rope_base: base frequency of the 2D rotary position embedding ('RoPE100' in the released models).
        depth_mode: activation of the point channels: (mode, vmin, vmax), mode in 'exp', 'square', 'linear'.
        conf_mode: activation of the confidence channel (mode, vmin, vmax), or None for no confidence.
        desc_dim: MASt3R local descriptor channels (24 in the release); 0 for DUSt3R.
        two_confs: MASt3R predicts a separate descriptor confidence channel.
        desc_conf_mode: activation of that channel; None means `conf_mode`.
    """

    head_type: str = "dpt"
    img_size: int = 512
    patch_size: int = 16
    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    dec_embed_dim: int = 768
    dec_depth: int = 12
    dec_num_heads: int = 12
    mlp_ratio: float = 4.0
    rope_base: float = 100.0
    depth_mode: ActivationMode = ("exp", -math.inf, math.inf)
    conf_mode: ActivationMode | None = ("exp", 1.0, math.inf)
    desc_dim: int = 0
    two_confs: bool = False
    desc_conf_mode: ActivationMode | None = None

    def __post_init__(self) -> None:
        if self.head_type not in HEAD_TYPES:
            raise InputError(f"unknown head type {self.head_type!r} (expected one of {', '.join(HEAD_TYPES)})")
        if (self.head_type == "catmlp+dpt") != (self.desc_dim > 0):
            raise InputError("local descriptors (desc_dim > 0) go with the 'catmlp+dpt' head and only with it")
        if self.head_type != "linear" and self.dec_depth < 10:
            raise InputError(f"the DPT heads need a decoder of at least 10 blocks, got {self.dec_depth}")
        for dim, heads, what in ((self.enc_embed_dim, self.enc_num_heads, "encoder"),
                                 (self.dec_embed_dim, self.dec_num_heads, "decoder")):
            if heads <= 0 or dim % heads or (dim // heads) % 4:
                raise InputError(f"{what} width {dim} cannot be split into {heads} heads of a multiple of 4 channels")
        if self.depth_mode[0] not in ("exp", "square", "linear") or self.depth_mode[1:] != (-math.inf, math.inf):
            raise InputError(f"unsupported depth mode {self.depth_mode!r}")
        for mode in (self.conf_mode, self.desc_conf_mode):
            if mode is not None and mode[0] not in ("exp", "sigmoid"):
                raise InputError(f"unsupported confidence mode {mode!r}")

    @property
    def is_mast3r(self) -> bool:
        return self.desc_dim > 0

    @property
    def dense_channels(self) -> int:
        """Channels of the point head: xyz plus the confidence when there is one."""
        return 3 + (self.conf_mode is not None)


def _make_head(cfg: PointmapConfig) -> nn.Module:
    if cfg.head_type == "linear":
        return LinearHead(cfg.dec_embed_dim, cfg.dense_channels, cfg.patch_size)
    if cfg.head_type == "dpt":
        return DPTHead(cfg.enc_embed_dim, cfg.dec_embed_dim, cfg.dec_depth, cfg.dense_channels, cfg.patch_size)
    return DPTWithLocalFeaturesHead(
        cfg.enc_embed_dim, cfg.dec_embed_dim, cfg.dec_depth, cfg.dense_channels,
        cfg.desc_dim + cfg.two_confs, cfg.patch_size,
    )


class PointmapNet(nn.Module):
    """Two views in, one pointmap per view out, both expressed in the first view's camera frame.

    `forward(view1, view2)` takes dicts with `img [B, 3, H, W]` in [-1, 1] (and optionally `true_shape [B, 2]`,
    which must equal (H, W)) and returns `(pred1, pred2)`: `pred1` has `pts3d [B, H, W, 3]` and `conf [B, H, W]`,
    `pred2` has `pts3d_in_other_view` and `conf`; MASt3R adds `desc [B, H, W, D]` (unit norm) and `desc_conf`.
    """

    def __init__(self, config: PointmapConfig) -> None:
        super().__init__()
        self.config = cfg = config
        # used only in CroCo pre-training; kept so that the released state dicts load strictly
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_embed_dim))
        self.patch_embed = PatchEmbed(cfg.enc_embed_dim, cfg.patch_size)
        rope = RoPE2D(cfg.rope_base)
        self.enc_blocks = nn.ModuleList(
            EncoderBlock(cfg.enc_embed_dim, cfg.enc_num_heads, rope, cfg.mlp_ratio) for _ in range(cfg.enc_depth)
        )
        self.enc_norm = nn.LayerNorm(cfg.enc_embed_dim, eps=LAYER_NORM_EPS)
        self.decoder_embed = nn.Linear(cfg.enc_embed_dim, cfg.dec_embed_dim)
        self.dec_blocks = nn.ModuleList(
            DecoderBlock(cfg.dec_embed_dim, cfg.dec_num_heads, rope, cfg.mlp_ratio) for _ in range(cfg.dec_depth)
        )
        self.dec_norm = nn.LayerNorm(cfg.dec_embed_dim, eps=LAYER_NORM_EPS)
        self.dec_blocks2 = nn.ModuleList(
            DecoderBlock(cfg.dec_embed_dim, cfg.dec_num_heads, rope, cfg.mlp_ratio) for _ in range(cfg.dec_depth)
        )
        self.downstream_head1 = _make_head(cfg)
        self.downstream_head2 = _make_head(cfg)

    def encode(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`img [B, 3, H, W]` -> normalised encoder tokens `[B, N, enc_dim]` and their positions `[B, N, 2]`."""
        x, pos = self.patch_embed(img)
        for block in self.enc_blocks:
            x = block(x, pos)
        return self.enc_norm(x), pos

    def decode(
        self, feat1: torch.Tensor, pos1: torch.Tensor, feat2: torch.Tensor, pos2: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run both decoders side by side; each block of one view attends to the other view's previous layer.

        Returns, per view, `dec_depth + 1` tensors: the encoder tokens `[B, N, enc_dim]`, then each block's output
        `[B, N, dec_dim]`, the last one after the decoder norm.
        """
        out1, out2 = [feat1], [feat2]
        x1, x2 = self.decoder_embed(feat1), self.decoder_embed(feat2)
        for block1, block2 in zip(self.dec_blocks, self.dec_blocks2):
            x1, x2 = block1(x1, x2, pos1, pos2), block2(x2, x1, pos2, pos1)
            out1.append(x1)
            out2.append(x2)
        out1[-1], out2[-1] = self.dec_norm(out1[-1]), self.dec_norm(out2[-1])
        return out1, out2

    def head_raw(self, which: int, decoder_outputs: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        """Raw output `[B, C, H, W]` of head 1 or 2 before the activations."""
        head = self.downstream_head1 if which == 1 else self.downstream_head2
        return head(decoder_outputs, image_size)

    def predict(self, which: int, decoder_outputs: list[torch.Tensor], image_size: tuple[int, int]) -> dict:
        """Activated predictions of head 1 or 2 (see the class docstring for the keys)."""
        cfg = self.config
        desc_conf_mode = (cfg.desc_conf_mode or cfg.conf_mode) if cfg.two_confs else None
        raw = self.head_raw(which, decoder_outputs, image_size)
        return activate(raw, cfg.depth_mode, cfg.conf_mode, cfg.desc_dim, desc_conf_mode)

    def forward_features(
        self, feat1: torch.Tensor, pos1: torch.Tensor, shape1: tuple[int, int],
        feat2: torch.Tensor, pos2: torch.Tensor, shape2: tuple[int, int],
    ) -> tuple[dict, dict]:
        """Decoders and heads from already encoded views (`encode`), `shape` = image (H, W)."""
        dec1, dec2 = self.decode(feat1, pos1, feat2, pos2)
        pred1 = self.predict(1, dec1, shape1)
        pred2 = self.predict(2, dec2, shape2)
        pred2["pts3d_in_other_view"] = pred2.pop("pts3d")
        return pred1, pred2

    def forward(self, view1: dict, view2: dict) -> tuple[dict, dict]:
        img1, img2 = view1["img"], view2["img"]
        shape1, shape2 = _image_shape(view1), _image_shape(view2)
        if img1.shape == img2.shape:
            feat, pos = self.encode(torch.cat((img1, img2)))
            (feat1, feat2), (pos1, pos2) = feat.chunk(2), pos.chunk(2)
        else:
            (feat1, pos1), (feat2, pos2) = self.encode(img1), self.encode(img2)
        return self.forward_features(feat1, pos1, shape1, feat2, pos2, shape2)


def _image_shape(view: dict) -> tuple[int, int]:
    img = view["img"]
    if img.ndim != 4 or img.shape[1] != 3:
        raise InputError(f"expected images as [B, 3, H, W], got {tuple(img.shape)}")
    height, width = img.shape[-2:]
    true_shape = view.get("true_shape")
    if true_shape is not None:
        true_shape = torch.as_tensor(true_shape).reshape(-1, 2)
        if not (true_shape[:, 0] == height).all() or not (true_shape[:, 1] == width).all():
            raise InputError(f"true_shape {true_shape.tolist()} does not match the image size {height}x{width}")
    return int(height), int(width)
