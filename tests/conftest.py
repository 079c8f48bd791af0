"""Shared test configuration."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Unit tests run their tiny networks on one torch thread: nothing to gain from two, and on a
    busy 2-core machine two spinning threads are several times slower (measured here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
