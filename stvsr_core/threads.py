"""CPU thread counts that hold up on a busy machine.

torch (OpenMP) and OpenCV (DIS) split every operation across all cores and wait at a barrier
for the slowest thread. When other processes hold some of the cores, a descheduled thread
stalls each of the hundreds of operations per frame by a scheduler time slice: on 2 cores
beside one busy process that cost 4-10x, where one thread per free core would have lost about
half. No static setting is right both quiet and loaded, and load changes during a long run,
so `ThreadTuner` measures: it times each unit of work (one input frame) at the thread counts
worth trying, keeps the fastest, and re-tries the others now and then.

Better still is to need no barrier: `cpu_plan` runs two frame pairs at once, each op on one
thread per core of its own, so a core taken by another process slows one pair, not every op.
On a 2-core Xeon that was 1.2-1.9x the tuned single pair quiet, and 1.3-2.4x beside a busy
process (README, "On a busy machine"); the tuner remains for `workers=1`.
"""
from __future__ import annotations

import contextlib
import os
import time

import cv2
import torch


def cpu_slots() -> int:
    """CPUs this process may run on (cgroup/affinity aware where the OS says so)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_plan(workers: int, threads: int, slots: int | None = None) -> tuple[int, int]:
    """(frame pairs at once, threads per op) on a CPU, from the options (0 = automatic).

    Automatic: two pairs, the cores split between them. threads 0 with one pair means tuned.
    """
    slots = slots or cpu_slots()
    workers = workers or min(2, slots)
    if threads == 0 and workers > 1:
        threads = max(1, slots // workers)
    return workers, threads


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    cv2.setNumThreads(n)


class ThreadTuner:
    """Chooses torch's and OpenCV's thread count per unit of work from measured times."""

    def __init__(self, max_threads: int | None = None, retry_every: int = 24, warmup: int = 1):
        top = max_threads or torch.get_num_threads()
        self.candidates = sorted({top, max(1, top // 2), 1}, reverse=True)
        self.seconds: dict[int, float] = {}   # smoothed seconds per unit, by thread count
        self.retry_every, self.warmup = retry_every, warmup
        self.units = 0
        self.current = top

    @property
    def active(self) -> bool:
        return len(self.candidates) > 1

    def _next(self) -> int:
        untried = [n for n in self.candidates if n not in self.seconds]
        if untried:
            return untried[0]
        best = min(self.seconds, key=self.seconds.get)
        if self.units % self.retry_every == 0:  # load changes: look at the others again
            others = [n for n in self.candidates if n != best]
            return others[(self.units // self.retry_every) % len(others)]
        return best

    @contextlib.contextmanager
    def unit(self):
        """Run one unit of work at the thread count chosen for it, and learn from its time; a
        unit that did less work than the others (a scene cut) sets `unit["typical"] = False`."""
        unit = {"typical": True}
        if not self.active:
            yield unit
            return
        n = self.candidates[0] if self.units < self.warmup else self._next()
        if n != self.current:
            set_threads(n)
            self.current = n
        t = time.perf_counter()
        yield unit
        dt = time.perf_counter() - t
        if not unit["typical"]:
            return
        self.units += 1
        if self.units > self.warmup:
            old = self.seconds.get(n)
            # the count in use is smoothed; a re-try replaces its stale figure (the load changed)
            in_use = n == self.choice
            self.seconds[n] = 0.7 * old + 0.3 * dt if in_use and old is not None else dt

    @property
    def choice(self) -> int | None:
        return min(self.seconds, key=self.seconds.get) if self.seconds else None


@contextlib.contextmanager
def restored_threads():
    """Leave the host's thread settings as they were (ComfyUI and VapourSynth share the process)."""
    torch_n, cv_n = torch.get_num_threads(), cv2.getNumThreads()
    try:
        yield
    finally:
        torch.set_num_threads(torch_n)
        cv2.setNumThreads(cv_n)
