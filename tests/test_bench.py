"""drdpgan.bench: the measures speed work is judged by."""

from __future__ import annotations

import torch


def test_training_step_flops_scale_with_the_batch_and_the_peak_is_a_speed():
    """bench.training_step_flops counts a DR-DPGAN step's matmuls and convolutions: twice the batch, about twice the
    FLOPs (the per-step parts that do not scale, such as the password plane, are small); matmul_peak is FLOP/s."""
    from drdpgan.bench import matmul_peak, training_step_flops
    from toys import tiny_model

    m = tiny_model()
    f2, f4 = training_step_flops(m, 2), training_step_flops(m, 4)
    assert f2 > 1e6 and 1.8 < f4 / f2 < 2.05, (f2, f4)
    assert 1e8 < matmul_peak(torch.float32, n=256, repeats=2) < 1e14
