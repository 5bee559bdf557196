"""LocalExecutor: results in input order on threads, processes and inline; errors propagate; library thread
counts are restored after a threaded map."""

from __future__ import annotations

import cv2
import pytest
import torch

from mapforge.sfm.executor import LocalExecutor


def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def _torch_threads(_: int) -> int:
    return torch.get_num_threads()


@pytest.mark.parametrize("workers, processes", [(1, False), (2, False), (2, True)])
def test_map_keeps_input_order(workers, processes):
    with LocalExecutor(workers, progress=False, processes=processes) as executor:
        assert executor.map(_square, range(7)) == [x * x for x in range(7)]
        assert executor.map(_square, []) == []


def test_errors_propagate_and_thread_limits_are_restored():
    executor = LocalExecutor(2, progress=False)
    torch_threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    assert executor.map(_torch_threads, range(4)) == [1] * 4  # one torch thread per worker thread
    with pytest.raises(ValueError, match="three"):
        executor.map(_fail_on_three, range(6))
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (torch_threads, cv_threads)
