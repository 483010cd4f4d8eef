"""Issue 11 item 1: one timeline for every host: factors, fps targets, exact_double, VFR."""
from fractions import Fraction as Fr

import pytest

from stvsr_core.timeline import Retime, Timeline, as_fraction

NTSC_FILM, NTSC_60 = Fr(24000, 1001), Fr(60000, 1001)


def _stream(timeline, times):
    out = []
    for t in times:
        timeline.add(t)
        out += timeline.ready()
    timeline.close()
    return out + timeline.ready()


@pytest.mark.parametrize("retime", [Retime(), Retime(exact_double=True), Retime(factor=3), Retime(factor=4),
                                    Retime(factor=Fr(5, 2)), Retime(factor=1), Retime(fps=NTSC_60),
                                    Retime(fps=NTSC_60, exact_double=True), Retime(fps=Fr(12000, 1001))])
@pytest.mark.parametrize("n", [2, 3, 7])
def test_streaming_and_random_access_agree(retime, n):
    """The CLI's streamed slots (timestamps fed one by one) are the hosts' closed-form slots."""
    closed = Timeline(retime, NTSC_FILM)
    slots = [closed.slot(j, n) for j in range(closed.count(n))]
    streamed = _stream(Timeline(retime, NTSC_FILM), [k * Fr(1001, 24000) for k in range(n)])
    assert [(s.j, s.k, s.t, s.time) for s in streamed] == [(s.j, s.k, s.t, s.time) for s in slots]
    assert all(0 <= s.t < 1 and 0 <= s.k < n for s in slots)
    assert [s.time for s in slots] == sorted(s.time for s in slots)


def test_factor_two_is_todays_layout():
    tl = Timeline(Retime(), 25)
    assert tl.count(5) == 9 and Timeline(Retime(exact_double=True), 25).count(5) == 10
    assert [(s.k, s.t) for s in map(lambda j: tl.slot(j, 5), range(9))] == \
        [(k // 2, Fr(k % 2, 2)) for k in range(9)]
    last = Timeline(Retime(exact_double=True), 25).slot(9, 5)  # the held last frame, half a period on
    assert (last.k, last.t, last.time) == (4, 0, Fr(9, 50))


def test_film_to_sixty_keeps_duration_exactly():
    """24000/1001 -> 60000/1001: 5 output frames per 2 source frames, output j at j*1001/60000 s."""
    tl = Timeline(Retime(fps=NTSC_60, exact_double=True), NTSC_FILM)
    n = 48  # 2.002 s
    assert tl.factor == Fr(5, 2) and tl.fps_out == NTSC_60
    assert tl.count(n) == 120 and tl.count(n) / NTSC_60 == n / NTSC_FILM
    assert all(tl.slot(j, n).time == j * Fr(1001, 60000) for j in range(120))
    assert [(tl.slot(j, n).k, tl.slot(j, n).t) for j in range(5)] == \
        [(0, 0), (0, Fr(2, 5)), (0, Fr(4, 5)), (1, Fr(1, 5)), (1, Fr(3, 5))]
    assert tl.slots_of_pair(0, n) == [tl.slot(1, n), tl.slot(2, n)]


def test_variable_frame_rate_keeps_its_times():
    """Factor mode divides each source interval; an fps target samples the source's own clock."""
    times = [Fr(0), Fr(1, 10), Fr(3, 10), Fr(4, 10)]  # uneven gaps
    x3 = _stream(Timeline(Retime(factor=3), 10), times)
    assert [s.time for s in x3][:4] == [0, Fr(1, 30), Fr(2, 30), Fr(1, 10)]
    assert x3[4].time == Fr(1, 10) + Fr(2, 30) and x3[-1].time == Fr(4, 10)
    at20 = _stream(Timeline(Retime(fps=20), 10), times)
    assert [s.time for s in at20] == [Fr(j, 20) for j in range(9)]
    third = at20[3]  # 0.15 s: a quarter of the way from 0.1 to 0.3
    assert (third.k, third.t) == (1, Fr(1, 4))


def test_streaming_holds_only_the_pair_in_flight():
    tl = Timeline(Retime(factor=3), 25)
    for k in range(1000):
        tl.add(None)
        tl.ready()
    assert len(tl._times) <= 3


def test_bad_factors_and_rates_are_refused_in_one_line():
    for bad in (0, -2, "abc", "1/0"):
        with pytest.raises(ValueError, match="factor must be"):
            Retime(factor=bad)
    with pytest.raises(ValueError, match="needs the input's frame rate"):
        Timeline(Retime(fps=60), None)
    assert as_fraction(30000 / 1001, "fps") == Fr(30000, 1001) and as_fraction(25.0, "fps") == 25 and as_fraction("60000/1001", "fps") == NTSC_60


def test_typed_ntsc_rates_are_ntsc():
    """A widget's 59.94 and a command line's "23.976" mean 60000/1001 and 24000/1001 in every host."""
    assert as_fraction(59.94, "fps") == NTSC_60 and as_fraction("23.976", "fps") == NTSC_FILM
    assert as_fraction(29.97, "fps") == Fr(30000, 1001) and as_fraction("12.5", "fps") == Fr(25, 2)
    assert as_fraction(25.0, "fps") == 25 and as_fraction("2997/100", "fps") == Fr(2997, 100)  # exact stays exact
