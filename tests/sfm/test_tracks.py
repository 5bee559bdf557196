"""Union-find tracks from pairwise matches, with conflicting tracks resolved."""

from __future__ import annotations

import numpy as np

from mapforge.sfm.tracks import build_tracks


def _as_sets(tracks) -> list[set[tuple[int, int]]]:
    return [set(zip(*map(list, tracks.observations(t)))) for t in range(tracks.num_tracks)]


def test_chains_merge_into_one_track():
    matches = {(0, 1): np.array([[0, 5], [1, 6]]), (1, 2): np.array([[5, 2]]), (2, 3): np.array([[2, 0]])}
    tracks = build_tracks([3, 7, 4, 2], matches)
    sets = _as_sets(tracks)
    assert {(0, 0), (1, 5), (2, 2), (3, 0)} in sets
    assert {(0, 1), (1, 6)} in sets
    assert tracks.num_tracks == 2
    assert tracks.track_of[1][5] == tracks.track_of[3][0]
    assert tracks.track_of[0][2] == -1
    np.testing.assert_array_equal(np.sort(tracks.lengths()), [2, 4])


def test_conflicting_track_keeps_one_keypoint_per_image():
    # Image 0 keypoints 0 and 1 both end up in one track through image 1 and 2.
    matches = {
        (0, 1): np.array([[0, 0], [1, 0]]),
        (0, 2): np.array([[0, 0]]),
        (1, 2): np.array([[0, 0]]),
    }
    tracks = build_tracks([2, 1, 1], matches)
    assert tracks.num_tracks == 1
    images, keypoints = tracks.observations(0)
    assert sorted(images.tolist()) == [0, 1, 2]
    # Keypoint 0 of image 0 has two matches, keypoint 1 only one: the better-connected one stays.
    assert keypoints[images == 0].tolist() == [0]
    assert tracks.track_of[0].tolist() == [0, -1]


def test_random_matches_give_consistent_tracks(rng):
    counts = [50, 60, 40, 55]
    matches = {}
    for i in range(4):
        for j in range(i + 1, 4):
            matches[(i, j)] = np.stack([rng.integers(0, counts[i], 30), rng.integers(0, counts[j], 30)], 1)
    tracks = build_tracks(counts, matches)
    assert tracks.offsets[-1] == len(tracks.image_idxs)
    for t in range(tracks.num_tracks):
        images, keypoints = tracks.observations(t)
        assert len(set(images.tolist())) == len(images) >= 2
        for image, keypoint in zip(images, keypoints):
            assert tracks.track_of[image][keypoint] == t


def test_no_matches():
    tracks = build_tracks([3, 4], {})
    assert tracks.num_tracks == 0
    assert all((t == -1).all() for t in tracks.track_of)
