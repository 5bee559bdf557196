"""Network building blocks and pairwise inference on tiny random models (no shared data needed)."""

from __future__ import annotations

import math

import pytest
import torch

from mapforge.errors import InputError
from mapforge.pointmap import PointmapConfig, PointmapNet, inference, iter_pair_predictions, symmetrize
from mapforge.pointmap.croco import PatchEmbed, RoPE2D, patch_positions
from mapforge.pointmap.heads import activate

TINY = dict(enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=16, dec_num_heads=2)
TINY_MAST3R = PointmapConfig(head_type="catmlp+dpt", dec_depth=10, desc_dim=6, two_confs=True,
                             desc_conf_mode=("exp", 0.0, math.inf), **TINY)


def _view(h: int, w: int, index: int = 0) -> dict:
    g = torch.Generator().manual_seed(index)
    img = torch.rand(1, 3, h, w, generator=g) * 2 - 1
    return {"img": img, "true_shape": torch.tensor([[h, w]], dtype=torch.int32), "idx": index, "instance": str(index)}


def test_patch_positions_are_row_major_y_x() -> None:
    pos = patch_positions(2, 2, 3)
    assert pos.shape == (2, 6, 2) and pos.dtype == torch.int64
    assert pos[1].tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    with pytest.raises(InputError, match="multiple of the 16-pixel patch"):
        PatchEmbed(8)(torch.zeros(1, 3, 32, 40))


def test_rope_depends_on_relative_position_only() -> None:
    rope = RoPE2D(100.0)
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 2, 1, 16, generator=g), torch.randn(1, 2, 1, 16, generator=g)

    def score(pq, pk):
        return (rope(q, torch.tensor([[pq]])) * rope(k, torch.tensor([[pk]]))).sum(-1)

    assert torch.allclose(score((2, 3), (5, 1)), score((7, 4), (10, 2)), atol=1e-5)
    assert not torch.allclose(score((2, 3), (5, 1)), score((2, 3), (1, 5)), atol=1e-3)
    rotated = rope(q, torch.tensor([[(4, 9)]]))
    assert torch.allclose(rotated.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    assert torch.equal(rope(q, torch.tensor([[(0, 0)]])), q)


def test_activations() -> None:
    raw = torch.randn(2, 4 + 6 + 1, 3, 5, generator=torch.Generator().manual_seed(2))
    out = activate(raw, ("exp", -math.inf, math.inf), ("exp", 1.0, math.inf), 6, ("exp", 0.0, math.inf))
    xyz = raw.permute(0, 2, 3, 1)[..., :3]
    assert torch.allclose(out["pts3d"].norm(dim=-1), torch.expm1(xyz.norm(dim=-1)), atol=1e-6)
    assert torch.allclose(torch.nn.functional.cosine_similarity(out["pts3d"], xyz, dim=-1), torch.ones(()))
    assert torch.allclose(out["conf"], 1 + raw[:, 3].exp())
    assert torch.allclose(out["desc"].norm(dim=-1), torch.ones(()), atol=1e-6)
    assert torch.allclose(out["desc_conf"], raw[:, 10].exp())


@pytest.mark.parametrize("config", [PointmapConfig(head_type="linear", dec_depth=2, **TINY),
                                    PointmapConfig(head_type="dpt", dec_depth=10, **TINY), TINY_MAST3R],
                         ids=["linear", "dpt", "mast3r"])
def test_forward_shapes_with_odd_token_rows(config: PointmapConfig) -> None:
    model = PointmapNet(config).eval()
    with torch.inference_mode():
        pred1, pred2 = model(_view(48, 80, 0), _view(80, 48, 1))  # 3x5 tokens and a portrait second view
    assert pred1["pts3d"].shape == (1, 48, 80, 3) and pred1["conf"].shape == (1, 48, 80)
    assert pred2["pts3d_in_other_view"].shape == (1, 80, 48, 3) and "pts3d" not in pred2
    assert (pred1["conf"] >= 1).all() and torch.isfinite(pred2["pts3d_in_other_view"]).all()
    if config.is_mast3r:
        assert pred1["desc"].shape == (1, 48, 80, 6) and pred2["desc_conf"].shape == (1, 80, 48)
        assert torch.allclose(pred2["desc"].norm(dim=-1), torch.ones(()), atol=1e-5)
        assert (pred1["desc_conf"] >= 0).all()
    else:
        assert set(pred1) == {"pts3d", "conf"}


def test_forward_rejects_inconsistent_true_shape() -> None:
    model = PointmapNet(PointmapConfig(head_type="linear", dec_depth=1, **TINY)).eval()
    bad = _view(32, 48)
    bad["true_shape"] = torch.tensor([[48, 32]])
    with pytest.raises(InputError, match="true_shape"):
        model(bad, _view(32, 48))


def test_symmetrize_order() -> None:
    assert symmetrize([(1, 0), (2, 0), (2, 1)]) == [(1, 0), (2, 0), (2, 1), (0, 1), (0, 2), (1, 2)]
    assert symmetrize([(0, 1), (1, 0)]) == [(0, 1), (1, 0)]


def test_inference_matches_direct_calls_and_streams() -> None:
    model = PointmapNet(TINY_MAST3R).eval()
    views = [_view(32, 48, 0), _view(32, 48, 1), _view(48, 32, 2), _view(32, 48, 3)]
    pairs = symmetrize([(1, 0), (2, 0), (3, 1)])
    batches = list(iter_pair_predictions(model, views, pairs, batch_size=2, progress=False))
    # runs of equal image sizes, cut to the batch size, in pair order
    assert [list(zip(b["view1"]["idx"], b["view2"]["idx"])) for b in batches] == [
        [(1, 0)], [(2, 0)], [(3, 1), (0, 1)], [(0, 2)], [(1, 3)]]
    result = inference(model, views, pairs, batch_size=3, progress=False)
    assert isinstance(result["pred1"]["pts3d"], list) and len(result["pred1"]["pts3d"]) == len(pairs)
    with torch.inference_mode():
        for p, (i, j) in enumerate(pairs):
            pred1, pred2 = model(views[i], views[j])
            assert torch.allclose(result["pred1"]["pts3d"][p], pred1["pts3d"][0], atol=1e-5)
            assert torch.allclose(result["pred2"]["desc"][p], pred2["desc"][0], atol=1e-5)
            assert torch.equal(result["view1"]["img"][p], views[i]["img"][0])
    same = inference(model, views[:2] + [views[3]], [(0, 1), (2, 1)], progress=False)
    assert same["pred2"]["pts3d_in_other_view"].shape == (2, 32, 48, 3)
    assert same["view2"]["true_shape"].tolist() == [[32, 48], [32, 48]]


def test_inference_rejects_bad_pairs() -> None:
    model = PointmapNet(PointmapConfig(head_type="linear", dec_depth=1, **TINY)).eval()
    views = [_view(32, 32, 0), _view(32, 32, 1)]
    for pairs, message in (([], "no image pairs"), ([(0, 2)], "outside"), ([(1, 1)], "itself")):
        with pytest.raises(InputError, match=message):
            inference(model, views, pairs, progress=False)
