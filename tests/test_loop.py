"""The one training loop (drdpgan.loop): when hooks run, what it refuses, how it stops, what it logs."""

import math

import pytest

from drdpgan.loop import Every, StepLoop


def _run(total, hooks, start=0, stop=None, values=lambda s: {"loss": float(s)}):
    calls = []
    loop = StepLoop("t", total, start, progress=False)
    reason = loop.run(lambda s: (calls.append(s), values(s))[1], hooks, stop=stop)
    return loop, calls, reason


def test_hooks_run_on_their_interval_and_as_told_at_the_last_step():
    seen = {"plain": [], "also": [], "never": [], "off": []}
    hooks = [Every(3, seen["plain"].append), Every(3, seen["also"].append, final=True),
             Every(3, seen["never"].append, final=False), Every(0, seen["off"].append, final=True)]
    loop, calls, reason = _run(7, hooks)
    assert calls == list(range(7)) and loop.step == 7 and reason is None
    assert seen == {"plain": [3, 6], "also": [3, 6, 7], "never": [3, 6], "off": []}
    for v in seen.values():
        v.clear()
    _run(6, hooks)  # the last step on the interval: "never" skips it, "plain" and "also" run once
    assert seen == {"plain": [3, 6], "also": [3, 6], "never": [3], "off": []}


def test_a_resumed_loop_starts_at_its_step_and_keeps_the_interval_sums():
    loop = StepLoop("t", 4, 2, progress=False, sums={"loss": [10.0, 2]})
    rows = []
    loop.run(lambda s: {"loss": float(s)}, [Every(4, lambda s: rows.append(loop.take_interval()[0]))])
    assert loop.steps_run == 2 and rows == [{"loss": (10.0 + 2 + 3) / 4}]
    assert loop.sums == {} and loop.last == {"loss": 3.0}


def test_a_non_finite_value_is_refused_at_its_step():
    with pytest.raises(FloatingPointError, match=r"t: non-finite \['loss'\] at step 2"):
        _run(5, [], values=lambda s: {"loss": math.nan if s == 2 else 1.0, "acc": 0.5})


def test_stop_ends_after_the_hooks_of_its_step_and_gives_the_reason():
    seen = []
    loop, calls, reason = _run(10, [Every(1, seen.append)], stop=lambda s: "budget" if s == 4 else None)
    assert reason == "budget" == loop.stopped and loop.step == 4 and seen == [1, 2, 3, 4]
    loop, calls, reason = _run(4, [], stop=lambda s: "not asked at the last step" if s == 4 else None)
    assert reason is None and loop.step == 4


def test_step_schedule_sets_each_groups_base_rate_times_the_factor_from_any_step():
    import torch

    from drdpgan.loop import step_schedule

    def fresh():
        w = torch.nn.Parameter(torch.zeros(1))
        return torch.optim.Adam([{"params": [w], "lr": 1.0}, {"params": [torch.nn.Parameter(torch.zeros(1))],
                                                              "lr": 0.1}])

    factor = lambda s: 1.0 / (s + 1)  # noqa: E731
    opt = fresh()
    sched, seen = step_schedule(opt, factor, 0), []
    for _ in range(4):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert seen == [[1.0 / (s + 1), 0.1 / (s + 1)] for s in range(4)]
    resumed = fresh()
    for g in resumed.param_groups:
        g["lr"] = 123.0  # a checkpoint's last scheduled rate
    step_schedule(resumed, factor, 2, base_lrs=[1.0, 0.1])
    assert [g["lr"] for g in resumed.param_groups] == seen[2]
