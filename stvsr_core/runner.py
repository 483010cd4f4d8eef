"""How each step of the Dual-Stream composition runs, kept apart from the composition itself.

`DualStream` names its steps ("M_S", "M_T estimate", "M_T", "M_S (T->S)", "cue", "F", "R") and
hands each to a runner: directly here (training, evaluation), tiled and cast by the engine,
timed by the bench, counted by the FLOP counter. So there is one composition, not one per use.
"""
from __future__ import annotations

import time
from collections import defaultdict

from torch.utils.flop_counter import FlopCounterMode

TILEABLE = ("M_S", "M_S (T->S)", "F", "R")  # convolutional: local, so tiles with overlap are exact enough


class Runner:
    """Runs a step as it is. `whole` steps see whole frames (M_T: motion crosses tiles); `tiled`
    steps take low-res inputs `lr` and high-res inputs `hr` (tile geometry from lr[0]) and
    return a list of high-res tensors."""

    def whole(self, step: str, fn, *args):
        return fn(*args)

    def tiled(self, step: str, fn, lr: list, hr: list) -> list:
        return fn(lr, hr)


DIRECT = Runner()


class TimingRunner(Runner):
    """Wall time of every call of each step, around another runner (the engine's)."""

    def __init__(self, inner: Runner):
        self.inner = inner
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def _timed(self, step, call):
        t = time.perf_counter()
        out = call()
        self.seconds[step].append(time.perf_counter() - t)
        return out

    def whole(self, step, fn, *args):
        return self._timed(step, lambda: self.inner.whole(step, fn, *args))

    def tiled(self, step, fn, lr, hr):
        return self._timed(step, lambda: self.inner.tiled(step, fn, lr, hr))


class CountingRunner(Runner):
    """FLOPs of each step (PyTorch's FlopCounterMode: convolutions and matrix products; OpenCV's
    DIS is invisible to it and counts 0)."""

    def __init__(self):
        self.flops: dict[str, int] = defaultdict(int)

    def _counted(self, step, call):
        with FlopCounterMode(display=False) as counter:
            out = call()
        self.flops[step] += int(counter.get_total_flops())
        return out

    def whole(self, step, fn, *args):
        return self._counted(step, lambda: fn(*args))

    def tiled(self, step, fn, lr, hr):
        return self._counted(step, lambda: fn(lr, hr))


class Recorder(Runner):
    """The order of the steps a composition ran, for tests that several users share one."""

    def __init__(self):
        self.steps: list[str] = []

    def whole(self, step, fn, *args):
        self.steps.append(step)
        return fn(*args)

    def tiled(self, step, fn, lr, hr):
        self.steps.append(step)
        return fn(lr, hr)
