"""Descriptor matching: mutual nearest neighbours with Lowe's ratio test or a minimum similarity, vectorised with torch.

Both SIFT and XFeat descriptors are matched by mutual nearest neighbours with the ratio test (COLMAP's 0.8),
`MatchingConfig.for_features(method)`. The XFeat paper's matcher (mutual nearest neighbours with cosine similarity
above 0.82, no ratio test) stays available as `ratio=1, min_similarity=0.82`, but it is not the default: on all 120
pairs of templeSparseRing it gave a wrong relative pose (over 10 degrees off) on 98 pairs against 2 with the ratio
test, for the same accuracy on the overlapping pairs, and on fountain-P11's neighbouring pairs 0.027 against 0.031
degrees median rotation error (benchmarks/features.py).

Descriptors have unit L2 norm (RootSIFT), so squared Euclidean distances follow from dot products,
`|a - b|^2 = 2 - 2 a.b`, and one matrix product per chunk of rows finds every nearest neighbour. Memory stays
bounded on large images by splitting the first image's descriptors into row chunks. On the CPU the candidates of
each row are picked and re-scored by one compiled (numba) pass over the chunk's similarities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numba import njit

from mapforge.errors import InputError
from mapforge.sfm.executor import Executor, LocalExecutor
from mapforge.sfm.features import Features
from mapforge.sfm.pairs import PAIR_METHODS
from mapforge.sfm.verification import VerificationConfig

# Similarity-matrix elements per chunk: 2^24 float32 = 64 MB.
_CHUNK_ELEMENTS = 1 << 24


@dataclass
class MatchingConfig:
    """Pair selection, descriptor matching and (nested) geometric verification settings.

    Attributes:
        pairs: "exhaustive" (every pair; fine up to a few hundred images), "sequential" (ordered captures) or
            "retrieval" (the most similar images by a global descriptor), see `mapforge.sfm.pairs.select_pairs`.
        overlap: sequential window, each image with the next `overlap` images (COLMAP's default 10).
        num_neighbors: retrieval neighbours per image.
        loop_closure: with "sequential", also match the retrieval neighbours.
        ratio: Lowe's ratio test, nearest over second-nearest Euclidean distance (COLMAP's default 0.8, also used
            for XFeat, see the module docstring); 1 disables it.
        mutual: keep only mutual nearest neighbours (COLMAP's cross check, on by default).
        min_similarity: keep only matches whose cosine similarity (dot product of the unit descriptors) exceeds
            this; None (default) disables it. XFeat's reference matcher uses 0.82 without a ratio test.
        verification: the two-view geometry settings used by `mapforge.sfm.verification.verify_pairs`.
    """

    pairs: str = "exhaustive"
    overlap: int = 10
    num_neighbors: int = 20
    loop_closure: bool = False
    ratio: float = 0.8
    mutual: bool = True
    min_similarity: float | None = None
    verification: VerificationConfig = field(default_factory=VerificationConfig)

    @classmethod
    def for_features(cls, method: str, **overrides) -> MatchingConfig:
        """The defaults for descriptors of `method` ("sift" or "xfeat", as `FeatureConfig.method`), then `overrides`."""
        if method not in _METHOD_DEFAULTS:
            raise InputError(f"unknown feature method {method!r} (choose from {', '.join(_METHOD_DEFAULTS)})")
        return cls(**{**_METHOD_DEFAULTS[method], **overrides})

    def __post_init__(self) -> None:
        if self.pairs not in PAIR_METHODS:
            raise InputError(f"unknown pair selection {self.pairs!r} (choose from {', '.join(PAIR_METHODS)})")
        if not 0.0 < self.ratio <= 1.0:
            raise InputError(f"the ratio test threshold must be in (0, 1], got {self.ratio}")
        if self.min_similarity is not None and not -1.0 <= self.min_similarity < 1.0:
            raise InputError(f"the minimum descriptor similarity must be in [-1, 1), got {self.min_similarity}")


# Matching defaults per feature method (the module docstring says why XFeat uses the ratio test too).
_METHOD_DEFAULTS: dict[str, dict] = {
    "sift": {"ratio": 0.8, "min_similarity": None},
    "xfeat": {"ratio": 0.8, "min_similarity": None},
}


def _search_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the nearest-neighbour candidate search.

    On CPUs with native bfloat16 matrix products (AVX512-BF16, AMX) the search runs in bfloat16, about 3x faster
    than float32 for the matrix product. Its similarities are only good to about 2^-8 (the output is rounded to
    bfloat16), so `_nearest` keeps 8 candidates per descriptor and re-scores them in float32: the result equals a
    float32 search unless more than 8 descriptors crowd within 2^-8 of the nearest, which fails the ratio test
    anyway (checked against a float64 brute force on fountain-P11 pairs: identical matches); without a ratio test
    (XFeat) such a near-tie is an ambiguous match either way.
    """
    if device.type == "cpu":
        try:
            if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
                return torch.bfloat16
        except (AttributeError, RuntimeError):
            pass
    return torch.float32


# The integer views of float similarities: same width, and the mask that makes their order the floats' order.
_ORDER_KEYS = {torch.bfloat16: (torch.int16, 0x7FFF), torch.float32: (torch.int32, 0x7FFFFFFF)}


@njit(cache=True, nogil=True)  # runs on the executor's worker threads
def _rescored_top2(
    bits: np.ndarray, mask: int, k: int, a: np.ndarray, b: np.ndarray, best: np.ndarray, second: np.ndarray,
    nearest: np.ndarray,
) -> None:  # fmt: skip
    """For each row r of the search similarities (`bits [N, M]`: their bit patterns as integers of the same width),
    take the k largest as candidates, re-score them exactly as float32 dot products of `a[r]` with the candidate rows
    of `b`, and write the best and second-best score and the best candidate's index into `best`, `second`,
    `nearest` (each `[N]`; `second` is left alone when k = 1).

    Floats are sign and magnitude, so flipping the magnitude bits of the negative ones (`mask`) orders the integers
    as the floats. One pass per row keeps a sorted list of the k best (ties: lower index first, which also wins
    ties of the exact scores): with the re-scoring fused in, about twice as fast as torch's `topk`, `bmm` and sort,
    which together took as long as the matrix product itself.
    """
    n, m = bits.shape
    keys = np.empty(k, dtype=np.int64)
    candidates = np.empty(k, dtype=np.int64)
    for r in range(n):
        count = 0
        for c in range(m):
            key = np.int64(bits[r, c])
            if key < 0:
                key ^= mask
            if count == k and key <= keys[k - 1]:
                continue
            pos = count if count < k else k - 1
            while pos > 0 and keys[pos - 1] < key:
                keys[pos] = keys[pos - 1]
                candidates[pos] = candidates[pos - 1]
                pos -= 1
            keys[pos] = key
            candidates[pos] = c
            count = min(count + 1, k)
        top, runner_up, index = -np.inf, -np.inf, 0
        for j in range(k):
            score = 0.0
            for d in range(a.shape[1]):
                score += np.float64(a[r, d]) * np.float64(b[candidates[j], d])
            score = np.float32(score)
            if score > top:
                top, runner_up, index = score, top, candidates[j]
            elif score > runner_up:
                runner_up = score
        best[r] = top
        nearest[r] = index
        if k > 1:
            second[r] = runner_up


def _nearest(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every row of `a [N1, D]`: the largest and second-largest float32 similarity to rows of `b [N2, D]`
    (second is -inf when N2 = 1) and the index of the most similar row, each `[N1]`."""
    n1, n2 = len(a), len(b)
    a_search, b_search = a.to(dtype), b.to(dtype)
    # float32 search: its top 2 are exact; a coarser search keeps 8 candidates, so the true nearest and second
    # nearest are among them unless several lie within its rounding error, which fails the ratio test anyway
    num_candidates = min(2 if dtype == torch.float32 else 8, n2)
    best = torch.empty(n1, device=a.device)
    second = torch.full((n1,), -torch.inf, device=a.device)
    nearest = torch.empty(n1, dtype=torch.int64, device=a.device)
    on_cpu = a.device.type == "cpu" and dtype in _ORDER_KEYS
    rows = max(1, _CHUNK_ELEMENTS // n2)
    for start in range(0, n1, rows):
        stop = min(n1, start + rows)
        similarity = a_search[start:stop] @ b_search.T
        if on_cpu:
            int_type, mask = _ORDER_KEYS[dtype]
            _rescored_top2(
                similarity.view(int_type).numpy(), mask, num_candidates, a[start:stop].numpy(), b.numpy(),
                best[start:stop].numpy(), second[start:stop].numpy(), nearest[start:stop].numpy(),
            )  # fmt: skip
            continue
        candidates = similarity.topk(num_candidates, dim=1).indices
        exact = torch.bmm(b[candidates], a[start:stop, :, None])[:, :, 0]
        exact, order = exact.sort(dim=1, descending=True, stable=True)
        best[start:stop] = exact[:, 0]
        nearest[start:stop] = candidates.gather(1, order[:, :1])[:, 0]
        if num_candidates > 1:
            second[start:stop] = exact[:, 1]
    return best, second, nearest


def match_descriptors(
    d1: np.ndarray,
    d2: np.ndarray,
    ratio: float = 0.8,
    mutual: bool = True,
    device: str | torch.device | None = None,
    min_similarity: float | None = None,
) -> np.ndarray:
    """Match unit-norm descriptors `d1 [N1, D]` to `d2 [N2, D]`; returns `[M, 2]` int64 index pairs `(i1, i2)`.

    A match is `d1[i1]`'s nearest neighbour in `d2` that passes the ratio test (nearest distance < `ratio` times
    the second-nearest; `ratio=1` disables it), whose similarity `d1[i1] . d2[i2]` exceeds `min_similarity` (when
    given) and, with `mutual`, whose own nearest neighbour in `d1` is `d1[i1]`.
    Similarities are scored in float32. Sorted by `i1`. `device` defaults to CUDA when present.
    """
    n1, n2 = len(d1), len(d2)
    if n1 == 0 or n2 == 0 or (ratio < 1.0 and n2 < 2):
        return np.zeros((0, 2), dtype=np.int64)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    a = torch.from_numpy(np.ascontiguousarray(d1, dtype=np.float32)).to(device)
    b = torch.from_numpy(np.ascontiguousarray(d2, dtype=np.float32)).to(device)
    dtype = _search_dtype(device)
    best, second, nearest = _nearest(a, b, dtype)
    keep = torch.ones(n1, dtype=torch.bool, device=device)
    if ratio < 1.0:
        # dist1 < ratio * dist2  <=>  (2 - 2 s1) < ratio^2 (2 - 2 s2), on squared distances
        keep &= (1.0 - best).clamp(min=0) < ratio * ratio * (1.0 - second).clamp(min=0)
    if min_similarity is not None:
        keep &= best > min_similarity
    if mutual:
        # only the columns still claimed need their own nearest neighbour: often a fraction of them
        columns, inverse = torch.unique(nearest[keep], return_inverse=True)
        _, _, nearest_back = _nearest(b[columns], a, dtype)
        rows = torch.nonzero(keep).reshape(-1)
        keep[rows] = nearest_back[inverse] == rows
    index1 = torch.nonzero(keep).reshape(-1)
    return torch.stack([index1, nearest[index1]], dim=1).cpu().numpy().astype(np.int64)


def _match_task(task: tuple[np.ndarray, np.ndarray, float, bool, float | None]) -> np.ndarray:
    d1, d2, ratio, mutual, min_similarity = task
    return match_descriptors(d1, d2, ratio, mutual, min_similarity=min_similarity)


def match_pairs(
    features: Sequence[Features],
    pairs: Sequence[tuple[int, int]],
    config: MatchingConfig | None = None,
    executor: Executor | None = None,
) -> dict[tuple[int, int], np.ndarray]:
    """Match every pair `(i, j)`: `{(i, j): [M, 2] int64}` of keypoint indices into images i and j.

    Runs through `executor` (default: a `LocalExecutor` on every core), one task per pair and one thread per
    worker: on a busy 2-core machine that was faster than torch's threads in one process (fountain-P11, 55 pairs
    of 8192 features: 48 s against 64 s; 2000-feature pairs 0.07 s against 0.4 s each), as threads of one
    process wait for each other.
    """
    config = config or MatchingConfig()
    tasks = [
        (features[i].descriptors, features[j].descriptors, config.ratio, config.mutual, config.min_similarity)
        for i, j in pairs
    ]
    results = (executor or LocalExecutor()).map(_match_task, tasks, desc="matching")
    return {(int(i), int(j)): matches for (i, j), matches in zip(pairs, results)}
