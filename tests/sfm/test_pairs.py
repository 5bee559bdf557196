"""Pair selection: exhaustive, sequential, retrieval by VLAD, unions."""

from __future__ import annotations

import numpy as np
import pytest

from mapforge.errors import InputError
from mapforge.sfm.features import Features
from mapforge.sfm.pairs import (
    exhaustive_pairs,
    global_descriptors,
    retrieval_pairs,
    select_pairs,
    sequential_pairs,
    union_pairs,
)


def test_exhaustive_and_sequential():
    assert exhaustive_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert len(exhaustive_pairs(10)) == 45
    assert sequential_pairs(5, overlap=2) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4)]
    assert sequential_pairs(3, overlap=10) == exhaustive_pairs(3)
    with pytest.raises(InputError):
        sequential_pairs(5, overlap=0)


def test_union_normalises_orders_and_deduplicates():
    assert union_pairs([(2, 1), (0, 1)], [(1, 2), (3, 3), (0, 3)]) == [(0, 1), (0, 3), (1, 2)]


def _scene_features(rng: np.random.Generator, groups: int = 3, per_group: int = 4) -> list[Features]:
    """Images in groups: each group sees its own set of 'landmark' descriptors, with noise and clutter."""
    features = []
    for g in range(groups):
        landmarks = rng.random((300, 128)) ** 3
        for _ in range(per_group):
            seen = landmarks[rng.random(300) < 0.6] + 0.02 * rng.random((1, 128))
            d = np.concatenate([seen, rng.random((60, 128)) ** 3])
            d = (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)
            n = len(d)
            features.append(Features(np.zeros((n, 2)), d, np.ones(n), np.zeros(n), np.zeros((n, 3), np.uint8), (1, 1)))
    return features


def test_retrieval_finds_overlapping_images(rng):
    features = _scene_features(rng)
    descriptors = global_descriptors(features, num_words=16)
    assert descriptors.shape == (12, 16 * 128) and descriptors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-5)
    pairs = retrieval_pairs(descriptors, k=3)
    group = lambda i: i // 4  # noqa: E731
    assert pairs == sorted(set(pairs)) and all(i < j for i, j in pairs)
    assert {(i, j) for i, j in pairs} == {(i, j) for i, j in exhaustive_pairs(12) if group(i) == group(j)}


def test_vlad_of_two_words_worked_by_hand():
    """Two images with one descriptor near each of two well-separated words. k-means gives the words
    (1, 0) and (0.1, 1); each residual, normalised per word and signed-square-rooted, is a unit axis, and the
    whole descriptor has norm sqrt(2). Words may come in either order."""
    def features(*descriptors: tuple[float, float]) -> Features:
        n = len(descriptors)
        return Features(np.zeros((n, 2)), np.array(descriptors), np.ones(n), np.zeros(n), np.zeros((n, 3), np.uint8),
                        (1, 1))

    images = [features((1.0, 0.2), (0.0, 1.0)), features((1.0, -0.2), (0.2, 1.0))]
    vlad = global_descriptors(images, num_words=2).reshape(2, 2, 2)
    half = np.sqrt(0.5)
    expected = [{(0.0, half), (-half, 0.0)}, {(0.0, -half), (half, 0.0)}]
    for words, wanted in zip(vlad, expected):
        assert {tuple(round(float(v), 5) for v in word) for word in words} == {tuple(round(v, 5) for v in w) for w in wanted}


def test_select_pairs(rng):
    features = _scene_features(rng, groups=2, per_group=3)
    assert select_pairs(features, "exhaustive") == exhaustive_pairs(6)
    assert select_pairs(features, "sequential", overlap=1) == sequential_pairs(6, 1)
    assert len(select_pairs(features, "retrieval", num_neighbors=2)) >= 6
    looped = select_pairs(features, "sequential", overlap=1, num_neighbors=2, loop_closure=True)
    assert set(sequential_pairs(6, 1)) < set(looped)
    with pytest.raises(InputError):
        select_pairs(features, "vocab_tree")
