"""Scene graphs: which image pairs a pointmap network is run on, named as in DUSt3R.

- `complete`: every pair.
- `swin-k`: each image with its k following images (sliding window), wrapping around the end of the sequence unless
  the name ends in `-noncyclic` (e.g. `swin-3-noncyclic`).
- `logwin-k`: each image with the images at offsets 1, 2, 4, ..., 2^(k-1) before and after it, wrapping around
  unless `-noncyclic`.
- `oneref-k`: every image paired with reference image k.

`k` may be left out (`swin`, `logwin` default to 3 and `oneref` to image 0, upstream's defaults).
"""

from __future__ import annotations

from mapforge.errors import InputError

SCENE_GRAPHS = ("complete", "swin-k", "logwin-k", "oneref-k")


def parse_scene_graph(scene_graph: str) -> tuple[str, int | None, bool]:
    """`"logwin-4-noncyclic"` -> `("logwin", 4, False)`: kind, k (None for `complete`) and whether it is cyclic."""
    parts = scene_graph.strip().lower().split("-")
    kind, rest = parts[0], parts[1:]
    cyclic = True
    if kind in ("swin", "logwin") and rest and rest[-1] == "noncyclic":
        cyclic = False
        rest = rest[:-1]
    usage = f"unknown scene graph {scene_graph!r} (known: {', '.join(SCENE_GRAPHS)}; swin/logwin accept -noncyclic)"
    if kind == "complete":
        if rest:
            raise InputError(usage)
        return kind, None, True
    if kind not in ("swin", "logwin", "oneref") or len(rest) > 1:
        raise InputError(usage)
    if not rest:
        return kind, 0 if kind == "oneref" else 3, cyclic
    try:
        k = int(rest[0])
    except ValueError:
        raise InputError(usage) from None
    if kind != "oneref" and k < 1:
        raise InputError(f"scene graph {scene_graph!r}: the window size must be at least 1")
    return kind, k, cyclic


def make_pairs(n: int, scene_graph: str = "complete", symmetrize: bool = True) -> list[tuple[int, int]]:
    """The image pairs `(i, j)` (i is the network's reference view) of a scene graph over images `0..n-1`.

    Order: `complete` lists `(i, j)` for i = 1..n-1 and j < i, i.e. (1, 0), (2, 0), (2, 1), ... as upstream;
    `swin` and `logwin` list each unordered pair once as `(i, j)` with i < j, sorted; `oneref-k` lists (k, j) for
    j != k in increasing j. With `symmetrize`, the reversed pairs follow in the same order (upstream's layout), so
    pair p and pair p + len/2 are the two directions of the same images.
    """
    if n < 2:
        raise InputError(f"a scene graph needs at least 2 images, got {n}")
    kind, k, cyclic = parse_scene_graph(scene_graph)
    pairs: list[tuple[int, int]]
    if kind == "complete":
        pairs = [(i, j) for i in range(n) for j in range(i)]
    elif kind == "oneref":
        if not 0 <= k < n:
            raise InputError(f"scene graph {scene_graph!r}: reference image {k} is outside 0..{n - 1}")
        pairs = [(k, j) for j in range(n) if j != k]
    else:
        offsets = range(1, k + 1) if kind == "swin" else [2**e for e in range(k)]
        if kind == "logwin":
            offsets = [*offsets, *(-o for o in offsets)]
        found: set[tuple[int, int]] = set()
        for i in range(n):
            for offset in offsets:
                j = i + offset
                if cyclic:
                    j %= n
                if 0 <= j < n and j != i:
                    found.add((min(i, j), max(i, j)))
        pairs = sorted(found)
    if symmetrize:
        pairs = pairs + [(j, i) for i, j in pairs]
    return pairs
