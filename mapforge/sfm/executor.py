"""One interface for running per-image and per-pair work, so a distributed backend can replace local workers.

An `Executor` maps a picklable top-level function over picklable items and returns the results in input order.
`LocalExecutor` runs the items on threads of this process by default: SfM's per-item work spends its time in
OpenCV (image decoding, SIFT), torch (descriptor matching) and PoseLib (RANSAC), which all release the GIL, so
threads run in parallel without the seconds a process pool needs to start (importing torch, OpenCV and PoseLib in
every worker) and without pickling images and descriptors. `processes=True` gives a process pool instead, for
functions that hold the GIL. Either way each worker limits OpenCV and torch to one thread: with W workers on W
cores, per-worker thread pools would otherwise oversubscribe the CPU many times over.
"""

from __future__ import annotations

import multiprocessing
import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Protocol, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")

# Imported once by the fork server, so that workers forked from it start without importing torch, OpenCV and
# PoseLib again (seconds per worker on a busy laptop).
_PRELOAD = ["mapforge.sfm.matching", "mapforge.sfm.verification"]


class Executor(Protocol):
    """Runs `fn` on every item; `fn` and the items must be picklable (top-level functions, plain data)."""

    def map(self, fn: Callable[[T], R], items: Iterable[T], desc: str | None = None) -> list[R]:
        """`[fn(item) for item in items]`, in input order, with a progress bar labelled `desc`."""
        ...


def _limit_threads() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


@contextmanager
def _single_threaded_libraries() -> Iterator[None]:
    """OpenCV and torch on one thread each inside the block (the worker threads are the parallelism), restored after."""
    import cv2
    import torch

    cv_threads, torch_threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(cv_threads)
        torch.set_num_threads(torch_threads)


def default_workers() -> int:
    """The number of CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class LocalExecutor:
    """Workers on this machine: `workers=None` uses every core; `workers <= 1` runs inline (no threads, no processes).

    Threads by default (see the module docstring). With `processes=True` the pool starts at the first `map` with
    more than one item and is reused until `close()` (or the end of a `with` block, or garbage collection), so
    create one executor per run and pass it to every stage. Workers are forked from a clean "forkserver" process
    (on platforms without it, spawned): forking a parent whose torch/OpenMP thread pools already run can deadlock
    the child. As with any process pool, a script that uses it must guard its entry point with
    `if __name__ == "__main__":`.
    """

    def __init__(self, workers: int | None = None, progress: bool = True, processes: bool = False) -> None:
        self.workers = default_workers() if workers is None else max(1, int(workers))
        self.progress = progress
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            if "forkserver" in multiprocessing.get_all_start_methods():
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(_PRELOAD)
            else:
                context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_limit_threads)
            weakref.finalize(self, self._pool.shutdown, cancel_futures=True)
        return self._pool

    def map(self, fn: Callable[[T], R], items: Iterable[T], desc: str | None = None) -> list[R]:
        items = list(items)
        with tqdm(total=len(items), desc=desc, disable=not self.progress or not items, leave=False) as bar:
            if self.workers <= 1 or len(items) <= 1:
                results = []
                for item in items:
                    results.append(fn(item))
                    bar.update()
                return results
            if self.processes:
                return _collect([self._get_pool().submit(fn, item) for item in items], bar)
            with _single_threaded_libraries(), ThreadPoolExecutor(self.workers) as pool:
                return _collect([pool.submit(fn, item) for item in items], bar)

    def close(self) -> None:
        """Stop the worker processes (a later `map` starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _collect(futures: list[Future], bar: tqdm) -> list:
    """The futures' results in order; on the first error the rest are cancelled and the error raised."""
    results = []
    try:
        for future in futures:
            results.append(future.result())
            bar.update()
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    return results
