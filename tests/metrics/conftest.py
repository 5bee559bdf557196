from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # These tests run many small convolutions (gradcheck, LPIPS on tiny images); on a busy machine torch's thread
    # hand-offs cost more than the work, so one thread is several times faster. Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
