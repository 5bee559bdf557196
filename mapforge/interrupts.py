"""Ctrl-C as a `KeyboardInterrupt`, also when it lands inside a numba kernel.

A SIGINT that arrives while a compiled kernel runs is raised in the first Python code the kernel calls back
into (numba unpickles constants through Python), and numba then reports the kernel as having "returned a result
with an exception set": a `SystemError` whose cause chain holds the `KeyboardInterrupt`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def caused_by_interrupt(exc: BaseException) -> bool:
    """Whether `exc` is, or was caused by (directly or through its context), a `KeyboardInterrupt`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@contextlib.contextmanager
def keyboard_interrupts() -> Iterator[None]:
    """Within the block, an error caused by Ctrl-C (numba's `SystemError` among them) is raised as the
    `KeyboardInterrupt` it was."""
    try:
        yield
    except Exception as exc:
        if caused_by_interrupt(exc):
            raise KeyboardInterrupt from None
        raise
