"""Which image pairs to match: all of them, neighbours in capture order, or the most similar by a global descriptor.

Every generator returns a sorted list of `(i, j)` index pairs with `i < j` and no duplicates.

The global descriptor for retrieval is VLAD (Jegou et al. 2010) over a small vocabulary learned by k-means on the
image set's own local descriptors: no pretrained model and nothing to download, good enough to find overlapping
views among hundreds of images, though weaker than learned global descriptors under strong appearance change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from mapforge.errors import InputError
from mapforge.sfm.features import Features

PAIR_METHODS = ("exhaustive", "sequential", "retrieval")

Pair = tuple[int, int]


def _normalised(pairs: Iterable[tuple[int, int]]) -> list[Pair]:
    return sorted({(min(int(i), int(j)), max(int(i), int(j))) for i, j in pairs if i != j})


def exhaustive_pairs(n: int) -> list[Pair]:
    """Every pair of `n` images: `n (n - 1) / 2` pairs."""
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def sequential_pairs(n: int, overlap: int = 10) -> list[Pair]:
    """Each image with the next `overlap` images in order (video or a walk); COLMAP's default overlap is 10."""
    if overlap < 1:
        raise InputError(f"sequential overlap must be at least 1, got {overlap}")
    return [(i, j) for i in range(n) for j in range(i + 1, min(n, i + overlap + 1))]


def union_pairs(*pair_lists: Iterable[tuple[int, int]]) -> list[Pair]:
    """All pairs of all lists, each once, as `(i, j)` with `i < j`, sorted."""
    return _normalised(pair for pairs in pair_lists for pair in pairs)


def _kmeans(points: np.ndarray, num_clusters: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Lloyd's k-means on `[N, D]` points from a random-sample start; returns the centres `[K, D]`."""
    centres = points[rng.permutation(len(points))[:num_clusters]].copy()
    for _ in range(iterations):
        assignment = _assign(points, centres)
        counts = np.bincount(assignment, minlength=len(centres))
        sums = np.zeros_like(centres)
        np.add.at(sums, assignment, points)
        filled = counts > 0  # an empty cluster keeps its centre
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


def _assign(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre for every point (squared distance without the constant |x|^2 term)."""
    return ((centres * centres).sum(1)[None] - 2.0 * points @ centres.T).argmin(1)


def global_descriptors(
    features: Sequence[Features],
    num_words: int = 64,
    samples_per_image: int = 1000,
    iterations: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """VLAD descriptors `[N, num_words * D]` float32 with unit L2 norm, one per image (similar: large dot product).

    The vocabulary is `num_words` k-means centres of up to `samples_per_image` descriptors drawn from each image.
    Per-word residual sums are normalised per word ("intra-normalisation", Arandjelovic & Zisserman 2013), then
    signed-square-rooted and L2-normalised.
    """
    rng = np.random.default_rng(seed)
    dims = next((f.descriptors.shape[1] for f in features if len(f)), 128)
    samples = []
    for f in features:
        descriptors = np.asarray(f.descriptors, dtype=np.float32)
        if len(descriptors) > samples_per_image:
            descriptors = descriptors[rng.permutation(len(descriptors))[:samples_per_image]]
        samples.append(descriptors)
    pool = np.concatenate(samples) if samples else np.zeros((0, dims), np.float32)
    if len(pool) < num_words:
        raise InputError(f"too few features for retrieval ({len(pool)} descriptors, need at least {num_words})")
    centres = _kmeans(pool, num_words, iterations, rng)
    vlad = np.zeros((len(features), num_words, dims), dtype=np.float32)
    for i, f in enumerate(features):
        if not len(f):
            continue
        descriptors = np.asarray(f.descriptors, dtype=np.float32)
        assignment = _assign(descriptors, centres)
        np.add.at(vlad[i], assignment, descriptors - centres[assignment])
    vlad /= np.maximum(np.linalg.norm(vlad, axis=2, keepdims=True), 1e-12)
    vlad = (np.sign(vlad) * np.sqrt(np.abs(vlad))).reshape(len(features), -1)
    return vlad / np.maximum(np.linalg.norm(vlad, axis=1, keepdims=True), 1e-12)


def retrieval_pairs(features_or_descriptors: Sequence[Features] | np.ndarray, k: int = 20) -> list[Pair]:
    """Each image with its `k` most similar images by global descriptor (the union of both directions).

    Takes the images' `Features` (VLAD descriptors are computed by `global_descriptors`) or precomputed global
    descriptors `[N, G]` whose dot products measure similarity.
    """
    if k < 1:
        raise InputError(f"the number of retrieval neighbours must be at least 1, got {k}")
    if isinstance(features_or_descriptors, np.ndarray):
        descriptors = features_or_descriptors
    else:
        descriptors = global_descriptors(features_or_descriptors)
    n = len(descriptors)
    if n < 2:
        return []
    descriptors = np.asarray(descriptors, dtype=np.float64)
    similarity = descriptors @ descriptors.T
    np.fill_diagonal(similarity, -np.inf)
    neighbours = np.argsort(-similarity, axis=1, kind="stable")[:, : min(k, n - 1)]
    return _normalised((i, int(j)) for i in range(n) for j in neighbours[i])


def select_pairs(
    features: Sequence[Features],
    method: str = "exhaustive",
    overlap: int = 10,
    num_neighbors: int = 20,
    loop_closure: bool = False,
) -> list[Pair]:
    """The pairs to match by `method` ("exhaustive", "sequential" or "retrieval").

    `overlap` is the sequential window, `num_neighbors` the retrieval neighbours; `loop_closure` adds retrieval
    pairs to sequential ones, so a path that comes back to its start is matched there too.
    """
    n = len(features)
    if method == "exhaustive":
        return exhaustive_pairs(n)
    if method == "sequential":
        pairs = sequential_pairs(n, overlap)
        return union_pairs(pairs, retrieval_pairs(features, num_neighbors)) if loop_closure else pairs
    if method == "retrieval":
        return retrieval_pairs(features, num_neighbors)
    raise InputError(f"unknown pair selection {method!r} (choose from {', '.join(PAIR_METHODS)})")
