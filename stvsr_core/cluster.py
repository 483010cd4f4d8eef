"""Rendering chunks: in this process, or as Ray actors across a cluster (`pip install 'stvsr[ray]'`).

Ray does the scheduling (an `ActorPool` hands the next chunk to the next free actor), the
retries (an actor whose process dies is restarted, `max_restarts`, and the chunk it was rendering
is retried, `max_task_retries` = -1: while the actor lives) and the placement (one actor per GPU
where the cluster has GPUs, else one per `cpus_per_worker` CPUs). Once no chunk is left to hand
out, idle actors are ended, so that the actor of a lost machine can restart where they held a GPU
or CPUs. Each actor loads the model once, in its constructor, and renders chunk after chunk with
it. Without Ray the same `ChunkWorker` renders the chunks here.
"""
from __future__ import annotations

import os
import socket
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import torch

from .chunks import Chunk, ChunkError, LosslessWriter, source_frames
from .engine import Engine, EngineOptions, InputError
from .threads import ThreadTuner, restored_threads, set_threads
from .timeline import Slot
from .video_io import MediaError, upright

# per actor: a process that dies is restarted this often; the chunk it was rendering is retried
# until it finishes or the actor is dead for good (calls to an actor that is restarting, e.g. on
# another node, count as tries too: so as many as it takes)
MAX_RESTARTS = 3
LOADS = 0  # models this process has loaded (a Ray actor: once, whatever the number of chunks)


class RayError(RuntimeError):
    pass


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayError("--ray needs Ray, which is not installed: pip install 'stvsr[ray]' "
                         "(on every machine of the cluster), or run without --ray") from None
    return ray


KEEP = 16  # decoded source frames a chunk keeps for the engine's random access (its caches hold 8)


def render_chunk(engine: Engine, source, chunk: Chunk, turn: int, path: Path, progress=None,
                 tuner: ThreadTuner | None = None) -> dict:
    """Render one chunk's output frames (the clip's slots j0..j1-1) into a lossless file at `path`.

    Random access over the chunk's source frames through the engine's one composition: each slot
    is the clip's slot with k counted from the chunk's first frame; the in-between frames of a cut
    at the chunk's end repeat its last frame, as the single run renders them (its cut measure,
    applied in the plan)."""
    from .cli_upsample import _to_rgb, _to_tensor  # the CLI's own conversions: identical frames
    acc = engine.access(capacity=8)
    frames = iter(source_frames(source, chunk.first, chunk.last, chunk.pts))
    window: dict[int, object] = {}
    nxt = chunk.first

    def frame(k_local: int):  # source(k) for the engine: decoded in order, the last few kept
        nonlocal nxt
        k = chunk.first + k_local
        while k not in window:
            if nxt > k or nxt > chunk.last:
                raise ChunkError(f"{source}: frame {k} was needed again after it was released")
            window[nxt] = _to_tensor(upright(next(frames), turn))
            nxt += 1
            for old in [q for q in window if q < nxt - KEEP]:
                del window[old]
        return window[k]

    writer = LosslessWriter(path)
    unit = tuner.unit if tuner else None
    try:
        for i, (k, t) in enumerate(chunk.slots):
            t = Fraction(t)
            slot = Slot(chunk.j0 + i, k - chunk.first, t, Fraction(0))
            cut = True if (chunk.cut_after and k == chunk.last and t) else None
            if unit:
                with unit() as work:
                    work["typical"] = slot.between
                    out = acc.render(slot, frame, cut)
            else:
                out = acc.render(slot, frame, cut)
            writer.write(_to_rgb(out))
            if progress:
                progress(i + 1)
        return writer.commit()
    except BaseException:
        writer.discard()
        raise


class ChunkWorker:
    """Loads the model once and renders chunks with it; the Ray actor is this class, remote."""

    def __init__(self, model: str, weights: bytes | None, device: str, options: EngineOptions,
                 threads: int = 0, progress=None):
        global LOADS
        from .registry import load_model
        from .weights import load_weights
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        self.progress, self.error = progress, None
        self.threads, self.tuner = threads, None
        try:
            if weights is not None:  # the driver's exact weights, through Ray's object store
                with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
                    f.write(weights)
                    f.flush()
                    net = load_weights(f.name)
            else:
                net = load_model(model)
            LOADS += 1
            self.engine = Engine(net, device, options)
        except Exception as e:  # noqa: BLE001 - reported with the chunk, in the user's words
            self.error = f"{self.where}: cannot load the model {model!r}: {e}"
        if threads:
            set_threads(threads)

    def info(self) -> dict:
        return {"worker": self.where, "loads": LOADS, "error": self.error}

    def render(self, key: str, source: str, chunk: Chunk, turn: int, path: str, progress=None) -> dict:
        """Render one chunk; the result names the chunk and the worker, or the error. `progress`
        (in this process): called with the chunk's frames done."""
        base = {"key": key, "chunk": chunk.index, "worker": self.where, "loads": LOADS}
        if self.error:
            return base | {"error": self.error}
        if not Path(source).exists():
            return base | {"error": f"{source}: not found on {self.where}: the input and the work folder must be "
                                    "on storage every node mounts at the same path"}
        if self.tuner is None and not self.threads and self.engine.device.type == "cpu":
            self.tuner = ThreadTuner()  # as Engine.run: the thread count follows the machine's load
        report = progress if self.progress is None else self._reporter(f"{key}/{chunk.index}", chunk.frames)
        t0 = time.perf_counter()
        try:
            with restored_threads():
                if self.tuner is not None:  # what the threads are now (restored after the last chunk)
                    self.tuner.current = torch.get_num_threads()
                info = render_chunk(self.engine, source, chunk, turn, Path(path), report, self.tuner)
        except (ChunkError, InputError, MediaError, OSError) as e:
            return base | {"error": str(e)}
        return base | info | {"seconds": round(time.perf_counter() - t0, 3)}

    def _reporter(self, key: str, frames: int):
        """Frames done, to the cluster's progress actor, at most four times a second."""
        last = [0.0]

        def report(done):
            now = time.monotonic()
            if now - last[0] > 0.25 or done == frames:
                last[0] = now
                self.progress.report.remote(key, done)
        return report


class _Progress:
    """Frames done per chunk, reported by the actors, read by the driver (one bar for the cluster)."""

    def __init__(self):
        self.done: dict[str, int] = {}

    def report(self, key: str, done: int):
        self.done[key] = done

    def total(self) -> int:
        return sum(self.done.values())


def _reachable(address: str, timeout: float = 10):
    """A cluster address that answers (ray.init itself waits minutes on a wrong one)."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise RayError(f"--ray={address}: no Ray cluster answers there ({getattr(e, 'strerror', None) or e}): "
                       "give the head node's HOST:PORT (`ray status` on it), or start one with "
                       "`ray start --head`") from None


def ray_connect(address: str | None, quiet: bool = True):
    """Ray connected: to the cluster at `address` ('auto': the one `ray start` made here), else a
    local one with this machine's CPUs (and GPUs)."""
    ray = import_ray()
    if not ray.is_initialized():
        local = address in (None, "local")  # a new instance of its own, even where `ray start` made one
        if not local and address != "auto":
            _reachable(address)
        kw = {"include_dashboard": False} if local else {}
        try:
            ray.init(address="local" if local else address, log_to_driver=not quiet, logging_level="ERROR",
                     configure_logging=True, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = "a local Ray instance" if local else f"the Ray cluster at {address}"
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RayError(f"--ray: cannot start or reach {where} ({why}): "
                             "check the address (`ray status` on the head node), or start the cluster with "
                             "`ray start --head`") from None
    return ray


def run_on_ray(jobs, *, address, model, weights, device, options, workers=0, cpus_per_worker=1,
               on_result=None, on_progress=None, poll=0.5):
    """Render `jobs` [(key, source, chunk, turn, path)] as Ray actor calls; `on_result(result)` for
    each finished chunk (in the order they finish), `on_progress(frames)` with the cluster's frames
    done so far. Stops at the first chunk that fails and returns its result; else None."""
    ray = ray_connect(address)
    from ray.util import ActorPool
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    slots = gpus if gpus else max(1, int(res.get("CPU", 1)) // cpus_per_worker)
    n = max(1, min(workers or slots, len(jobs)))
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    progress = ray.remote(num_cpus=0)(_Progress).options(scheduling_strategy=here).remote()  # on this machine

    def frames_done():
        try:
            return ray.get(progress.total.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - the bar stops, the job goes on
            return None
    actor = ray.remote(ChunkWorker).options(num_cpus=cpus_per_worker, num_gpus=1 if gpus else 0,
                                            max_restarts=MAX_RESTARTS, max_task_retries=-1)
    threads = 0 if gpus else cpus_per_worker
    weights_ref = ray.put(weights) if weights is not None else None
    actors = [actor.remote(model, weights_ref, device, options, threads, progress) for _ in range(n)]
    pool = ActorPool(actors)
    for job in jobs:
        pool.submit(lambda a, j: a.render.remote(*j), job)
    failed = None
    try:
        while pool.has_next():
            try:
                result = pool.get_next_unordered(timeout=poll)
            except TimeoutError:
                if on_progress and (n_done := frames_done()) is not None:
                    on_progress(n_done)
                continue
            if on_progress and (n_done := frames_done()) is not None:
                on_progress(n_done)
            if "error" in result:
                failed = result
                break
            if on_result:
                on_result(result)
            while pool.has_free():  # nothing left to hand out: an idle actor frees its GPU or CPUs, where
                ray.kill(pool.pop_idle())  # an actor of a lost node can restart and finish its chunk
    except ray.exceptions.RayActorError as e:  # died more often than max_restarts allows
        failed = {"error": f"a Ray worker died more often than its {MAX_RESTARTS} restarts allow "
                           f"({type(e).__name__}): see `ray status` and the worker logs"}
    finally:
        for a in actors:
            ray.kill(a)
        ray.kill(progress)
    return failed
