"""The output timeline, written once: which source frame k and time t in [0, 1) each output frame is.

Every host and the CLI take their frame counts, durations and timestamps from here. Output
frame j sits at position p_j = j / factor on the source's frame axis (factor = output rate /
input rate): k = floor(p_j) and t = p_j - k, where t = 0 is source frame k itself and t > 0 lies
between frames k and k+1. A factor of 1 is spatial-only; an fps target is a rational factor
(24000/1001 -> 60000/1001 is 5/2), placed on the time axis so variable-frame-rate input keeps
its length and stays in sync with its audio.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

DEFAULT_FACTOR = Fraction(2)


def as_fraction(value, what: str) -> Fraction:
    """A positive rate or factor from an int, a Fraction, 'NUM/DEN' text or a decimal (float or
    text). Decimals within 0.005 of an NTSC rate n*1000/1001 are that rate: 23.976 (or 23.98), 29.97
    and 59.94 as typed or shown by players mean 24000/1001, 30000/1001 and 60000/1001."""
    try:
        f = Fraction(value)
    except (ValueError, TypeError, ZeroDivisionError):
        raise ValueError(f"{what} must be a positive number or NUM/DEN, got {value!r}") from None
    if f <= 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    decimal = isinstance(value, float) or (isinstance(value, str) and "." in value)
    if decimal and f.denominator != 1:
        ntsc = Fraction(round(f * Fraction(1001, 1000)) * 1000, 1001)
        f = ntsc if ntsc and abs(f - ntsc) < Fraction(1, 200) else f.limit_denominator(1001)
    return f


@dataclass(frozen=True)
class Retime:
    """What the user asked for: a frame-rate factor (2, 3, 5/2) or a target rate, which wins.

    exact_double (generalised): the last source frame is held for its own duration, so the output
    lasts as long as the input: ceil(N * factor) frames instead of floor((N - 1) * factor) + 1.
    """

    factor: Fraction = DEFAULT_FACTOR
    fps: Fraction | None = None
    exact_double: bool = False

    def __post_init__(self):
        object.__setattr__(self, "factor", as_fraction(self.factor, "factor"))
        if self.fps is not None:
            object.__setattr__(self, "fps", as_fraction(self.fps, "fps"))

    def factor_for(self, fps_in: Fraction | None) -> Fraction:
        """Output frames per source frame, for a source at fps_in."""
        if self.fps is None:
            return self.factor
        if not fps_in:
            raise ValueError("a target fps needs the input's frame rate: give the input's rate, or a factor instead")
        return self.fps / Fraction(fps_in)

    @property
    def temporal(self) -> bool:
        """False for spatial-only (factor 1): no in-between frames, M_T never runs."""
        return self.fps is not None or self.factor != 1


@dataclass(frozen=True)
class Slot:
    """Output frame j: source frame k (t = 0), or the frame at t in (0, 1) between k and k+1."""

    j: int
    k: int
    t: Fraction
    time: Fraction  # seconds, on the source's clock (0 at the first frame for random access)

    @property
    def between(self) -> bool:
        return self.t != 0


class Timeline:
    """Output slots of one clip: closed form at a constant rate (`count`, `slot`: random access for
    VapourSynth and ComfyUI), or fed timestamps one source frame at a time (`add`, `ready`:
    streaming for the CLI, holding only the frames still in flight)."""

    def __init__(self, retime: Retime | None = None, fps_in: Fraction | float | None = None):
        self.retime = retime or Retime()
        self.fps_in = as_fraction(fps_in, "input fps") if fps_in else None
        self.factor = self.retime.factor_for(self.fps_in)
        self.fps_out = self.fps_in * self.factor if self.fps_in else None
        self.by_time = self.retime.fps is not None  # positions on the time axis (VFR input)
        self.step = 1 / self.fps_in if self.fps_in else Fraction(1)  # a frame period, for untimed frames
        self.repaired = 0   # timestamps missing or not after the previous, in a timed stream
        self.n = 0          # source frames added so far
        self._timed = False
        self._times: dict[int, Fraction] = {}
        self._origin: Fraction | None = None
        self._next_j = 0
        self._closed = False
        self.issued: deque[Slot] = deque()  # slots given by `ready` and not yet taken by the writer

    # -- closed form (constant frame rate, known length) ----------------------------------------
    def count(self, n_src: int) -> int:
        """Output frames for n_src source frames."""
        if n_src <= 0:
            return 0
        if self.retime.exact_double:
            return math.ceil(n_src * self.factor)
        return math.floor((n_src - 1) * self.factor) + 1

    def slot(self, j: int, n_src: int) -> Slot:
        """Output frame j of a constant-rate clip of n_src frames (random access)."""
        if not 0 <= j < self.count(n_src):
            raise IndexError(f"output frame {j} out of range: {n_src} source frames give {self.count(n_src)}")
        p = Fraction(j) / self.factor
        return self._at(j, p, n_src, p * self.step)

    @staticmethod
    def _at(j: int, p: Fraction, n_src: int, time: Fraction) -> Slot:
        k = math.floor(p)
        if k >= n_src - 1:  # the last frame, or the tail exact_double holds it for
            return Slot(j, n_src - 1, Fraction(0), time)
        return Slot(j, k, p - k, time)

    def duration(self, j: int, n_src: int) -> Fraction:
        """Seconds output frame j lasts (constant rate: one output frame period)."""
        return self.step / self.factor

    def slots_of_pair(self, k: int, n_src: int) -> list[Slot]:
        """The in-between slots of pair (k, k+1), for engines that batch a pair's times."""
        lo, hi = math.ceil(k * self.factor), math.ceil((k + 1) * self.factor)
        return [s for s in (self.slot(j, n_src) for j in range(lo, min(hi, self.count(n_src))))
                if s.between and s.k == k]

    def time_base(self, src_tb: Fraction | None) -> Fraction:
        """A time base that holds every output timestamp exactly. At a factor n/d an output frame lies
        a multiple of 1/n of its pair's interval after a source timestamp (units of src_tb), so src_tb/n
        holds them; with an fps target frame j is at the first frame's time + j/fps_out. Frames without
        timestamps (image folders) are at j/fps_out. A unit too fine for a container's 32-bit
        rationals falls back to microseconds (far within half a frame)."""
        period = 1 / self.fps_out
        if src_tb is None:
            unit = period
        elif self.by_time:
            unit = Fraction(math.gcd(src_tb.numerator, period.numerator), math.lcm(src_tb.denominator, period.denominator))
        else:
            unit = src_tb / self.factor.numerator
        return unit if unit.denominator < 2 ** 31 and unit.numerator < 2 ** 31 else Fraction(1, 1_000_000)

    # -- streaming (timestamps, possibly variable frame rate) -----------------------------------
    def add(self, time: Fraction | None = None) -> int:
        """The next source frame's timestamp (seconds), or None (then one frame period after the
        previous); returns its index."""
        self._timed |= time is not None
        prev = self._times.get(self.n - 1)
        if prev is not None and (time is None or time <= prev):
            self.repaired += self._timed
            time = prev + self.step
        time = Fraction(0) if time is None else Fraction(time)
        if self._origin is None:
            self._origin = time
        self._times[self.n] = time
        self.n += 1
        return self.n - 1

    def close(self) -> None:
        """No more source frames: `ready` then also gives the last frame and exact_double's tail."""
        self._closed = True

    def ready(self) -> list[Slot]:
        """Slots not given yet whose source frames are all known (their time in the source's own
        clock); each slot is given once, in output order."""
        out = []
        while True:
            s = self._stream_slot(self._next_j)
            if s is None:
                break
            out.append(s)
            self.issued.append(s)
            self._next_j += 1
        for old in [i for i in self._times if i < (out[-1].k if out else self.n) - 1]:
            del self._times[old]  # bounded: only the pair in flight is kept
        return out

    def _time(self, k: int) -> Fraction:
        if k in self._times:
            return self._times[k]
        last = self.n - 1  # a virtual frame one period after the last, for exact_double's tail
        before = self._times.get(last - 1)
        period = self._times[last] - before if before is not None else self.step
        return self._times[last] + (k - last) * period

    def _stream_slot(self, j: int) -> Slot | None:
        n = self.n
        if n == 0:
            return None
        if not self.by_time:
            p = Fraction(j) / self.factor
            k = math.floor(p)
            if not self._closed and (k > n - 1 or (k == n - 1 and (p != k or n < 2))):
                return None  # pair (k, k+1) not complete yet (a frame alone is held until a pair exists)
            if self._closed and j >= self.count(n):
                return None
            t0, t1 = self._time(k), self._time(k + 1)
            return self._at(j, p, n, t0 + (p - k) * (t1 - t0))
        tau = self._origin + Fraction(j) / self.fps_out
        last = self._times[n - 1]
        if not self._closed and (tau > last or (tau == last and n < 2)):
            return None
        if self._closed:
            end = self._time(n) if self.retime.exact_double else last
            if tau > end or (self.retime.exact_double and tau == end):
                return None
        keys = sorted(self._times)
        i = bisect_right([self._times[q] for q in keys], tau) - 1
        k = keys[max(i, 0)]
        if k >= n - 1:
            return Slot(j, n - 1, Fraction(0), tau)
        t0, t1 = self._times[k], self._times[k + 1]
        return Slot(j, k, (tau - t0) / (t1 - t0), tau)
