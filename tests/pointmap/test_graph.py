"""Scene graphs: pair lists of complete / swin / logwin / oneref graphs and their parsing."""

from __future__ import annotations

import pytest

from mapforge.errors import InputError
from mapforge.pointmap.graph import make_pairs, parse_scene_graph


def test_complete_order_and_symmetrisation() -> None:
    pairs = make_pairs(3)
    assert pairs == [(1, 0), (2, 0), (2, 1), (0, 1), (0, 2), (1, 2)]
    assert make_pairs(3, symmetrize=False) == [(1, 0), (2, 0), (2, 1)]
    assert len(make_pairs(7)) == 42


def test_swin_cyclic_and_noncyclic() -> None:
    assert make_pairs(5, "swin-1", symmetrize=False) == [(0, 1), (0, 4), (1, 2), (2, 3), (3, 4)]
    assert make_pairs(5, "swin-1-noncyclic", symmetrize=False) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert make_pairs(5, "swin-2-noncyclic", symmetrize=False) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4),
                                                                    (3, 4)]
    # A window wider than the sequence wraps onto every other image, never onto the image itself.
    assert make_pairs(3, "swin-5", symmetrize=False) == [(0, 1), (0, 2), (1, 2)]
    assert make_pairs(6, "swin") == make_pairs(6, "swin-3")


def test_logwin() -> None:
    pairs = make_pairs(10, "logwin-3-noncyclic", symmetrize=False)
    assert all(abs(i - j) in (1, 2, 4) for i, j in pairs)
    assert len(pairs) == 9 + 8 + 6
    cyclic = make_pairs(10, "logwin-3", symmetrize=False)
    assert (0, 9) in cyclic and (0, 6) in cyclic and (0, 5) not in cyclic
    assert len(cyclic) == 30


def test_oneref() -> None:
    assert make_pairs(4, "oneref-2", symmetrize=False) == [(2, 0), (2, 1), (2, 3)]
    assert make_pairs(3, "oneref") == [(0, 1), (0, 2), (1, 0), (2, 0)]


def test_symmetrised_halves_are_reverses() -> None:
    for graph in ("complete", "swin-2", "logwin-2", "oneref-1"):
        pairs = make_pairs(6, graph)
        half = len(pairs) // 2
        assert pairs[half:] == [(j, i) for i, j in pairs[:half]]
        assert len(set(pairs)) == len(pairs)


def test_parse() -> None:
    assert parse_scene_graph("logwin-4-noncyclic") == ("logwin", 4, False)
    assert parse_scene_graph("swin-3") == ("swin", 3, True)
    assert parse_scene_graph("complete") == ("complete", None, True)
    assert parse_scene_graph("oneref-0") == ("oneref", 0, True)


@pytest.mark.parametrize("name", ["star", "swin-x", "swin-0", "complete-2", "oneref-1-noncyclic", "swin-2-3"])
def test_unknown_graphs_raise(name: str) -> None:
    with pytest.raises(InputError):
        make_pairs(5, name)


def test_bad_counts_raise() -> None:
    with pytest.raises(InputError):
        make_pairs(1)
    with pytest.raises(InputError):
        make_pairs(3, "oneref-3")
