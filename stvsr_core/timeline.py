"""Output timestamps: each input frame keeps its time, each in-between frame sits at the midpoint
of its pair, so variable-frame-rate video keeps its length and stays in sync with its audio."""
from __future__ import annotations

from fractions import Fraction


class Timeline:
    """Input times in, output times out (seconds), holding only the few frames still in flight."""

    def __init__(self, fps: Fraction):
        self.step = 1 / Fraction(fps)  # for frames without a usable timestamp (image folders)
        self.repaired = 0              # timestamps missing or not after the previous, in a timed stream
        self.n = 0
        self._timed = False
        self._times: dict[int, Fraction] = {}

    def add(self, t: Fraction | None) -> None:
        """The next input frame's time, or None (then one frame period after the previous)."""
        self._timed |= t is not None
        prev = self._times.get(self.n - 1)
        if prev is not None and (t is None or t <= prev):
            self.repaired += self._timed
            t = prev + self.step
        self._times[self.n] = Fraction(0) if t is None else t
        self.n += 1

    def output(self, j: int) -> Fraction:
        """Time of output frame j: 2k is input k, 2k+1 lies between inputs k and k+1 (or half an
        interval after the last input, for the repeated last frame of --exact-double)."""
        k, between = divmod(j, 2)
        for old in [i for i in self._times if i < k - 1]:
            del self._times[old]
        t = self._times[k]
        if not between:
            return t
        nxt = self._times.get(k + 1)
        if nxt is None:
            before = self._times.get(k - 1)
            nxt = t + (t - before if before is not None else self.step)
        return (t + nxt) / 2
