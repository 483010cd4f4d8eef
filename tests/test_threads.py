"""The thread tuner (issue 15): on a busy machine the engine runs at the thread count that is
fastest now, and leaves the host's settings as they were. Logic is tested on a simulated
clock; the speed itself is measured by `stvsr bench --load N`, not here."""
import cv2
import pytest
import torch

from stvsr_core import Engine
from stvsr_core import threads as th

from helpers import random_model, real_frames


class _Clock:
    """A unit's duration depends on the thread count it ran at, as on a loaded machine."""

    def __init__(self, monkeypatch, cost):
        self.now, self.cost, self.threads = 0.0, cost, None
        monkeypatch.setattr(th.time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(th, "set_threads", self.set)

    def set(self, n):
        self.threads = n

    def work(self, tuner):
        with tuner.unit():
            self.now += self.cost[tuner.current]


def test_tuner_finds_the_fast_count_and_follows_a_change_of_load(monkeypatch):
    clock = _Clock(monkeypatch, {4: 3.0, 2: 2.0, 1: 1.0})  # loaded: fewer threads win
    tuner = th.ThreadTuner(max_threads=4, retry_every=8)
    assert tuner.candidates == [4, 2, 1]
    for _ in range(10):
        clock.work(tuner)
    assert tuner.choice == 1 and clock.threads == 1
    used = []
    clock.cost = {4: 0.25, 2: 0.5, 1: 1.0}  # the load is gone: every core wins again
    for _ in range(60):
        clock.work(tuner)
        used.append(tuner.current)
    assert tuner.choice == 4
    assert used[-8:].count(4) >= 7  # exploits the best, re-trying another only now and then


def test_one_thread_leaves_nothing_to_tune():
    assert not th.ThreadTuner(max_threads=1).active


def test_atypical_units_teach_nothing(monkeypatch):
    clock = _Clock(monkeypatch, {2: 1.0, 1: 1.0})
    tuner = th.ThreadTuner(max_threads=2)
    with tuner.unit() as u:
        u["typical"] = False
        clock.now += 100
    assert tuner.units == 0 and not tuner.seconds


@pytest.mark.parametrize("threads", [0, 1])
def test_engine_leaves_the_hosts_thread_settings_as_they_were(threads):
    torch_n, cv_n = torch.get_num_threads(), cv2.getNumThreads()
    frames = list(real_frames(0, 4, size=(48, 64)))
    out = list(Engine(random_model(), "cpu", threads=threads).run(frames))
    assert len(out) == 7
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (torch_n, cv_n)


def test_negative_threads_are_refused():
    from stvsr_core import InputError
    with pytest.raises(InputError, match="threads"):
        Engine(random_model(), "cpu", threads=-1)


def test_bench_load_runs_busy_processes_only_while_measuring():
    from stvsr_core.bench import busy_load
    with busy_load(2) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)  # spinning
    assert all(p.returncode is not None for p in procs)  # gone afterwards


def test_bf16_auto_follows_the_measurement_not_the_flags(monkeypatch):
    """Issue 15 item 3: AVX512-BF16 without AMX may not pay; auto uses what measures faster."""
    from stvsr_core import precision
    monkeypatch.setattr(precision, "bf16_speedup", lambda: 0.8)  # bf16 units, but slower here
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: "avx512_bf16")
    assert not Engine(random_model(), "cpu").runtime.bf16
    assert precision.describe().startswith("fp32 (bf16 via avx512_bf16: measured 0.80x")
    monkeypatch.setattr(precision, "bf16_speedup", lambda: 1.9)
    assert Engine(random_model(), "cpu").runtime.bf16
    assert Engine(random_model(), "cpu", precision="fp32").runtime.bf16 is False  # an explicit choice stands


def test_bf16_speedup_is_measured_only_where_the_cpu_has_bf16_units(monkeypatch):
    from stvsr_core import precision
    precision.bf16_speedup.cache_clear()
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: None)
    assert precision.bf16_speedup() is None and not precision.cpu_prefers_bf16()
    assert precision.describe() == "fp32 (no bf16 units on this CPU)"
    precision.bf16_speedup.cache_clear()


def test_bf16_is_timed_on_one_thread_and_threads_come_back(monkeypatch):
    """Under load a multi-thread timing is random (barrier stalls): the check runs on one."""
    from stvsr_core import precision
    seen = []
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: "amx")
    monkeypatch.setattr(precision, "_time_conv", lambda: seen.append(torch.get_num_threads()) or 2.0)
    before = torch.get_num_threads()
    precision.bf16_speedup.cache_clear()
    try:
        assert precision.bf16_speedup() == 2.0
    finally:
        precision.bf16_speedup.cache_clear()
    assert seen == [1] and torch.get_num_threads() == before


@pytest.mark.parametrize("workers, threads, slots, plan", [
    (0, 0, 2, (2, 1)),   # the default on a 2-core CPU: two pairs, one thread per op each
    (0, 0, 8, (2, 4)),
    (0, 0, 1, (1, 0)),   # one core: one pair (nothing to tune)
    (1, 0, 2, (1, 0)),   # one pair asked for: its thread count is tuned to the load
    (3, 0, 2, (3, 1)),   # never more threads than cores
    (2, 3, 2, (2, 3)),   # both set: as asked
])
def test_cpu_plan_splits_the_cores_between_pairs(workers, threads, slots, plan):
    assert th.cpu_plan(workers, threads, slots) == plan


def test_engine_runs_two_pairs_on_a_cpu_by_default_and_one_when_asked(monkeypatch):
    monkeypatch.setattr(th, "cpu_slots", lambda: 2)
    auto, one = Engine(random_model(), "cpu"), Engine(random_model(), "cpu", workers=1)
    assert (auto.workers, auto.threads) == (2, 1)
    assert (one.workers, one.threads) == (1, 0)
    frames = list(real_frames(0, 5, size=(48, 64)))
    a, b = list(auto.run(frames)), list(one.run(frames))
    assert len(a) == len(b) == 9
    assert all(torch.allclose(x, y, atol=2e-3) for x, y in zip(a, b))  # bf16 rounding may differ by thread count
