"""Feature tracks: keypoints of several images linked by verified pairwise matches (union-find).

A track is a set of (image, keypoint) observations believed to see one 3D point. Chaining pairwise matches can
put two keypoints of the same image into one track (a wrong match somewhere in the chain); such a track cannot be
one point. As COLMAP's correspondence graph never links two keypoints of one image to the same 3D point, a
conflicting track keeps, per image, only the keypoint with the most matches inside the track and drops the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Tracks:
    """Observations grouped into tracks.

    Attributes:
        image_idxs: `[K]` image index of every observation, sorted by track.
        keypoint_idxs: `[K]` keypoint index of every observation.
        offsets: `[T + 1]` track `t` owns observations `offsets[t]:offsets[t + 1]`.
        track_of: per image, `[N_i]` track index of each keypoint or -1.
    """

    image_idxs: np.ndarray
    keypoint_idxs: np.ndarray
    offsets: np.ndarray
    track_of: list[np.ndarray]

    @property
    def num_tracks(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        """`[T]` number of observations per track."""
        return np.diff(self.offsets)

    def observations(self, track: int) -> tuple[np.ndarray, np.ndarray]:
        """(image indices `[L]`, keypoint indices `[L]`) of one track."""
        sl = slice(self.offsets[track], self.offsets[track + 1])
        return self.image_idxs[sl], self.keypoint_idxs[sl]


def _find_roots(parent: np.ndarray) -> np.ndarray:
    """Path-compressed roots of a parent array, vectorised (pointer jumping)."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand


def _union_find(num_nodes: int, edges: np.ndarray) -> np.ndarray:
    """Connected-component label (smallest node id of its component) of every node; edges `[E, 2]`."""
    parent = np.arange(num_nodes)
    if len(edges) == 0:
        return parent
    a, b = edges[:, 0], edges[:, 1]
    # Label propagation: every edge pulls both ends to the smaller root until nothing changes.
    while True:
        ra, rb = parent[a], parent[b]
        low = np.minimum(ra, rb)
        changed = (ra != low) | (rb != low)
        if not changed.any():
            return parent
        np.minimum.at(parent, ra, low)
        np.minimum.at(parent, rb, low)
        parent = _find_roots(parent)


def build_tracks(
    num_keypoints: list[int], matches: dict[tuple[int, int], np.ndarray], min_length: int = 2
) -> Tracks:
    """Union-find tracks from pairwise matches.

    Args:
        num_keypoints: keypoints per image, `N_i`.
        matches: `(i, j) -> [M, 2]` keypoint indices into images i and j (verified inlier matches).
        min_length: tracks with fewer observations (after conflict removal) are dropped.

    Returns:
        `Tracks` with conflicts resolved: at most one keypoint per image per track.
    """
    offsets = np.concatenate([[0], np.cumsum(num_keypoints)]).astype(np.int64)
    image_of_node = np.repeat(np.arange(len(num_keypoints)), num_keypoints)
    edge_list = [
        np.stack([offsets[i] + m[:, 0], offsets[j] + m[:, 1]], axis=1)
        for (i, j), m in matches.items()
        if len(m)
    ]
    edges = np.concatenate(edge_list).astype(np.int64) if edge_list else np.zeros((0, 2), np.int64)
    num_nodes = int(offsets[-1])
    labels = _union_find(num_nodes, edges)
    degree = np.bincount(edges.ravel(), minlength=num_nodes)

    nodes = np.flatnonzero(degree > 0)
    # Per (track, image) keep the keypoint with the highest degree within the track (ties: the lowest index).
    order = np.lexsort((nodes, -degree[nodes], image_of_node[nodes], labels[nodes]))
    nodes = nodes[order]
    key_track, key_image = labels[nodes], image_of_node[nodes]
    first = np.ones(len(nodes), dtype=bool)
    first[1:] = (key_track[1:] != key_track[:-1]) | (key_image[1:] != key_image[:-1])
    # A dropped keypoint might be the only link of an otherwise kept one; conflicting tracks are rare enough
    # that this simple rule (as opposed to re-splitting) loses little.
    nodes = nodes[first]
    key_track = key_track[first]

    _, track_index, counts = np.unique(key_track, return_inverse=True, return_counts=True)
    keep = counts[track_index] >= min_length
    nodes, track_index = nodes[keep], track_index[keep]
    _, track_index = np.unique(track_index, return_inverse=True)
    num_tracks = int(track_index.max()) + 1 if len(track_index) else 0

    image_idxs = image_of_node[nodes]
    keypoint_idxs = nodes - offsets[image_idxs]
    track_offsets = np.concatenate([[0], np.cumsum(np.bincount(track_index, minlength=num_tracks))]).astype(np.int64)
    track_of = [np.full(n, -1, dtype=np.int64) for n in num_keypoints]
    for image in np.unique(image_idxs):
        sel = image_idxs == image
        track_of[image][keypoint_idxs[sel]] = track_index[sel]
    return Tracks(image_idxs.astype(np.int64), keypoint_idxs.astype(np.int64), track_offsets, track_of)
