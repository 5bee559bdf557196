"""MASt3R fast reciprocal nearest-neighbour matching on synthetic descriptor fields, and the pixel mapping back to
the original photographs."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from mapforge.errors import InputError
from mapforge.pointmap.matching import PixelMapping, nearest_neighbours, reciprocal_matches
from mapforge.pointmap.preprocess import prepare_image


def _embedding(xy: torch.Tensor, dim: int = 24, frequency: float = 0.35) -> torch.Tensor:
    """Unit descriptors `[..., dim]` of scene locations `[..., 2]`: random Fourier features (smooth, distinctive)."""
    g = torch.Generator().manual_seed(0)
    freqs = torch.randn(2, dim, generator=g, dtype=torch.float64) * frequency
    phase = torch.rand(dim, generator=g, dtype=torch.float64) * 2 * torch.pi
    desc = torch.cos(xy.double() @ freqs + phase)
    return torch.nn.functional.normalize(desc, dim=-1).float()


def _grid(h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xs, ys], dim=-1)


def test_integer_shift_recovers_exact_matches() -> None:
    h, w, shift = 40, 56, torch.tensor([5, -3])
    desc1 = _embedding(_grid(h, w), frequency=1.0)
    desc2 = _embedding(_grid(h, w) + shift, frequency=1.0)  # image 2's pixel p shows image 1's pixel p + shift
    xy1, xy2 = reciprocal_matches(desc1, desc2, subsample=4)
    assert len(xy1) > 0.8 * (h // 4) * (w // 4) * (1 - 5 / w) * (1 - 3 / h)
    expected = xy2 + shift.numpy()
    # Locations seen by only one image have no true partner; a few of them are mutual neighbours by chance.
    visible = ((expected > 0) & (expected < [w, h])).all(1)
    assert visible.mean() > 0.97
    np.testing.assert_array_equal(xy1[visible], expected[visible])
    assert np.all(np.mod(xy1, 1) == 0.5)  # COLMAP pixel centres
    assert np.all(np.diff(xy1[:, 1] * w + xy1[:, 0]) > 0)  # sorted by pixel index in image 1, unique


def test_subpixel_motion_and_noise_stay_within_a_pixel() -> None:
    h, w = 48, 64
    g = torch.Generator().manual_seed(1)
    # Image 2 sees the scene zoomed by 1.05 and shifted by (2.3, 1.6) pixels, with descriptor noise.
    location2 = (_grid(h, w).double() - torch.tensor([w / 2, h / 2])) / 1.05 + torch.tensor([w / 2 + 2.3, h / 2 + 1.6])
    desc1 = _embedding(_grid(h, w))
    desc2 = torch.nn.functional.normalize(_embedding(location2) + 0.01 * torch.randn(h, w, 24, generator=g), dim=-1)
    xy1, xy2 = reciprocal_matches(desc1, desc2)
    predicted = (xy2 - 0.5 - np.array([w / 2, h / 2])) / 1.05 + np.array([w / 2 + 2.3, h / 2 + 1.6]) + 0.5
    error = np.linalg.norm(predicted - xy1, axis=1)
    assert len(xy1) >= 30
    assert np.median(error) < 0.75 and error.max() < 1.5


def test_matches_are_mutual_nearest_neighbours() -> None:
    g = torch.Generator().manual_seed(2)
    desc1 = torch.nn.functional.normalize(torch.randn(12, 16, 8, generator=g), dim=-1)
    desc2 = torch.nn.functional.normalize(desc1.roll(3, dims=1) + 0.3 * torch.randn(12, 16, 8, generator=g), dim=-1)
    xy1, xy2 = reciprocal_matches(desc1, desc2, subsample=2)
    sim = desc1.reshape(-1, 8) @ desc2.reshape(-1, 8).T
    i1 = (xy1[:, 1] - 0.5) * 16 + xy1[:, 0] - 0.5
    i2 = (xy2[:, 1] - 0.5) * 16 + xy2[:, 0] - 0.5
    assert len(i1) > 0
    np.testing.assert_array_equal(sim.argmax(1).numpy()[i1.astype(int)], i2)
    np.testing.assert_array_equal(sim.argmax(0).numpy()[i2.astype(int)], i1)


def test_blocked_nearest_neighbours_match_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    queries, database = torch.randn(300, 24, generator=g), torch.randn(1000, 24, generator=g)
    np.testing.assert_array_equal(nearest_neighbours(queries, database, "dot", block_elements=60000).numpy(),
                                  (queries @ database.T).argmax(1).numpy())
    np.testing.assert_array_equal(nearest_neighbours(queries, database, "l2", block_elements=60000).numpy(),
                                  torch.cdist(queries, database).argmin(1).numpy())


def test_border_and_bad_input() -> None:
    desc = _embedding(_grid(32, 32))
    xy1, xy2 = reciprocal_matches(desc, desc, subsample=1, border=3)
    assert xy1.min() >= 3.5 and xy1.max() <= 32 - 3.5
    with pytest.raises(InputError):
        reciprocal_matches(desc, desc[..., :8])
    with pytest.raises(InputError):
        reciprocal_matches(desc, desc, similarity="cosine")


@pytest.mark.parametrize(("width", "height", "size"), [(640, 480, 512), (480, 640, 512), (600, 600, 512),
                                                       (1000, 333, 512), (300, 200, 224), (640, 480, 224)])
def test_pixel_mapping_follows_preprocessing(width: int, height: int, size: int) -> None:
    # Colours encode the original pixel position; after preprocessing, each network pixel must map back to it.
    xs = (np.arange(width) + 0.5) / width
    ys = (np.arange(height) + 0.5) / height
    ramp = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None], 0.5 * np.ones((height, width))), axis=-1)
    net = prepare_image(PIL.Image.fromarray(np.round(ramp * 255).astype(np.uint8)), size)[0]
    colours = ((net.permute(1, 2, 0).numpy() + 1) / 2)[..., :2]
    mapping = PixelMapping.from_preprocessing(width, height, size)
    h, w = colours.shape[:2]
    centres = np.stack(np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5), axis=-1).reshape(-1, 2)
    original = mapping.to_original(centres).reshape(h, w, 2)
    interior = (slice(4, -4), slice(4, -4))  # resampling filters blur the ramp's ends
    error = np.abs(colours[interior] * [width, height] - original[interior])
    assert np.median(error) < 1.5 and error.max() < 4
    np.testing.assert_allclose(mapping.to_network(mapping.to_original(centres)), centres)
