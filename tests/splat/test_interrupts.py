"""Ctrl-C inside a numba kernel ends `splat train` with one line and status 130, leaving a resumable checkpoint."""

from __future__ import annotations

import pytest

from mapforge.interrupts import caused_by_interrupt, keyboard_interrupts


def numba_interrupt() -> SystemError:
    """What numba raises when Ctrl-C lands in Python code a running kernel calls back into."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise SystemError("CPUDispatcher(<function composite_forward>) returned a result with an exception set") \
                from interrupt
    except SystemError as error:
        return error


def test_a_system_error_caused_by_ctrl_c_is_a_keyboard_interrupt():
    assert caused_by_interrupt(numba_interrupt())
    assert not caused_by_interrupt(SystemError("a real bug"))
    with pytest.raises(KeyboardInterrupt):
        with keyboard_interrupts():
            raise numba_interrupt()
    with pytest.raises(SystemError):
        with keyboard_interrupts():
            raise SystemError("a real bug")
