"""Ctrl-C inside a numba kernel ends `splat train` with one line and status 130, leaving a resumable checkpoint."""

from __future__ import annotations

import pytest

from mapforge import cli
from mapforge.interrupts import caused_by_interrupt, keyboard_interrupts
from mapforge.splat.rasterize import cpu_kernels
from mapforge.training.checkpoint import load_checkpoint
from tests.conftest import small_scene


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


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return small_scene(tmp_path_factory.mktemp("data") / "scene")


def test_ctrl_c_in_a_kernel_stops_splat_train_with_status_130(scene, tmp_path, monkeypatch, capsys):
    composite = cpu_kernels.composite_forward
    calls = []

    def interrupted_on_the_fifth_render(*args):
        calls.append(1)
        if len(calls) == 5:
            raise numba_interrupt()
        return composite(*args)

    monkeypatch.setattr(cpu_kernels, "composite_forward", interrupted_on_the_fifth_render)
    out = tmp_path / "out"
    args = ["splat", "train", str(scene), "-o", str(out), "--iterations", "6", "--sh-degree", "0"]
    assert cli.main(args) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted" in err and "SystemError" not in err
    assert load_checkpoint(out / "checkpoint.pt", "splat")["step"] == 4  # the four steps before the interrupt
    monkeypatch.setattr(cpu_kernels, "composite_forward", composite)
    assert cli.main([*args, "--resume"]) == 0
    assert "for 6 iterations" in capsys.readouterr().out
