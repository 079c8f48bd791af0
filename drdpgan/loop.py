"""The one training loop every trainer runs: priors, StyleGAN2, the binary code and hiding stand-ins, DR-DPGAN.

A trainer writes its update as ``step_fn(step) -> {name: float}`` (``step`` counts the updates done before this
one; the function draws its own batch and steps its own optimisers) and hands it to :class:`StepLoop` with the
things to do every so many steps (:class:`Every`: log a CSV row, evaluate, save samples, save a checkpoint).
The loop owns what used to be copied into each trainer:

- the step counter, from ``start`` (a resumed run) to ``total``;
- refusing a non-finite value at the step it appears;
- the means of every scalar over the current log interval and the seconds per step over it
  (:meth:`StepLoop.take_interval`); the running sums are plain data (``StepLoop.sums``) that a checkpoint
  stores, so a resumed run logs the rows an uninterrupted one would;
- the progress bar;
- the hooks in the order given, after each step;
- stopping early (``stop(step) -> reason or None``, checked after the hooks), with the reason returned.

:func:`step_schedule` gives a trainer its learning-rate schedule as a ``torch.optim.lr_scheduler.LambdaLR`` of a
closed-form factor, rebuilt at the step a resumed run starts from.

What a checkpoint holds and where the batches come from stay with each trainer (:mod:`drdpgan.runlog` has the
run folder: rotating checkpoints, CSV logs, the resumable sampler). The loop draws no random numbers, so a
trainer's stream of draws, and with it bit-identical resumes, is unchanged by it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from tqdm.auto import tqdm

__all__ = ["Every", "StepLoop", "step_schedule"]


def step_schedule(opt, factor: Callable[[int], float], step: int, base_lrs: Iterable[float] | None = None):
    """A ``torch.optim.lr_scheduler.LambdaLR`` giving each group of ``opt`` its base rate times ``factor(s)`` at step
    ``s``, positioned at ``step`` (the rate of the next update); call its ``step()`` after each update.

    ``base_lrs``: the configured rate of each group (default: the groups' current ``lr``, right for a fresh
    optimiser; a resumed one holds the checkpoint's last scheduled rate). The factor follows from the step alone, so
    a resumed run builds its schedule afresh at its step and no scheduler state needs saving."""
    from torch.optim.lr_scheduler import LambdaLR

    bases = [g["lr"] for g in opt.param_groups] if base_lrs is None else list(base_lrs)
    for g, base in zip(opt.param_groups, bases, strict=True):
        g["initial_lr"] = base
    return LambdaLR(opt, factor, last_epoch=step - 1)


@dataclass
class Every:
    """Call ``fn(step)`` after each step whose count ``step`` is a multiple of ``n`` (never when ``n <= 0``).

    ``final``: ``None`` as the interval says; ``True`` also after the last step (``step == total``);
    ``False`` never after the last step (a trainer that writes its final state itself)."""

    n: int
    fn: Callable[[int], Any]
    final: bool | None = None

    def due(self, step: int, total: int) -> bool:
        if self.n <= 0:
            return False
        if step == total and self.final is not None:
            return self.final
        return step % self.n == 0


class StepLoop:
    """Run ``step_fn`` from step ``start`` to ``total`` (see the module docstring).

    ``postfix(last) -> {name: str}``: the progress bar's postfix from the last step's scalars.
    ``sums``: the log interval's running ``{name: [sum, count]}`` (from a checkpoint; empty for a new run).
    ``seconds_before``: training time already spent (a resumed run), counted in :attr:`seconds`.
    """

    def __init__(self, desc: str, total: int, start: int = 0, *, progress: bool = True,
                 postfix: Callable[[Mapping[str, float]], Mapping[str, str]] | None = None,
                 sums: Mapping[str, list] | None = None, seconds_before: float = 0.0):
        self.desc, self.total, self.start, self.step = desc, int(total), int(start), int(start)
        self.progress, self.postfix = progress, postfix
        self.sums: dict[str, list] = {k: list(v) for k, v in (sums or {}).items()}
        self.last: dict[str, float] = {}
        self.stopped: str | None = None
        self._seconds_before = float(seconds_before)
        self._t0 = self._t_row = time.perf_counter()
        self._steps_row = 0

    @property
    def seconds(self) -> float:
        """Training seconds so far, a resumed run's earlier ones included."""
        return self._seconds_before + time.perf_counter() - self._t0

    @property
    def steps_run(self) -> int:
        """Steps run by this call (not counting those before a resume)."""
        return self.step - self.start

    def take_interval(self) -> tuple[dict[str, float], float]:
        """``(means, seconds per step)`` over the steps since the previous call (or the start); starts a new
        interval."""
        now = time.perf_counter()
        means = {k: s / max(n, 1) for k, (s, n) in self.sums.items()}
        sec = (now - self._t_row) / max(self._steps_row, 1)
        self.sums, self._t_row, self._steps_row = {}, now, 0
        return means, sec

    def run(self, step_fn: Callable[[int], Mapping[str, float]], hooks: Iterable[Every] = (),
            stop: Callable[[int], str | None] | None = None) -> str | None:
        """Run the steps; return ``None`` when ``total`` is reached, else the reason ``stop`` gave (also kept in
        :attr:`stopped`)."""
        hooks = list(hooks)
        self._t0 = self._t_row = time.perf_counter()
        bar = tqdm(total=self.total, initial=min(self.step, self.total), desc=self.desc,
                   disable=not self.progress, leave=True, dynamic_ncols=True)
        try:
            while self.step < self.total:
                values = {k: float(v) for k, v in step_fn(self.step).items()}
                bad = [k for k, v in values.items() if not math.isfinite(v)]
                if bad:
                    raise FloatingPointError(f"{self.desc}: non-finite {bad} at step {self.step}: {values}")
                self.last = values
                self.step += 1
                self._steps_row += 1
                for k, v in values.items():
                    s = self.sums.setdefault(k, [0.0, 0])
                    s[0] += v
                    s[1] += 1
                bar.update(1)
                if self.postfix is not None:
                    bar.set_postfix(self.postfix(values), refresh=False)
                for hook in hooks:
                    if hook.due(self.step, self.total):
                        hook.fn(self.step)
                if stop is not None and self.step < self.total:
                    reason = stop(self.step)
                    if reason:
                        self.stopped = reason
                        break
        finally:
            bar.close()
        return self.stopped
