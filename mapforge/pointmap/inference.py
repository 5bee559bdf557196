"""Running a pointmap network on pairs of prepared images.

Each image is encoded once, however many pairs it is in; pairs are then decoded in batches of pairs sharing the
same image sizes, and each batch's outputs are moved to the CPU before the next starts, so device memory stays
bounded by one batch plus the (small) encoder tokens. `iter_pair_predictions` streams batches; `inference` collects
them into the dict layout of upstream DUSt3R's `inference()`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from itertools import groupby

import torch
from tqdm import tqdm

from mapforge.errors import InputError
from mapforge.pointmap.models import PointmapNet

VIEW_KEYS = ("img", "true_shape", "idx", "instance")


def symmetrize(pairs: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The pairs followed by their reverses (upstream `make_pairs(symmetrize=True)` order), duplicates dropped."""
    out: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    for pair in [*pairs, *[(j, i) for i, j in pairs]]:
        pair = (int(pair[0]), int(pair[1]))
        if pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out


def _check(views: Sequence[dict], pairs: Sequence[tuple[int, int]]) -> None:
    if not pairs:
        raise InputError("no image pairs to run")
    for i, j in pairs:
        if not (0 <= i < len(views) and 0 <= j < len(views)):
            raise InputError(f"pair ({i}, {j}) refers to an image outside 0..{len(views) - 1}")
        if i == j:
            raise InputError(f"pair ({i}, {j}) pairs an image with itself")


def _shape(view: dict) -> tuple[int, int]:
    return tuple(view["img"].shape[-2:])


@torch.inference_mode()
def encode_views(
    model: PointmapNet, views: Sequence[dict], indices: Sequence[int], batch_size: int, device: torch.device
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Encoder tokens `[1, N, C]` and positions `[1, N, 2]` of each listed view, batched by image size."""
    features: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    by_shape = sorted(indices, key=lambda i: (_shape(views[i]), i))
    for _, group in groupby(by_shape, key=lambda i: _shape(views[i])):
        group = list(group)
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            img = torch.cat([views[i]["img"] for i in chunk]).to(device, torch.float32)
            feat, pos = model.encode(img)
            for k, i in enumerate(chunk):
                features[i] = (feat[k : k + 1], pos[k : k + 1])
    return features


def _batches(views: Sequence[dict], pairs: Sequence[tuple[int, int]], batch_size: int) -> Iterator[list]:
    """Consecutive runs of pairs with the same two image sizes, cut to `batch_size`."""
    for _, run in groupby(pairs, key=lambda p: (_shape(views[p[0]]), _shape(views[p[1]]))):
        run = list(run)
        for start in range(0, len(run), batch_size):
            yield run[start : start + batch_size]


def _view_batch(views: Sequence[dict], indices: list[int]) -> dict:
    return {
        "img": torch.cat([views[i]["img"] for i in indices]),
        "true_shape": torch.cat([torch.as_tensor(views[i]["true_shape"]).reshape(1, 2) for i in indices]),
        "idx": [views[i]["idx"] for i in indices],
        "instance": [views[i]["instance"] for i in indices],
    }


@torch.inference_mode()
def iter_pair_predictions(
    model: PointmapNet,
    views: Sequence[dict],
    pairs: Sequence[tuple[int, int]],
    batch_size: int = 8,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> Iterator[dict]:
    """Predict pointmaps for each `(i, j)` pair (view i is the reference), yielding one dict per batch.

    `views`: dicts from `load_images` (`img [1, 3, H, W]`, `true_shape`, `idx`, `instance`).
    Yields `{'view1', 'view2', 'pred1', 'pred2'}` for `B` consecutive pairs, on the CPU: views hold `img [B, 3, H, W]`,
    `true_shape [B, 2]`, `idx` and `instance` lists; `pred1` has `pts3d [B, H, W, 3]`, `conf [B, H, W]`, `pred2` has
    `pts3d_in_other_view` and `conf` (both in view 1's camera frame), plus `desc`, `desc_conf` for MASt3R.
    """
    _check(views, pairs)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    used = sorted({i for pair in pairs for i in pair})
    start = time.perf_counter()
    features = encode_views(model, views, used, batch_size, device)
    with tqdm(total=len(pairs), desc="pointmap pairs", unit="pair", disable=not progress) as bar:
        for batch in _batches(views, pairs, batch_size):
            first, second = [i for i, _ in batch], [j for _, j in batch]
            feat1, pos1 = (torch.cat(t) for t in zip(*(features[i] for i in first)))
            feat2, pos2 = (torch.cat(t) for t in zip(*(features[j] for j in second)))
            pred1, pred2 = model.forward_features(
                feat1, pos1, _shape(views[first[0]]), feat2, pos2, _shape(views[second[0]])
            )
            bar.update(len(batch))
            yield {
                "view1": _view_batch(views, first),
                "view2": _view_batch(views, second),
                "pred1": {k: v.cpu() for k, v in pred1.items()},
                "pred2": {k: v.cpu() for k, v in pred2.items()},
            }
    if progress:
        tqdm.write(f"pointmap inference: {len(pairs)} pairs of {len(used)} images in "
                   f"{time.perf_counter() - start:.1f} s on {device}")


def inference(
    model: PointmapNet,
    views: Sequence[dict],
    pairs: Sequence[tuple[int, int]],
    batch_size: int = 8,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict:
    """All pair predictions collected in upstream DUSt3R's layout: `{'view1', 'view2', 'pred1', 'pred2'}`.

    When every image has the same size, tensors are concatenated over pairs (`pts3d [P, H, W, 3]`, ...). Otherwise,
    as upstream, each tensor entry is a list of per-pair tensors without the batch dimension. `idx` and `instance`
    are always lists of length P. Everything is held in memory at once (a MASt3R pair at 512x384 is about 50 MB);
    for many pairs, consume `iter_pair_predictions` batch by batch instead.
    """
    batches = list(iter_pair_predictions(model, views, pairs, batch_size, device, progress))
    same_size = len({_shape(views[i]) for pair in pairs for i in pair}) == 1
    out: dict[str, dict] = {}
    for part in ("view1", "view2", "pred1", "pred2"):
        out[part] = {}
        for key in batches[0][part]:
            values = [b[part][key] for b in batches]
            if isinstance(values[0], list):
                out[part][key] = [x for v in values for x in v]
            elif same_size:
                out[part][key] = torch.cat(values)
            else:
                out[part][key] = [x for v in values for x in v]
    return out
