from __future__ import annotations

import torch

from mapforge.denormals import denormals_flushed, denormals_kept


def test_denormals_kept_restores_the_mode_it_found() -> None:
    for flush in (True, False):
        torch.set_flush_denormal(flush)
        with denormals_kept():
            assert not denormals_flushed()
        assert denormals_flushed() == flush
    torch.set_flush_denormal(True)  # as tests/conftest.py sets it
