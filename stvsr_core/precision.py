"""Whether bfloat16 pays on this CPU, measured rather than read from the flags.

AMX runs bf16 convolutions about twice as fast as fp32; AVX512-BF16 without AMX may gain little
or lose (oneDNN converts around each op), and an unknown CPU may emulate bf16. So the CPU
flags only say whether bf16 is worth trying; a short timing of a convolution shaped like
the networks' layers decides, once per process (about 0.1 s), on one thread (under load, barrier stalls would
make a multi-thread timing random).
"""
from __future__ import annotations

import functools
import time

import torch

MIN_SPEEDUP = 1.1  # below this the rounding is not worth it


def cpu_bf16_units() -> str | None:
    """'amx', 'avx512_bf16' or None, from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return None
    return "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else None


@functools.cache
def bf16_speedup() -> float | None:
    """fp32 time / bf16 time of a 48-channel 3x3 convolution at 240x136 (channels_last, as the
    engine runs); None where the CPU has no bf16 units. On one thread, interleaved, best of
    each, so other load slows both alike."""
    if cpu_bf16_units() is None:
        return None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: a busy machine stalls multi-thread timings at random
    try:
        return _time_conv()
    finally:
        torch.set_num_threads(threads)


def _time_conv() -> float:
    with torch.inference_mode():
        conv = torch.nn.Conv2d(48, 48, 3, padding=1).to(memory_format=torch.channels_last)
        x = torch.rand(1, 48, 136, 240).contiguous(memory_format=torch.channels_last)
        bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)

        def timed(low: bool) -> float:
            t = time.perf_counter()
            if low:
                with bf16():
                    conv(x)
            else:
                conv(x)
            return time.perf_counter() - t
        timed(False), timed(True)  # warm-up: oneDNN builds its kernels
        best = {False: float("inf"), True: float("inf")}
        for _ in range(5):
            for low in (False, True):
                best[low] = min(best[low], timed(low))
    return best[False] / best[True]


def cpu_prefers_bf16() -> bool:
    s = bf16_speedup()
    return s is not None and s >= MIN_SPEEDUP


def describe() -> str:
    """For logs and `stvsr bench`: what auto picks here, and why."""
    units, s = cpu_bf16_units(), bf16_speedup()
    if units is None:
        return "fp32 (no bf16 units on this CPU)"
    pick = "bf16" if s >= MIN_SPEEDUP else "fp32"
    return f"{pick} (bf16 via {units}: measured {s:.2f}x the speed of fp32 on a conv layer)"
