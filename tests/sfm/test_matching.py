"""Mutual nearest neighbours with Lowe's ratio test on constructed descriptors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mapforge.errors import InputError
from mapforge.sfm.executor import LocalExecutor
from mapforge.sfm.features import Features
from mapforge.sfm.matching import MatchingConfig, match_descriptors, match_pairs


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _reference(d1: np.ndarray, d2: np.ndarray, ratio: float, mutual: bool) -> set[tuple[int, int]]:
    """Brute force in float64, straight from the definition."""
    distance = np.sqrt(np.maximum(2 - 2 * d1.astype(np.float64) @ d2.astype(np.float64).T, 0))
    order = np.argsort(distance, axis=1)
    result = set()
    for i in range(len(d1)):
        j, k = order[i, 0], order[i, 1]
        if ratio < 1 and not distance[i, j] < ratio * distance[i, k]:
            continue
        if mutual and np.argmin(distance[:, j]) != i:
            continue
        result.add((i, int(j)))
    return result


def test_recovers_a_noisy_permutation(rng):
    d1 = _unit(rng.random((300, 128)))
    perm = rng.permutation(300)
    d2 = _unit(d1[perm] + 0.01 * rng.standard_normal((300, 128)))
    matches = match_descriptors(d1, d2)
    assert matches.dtype == np.int64 and matches.shape == (300, 2)
    np.testing.assert_array_equal(perm[matches[:, 1]], matches[:, 0])


def test_ratio_test_rejects_ambiguous_matches(rng):
    d1 = _unit(rng.random((20, 128)))
    d2 = _unit(np.concatenate([d1, d1[:1]]) + 0.003 * rng.standard_normal((21, 128)))  # d1[0] has two twins
    matched = {tuple(m) for m in match_descriptors(d1, d2, ratio=0.8)}
    assert matched == {(i, i) for i in range(1, 20)}
    without_ratio = {tuple(m) for m in match_descriptors(d1, d2, ratio=1.0)}
    assert (0, 0) in without_ratio or (0, 20) in without_ratio


def test_mutual_check_rejects_many_to_one(rng):
    target = _unit(rng.random((1, 128)))
    d1 = _unit(np.repeat(target, 2, axis=0) + np.array([[0.01], [0.05]]) * rng.standard_normal((2, 128)))
    d2 = np.concatenate([target, _unit(rng.random((5, 128)))])
    both = match_descriptors(d1, d2, ratio=1.0, mutual=False)
    assert sorted(both[:, 1].tolist()) == [0, 0]
    mutual = match_descriptors(d1, d2, ratio=1.0, mutual=True)
    np.testing.assert_array_equal(mutual, [[0, 0]])


@pytest.mark.parametrize(("ratio", "mutual"), [(0.8, True), (0.9, False), (1.0, True)])
def test_equals_brute_force(rng, ratio, mutual):
    # correlated descriptors, like RootSIFT: non-negative, with true matches hidden among distractors
    base = rng.random((400, 128)) ** 3
    d1 = _unit(base[:300] + 0.05 * rng.random((300, 128)))
    d2 = _unit(np.concatenate([base[100:] + 0.05 * rng.random((300, 128)), rng.random((100, 128)) ** 3]))
    result = {tuple(m) for m in match_descriptors(d1, d2, ratio=ratio, mutual=mutual)}
    assert result == _reference(d1, d2, ratio, mutual)


def test_float32_search_path_equals_brute_force(rng, monkeypatch):
    from mapforge.sfm import matching

    monkeypatch.setattr(matching, "_search_dtype", lambda device: torch.float32)
    d1, d2 = _unit(rng.random((200, 128)) ** 3), _unit(rng.random((250, 128)) ** 3)
    assert {tuple(m) for m in match_descriptors(d1, d2, ratio=0.95)} == _reference(d1, d2, 0.95, True)


@pytest.mark.parametrize("search_dtype", [torch.bfloat16, torch.float32])
def test_negative_similarities_equal_brute_force(rng, monkeypatch, search_dtype):
    # Signed descriptors (XFeat) give negative similarities, whose bit patterns order in reverse as integers.
    from mapforge.sfm import matching

    monkeypatch.setattr(matching, "_search_dtype", lambda device: search_dtype)
    d1, d2 = _unit(rng.random((120, 64)) ** 2), -_unit(rng.random((150, 64)) ** 2)  # every similarity < 0
    for ratio in (0.99, 1.0):
        assert {tuple(m) for m in match_descriptors(d1, d2, ratio=ratio)} == _reference(d1, d2, ratio, True)
    mixed = _unit(rng.standard_normal((150, 64)))
    assert {tuple(m) for m in match_descriptors(d1, mixed, ratio=1.0)} == _reference(d1, mixed, 1.0, True)


def test_empty_and_tiny_inputs():
    d = _unit(np.ones((3, 128)))
    assert match_descriptors(d[:0], d).shape == (0, 2)
    assert match_descriptors(d, d[:1]).shape == (0, 2)  # no second neighbour for the ratio test
    assert match_descriptors(d[:1], d[:1], ratio=1.0).tolist() == [[0, 0]]


def _features(descriptors: np.ndarray) -> Features:
    n = len(descriptors)
    return Features(np.zeros((n, 2)), descriptors, np.ones(n), np.zeros(n), np.zeros((n, 3), np.uint8), (10, 10))


def test_match_pairs_returns_every_pair(rng):
    d = _unit(rng.random((50, 128)))
    features = [_features(d[rng.permutation(50)]) for _ in range(3)]
    pairs = [(0, 1), (0, 2), (1, 2)]
    matches = match_pairs(features, pairs, MatchingConfig(), LocalExecutor(1))
    assert list(matches) == pairs
    for (i, j), m in matches.items():
        assert len(m) == 50
        np.testing.assert_array_equal(features[i].descriptors[m[:, 0]], features[j].descriptors[m[:, 1]])


def test_config_validation():
    with pytest.raises(InputError):
        MatchingConfig(pairs="vocab")
    with pytest.raises(InputError):
        MatchingConfig(ratio=1.5)
