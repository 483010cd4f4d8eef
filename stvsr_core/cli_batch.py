"""`stvsr upsample` over many and long videos: several inputs (files, globs, folders of videos)
into an output folder, each clip in chunks (`chunks.py`) rendered here or on a Ray cluster
(`cluster.py`, `--ray`), resumable, stitched into the same frames a single run writes.

Taken when the command names several inputs, a glob or a folder of videos, or asks for chunks
(`--ray`, `--chunk-frames`, `--work`); a single file without these runs the streaming path of
`cli_upsample` as before.
"""
from __future__ import annotations

import glob
import logging
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from .chunks import (DEFAULT_CHUNK_FRAMES, ChunkError, Manifest, Plan, job_key, read_lossless, release_locks, scan,
                     settings_of, sha256, stored_precision)
from .cluster import ChunkWorker, RayError, import_ray, ray_connect, run_on_ray
from .engine import Engine, InputError
from .registry import resolve_model
from .runtime import resolve
from .video_io import (DEMO_CLIP, ENCODERS, IMAGE_EXTS, VIDEO_EXTS, MediaError, check_output,
                       keeps_rotation, open_writer, read_frames)
from .weights import WeightsError, load_weights

log = logging.getLogger("stvsr")

# container tags a muxer writes for itself, not the clip's own metadata
_OWN_TAGS = {"encoder", "major_brand", "minor_version", "compatible_brands", "duration"}


def add_arguments(p):
    g = p.add_argument_group("many and long videos: chunks, resume, Ray")
    g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="render the chunks on Ray: a local Ray instance of its own, or the cluster at ADDRESS "
                        "(HOST:PORT; 'auto': the one `ray start` made on this machine; write --ray=ADDRESS when "
                        "inputs follow); needs pip install 'stvsr[ray]'")
    g.add_argument("--ray-workers", type=int, default=0, metavar="N",
                   help="Ray workers (default: 0: one per GPU of the cluster, else one per --cpus-per-worker CPUs)")
    g.add_argument("--cpus-per-worker", type=int, default=1, metavar="N",
                   help="CPUs (threads) of each Ray worker on a cluster without GPUs (default: 1)")
    g.add_argument("--chunk-frames", type=int, default=None, metavar="K",
                   help=f"source frames per chunk (default: {DEFAULT_CHUNK_FRAMES}); a chunk ends at the last scene "
                        "cut in its second half, else overlaps the next by one frame")
    g.add_argument("--work", default=None, metavar="DIR",
                   help="folder for the chunks and the manifest that a rerun resumes from (default: .stvsr-work "
                        "beside the output); on several machines, storage every node mounts at the same path")


def _video_folder(p: Path) -> bool:
    if not p.is_dir():
        return False
    names = [q.suffix.lower() for q in p.iterdir()]
    return any(s in VIDEO_EXTS for s in names) and not any(s in IMAGE_EXTS for s in names)


def _inputs(args) -> list[str]:
    ins = args.input if isinstance(args.input, list) else [args.input]
    return [str(x) for x in ins] or [str(DEMO_CLIP)]


def wanted(args) -> bool:
    """Whether this command takes the chunked path (else the single streaming run)."""
    ins = _inputs(args)
    return (args.ray is not None or args.chunk_frames is not None or args.work is not None or len(ins) > 1
            or any(glob.has_magic(s) and not Path(s).exists() for s in ins) or any(_video_folder(Path(s)) for s in ins))


def single_input(args) -> str:
    return _inputs(args)[0]


def expand(inputs: list[str]) -> tuple[list[Path], bool]:
    """Files, globs and folders of videos -> the clips, and whether this is a batch (an output folder)."""
    out, batch = [], len(inputs) > 1
    for s in inputs:
        p = Path(s)
        if _video_folder(p):
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in VIDEO_EXTS and q.is_file())
            batch = True
        elif not p.exists() and glob.has_magic(s):
            matches = sorted(Path(m) for m in glob.glob(s))
            if not matches:
                raise MediaError(f"{s}: matches no file: check the pattern")
            out += matches
            batch = True
        else:
            out.append(p)
    return out, batch


def _output_folder(path: Path, n: int) -> Path:
    if path.suffix.lower() in ENCODERS and not path.is_dir():
        raise MediaError(f"{path}: names a video file, but there are {n} inputs: name a folder for the outputs")
    if path.exists() and not path.is_dir():
        raise MediaError(f"{path}: is a file, not a folder: name a folder for the {n} outputs")
    if not path.parent.is_dir():
        raise MediaError(f"{path.parent}: output folder does not exist: create it or choose another")
    try:
        path.mkdir(exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise MediaError(f"{path}: cannot write there ({e.strerror}): choose another output folder") from None
    return path


def _outputs(inputs: list[Path], output: Path, batch: bool) -> list[Path]:
    if not batch:
        return [output]
    folder = _output_folder(output, len(inputs))
    outs, seen = [], {}
    for p in inputs:
        # the same name; .mkv where stvsr cannot write the input's container
        name = p.name if p.suffix.lower() in ENCODERS else f"{p.stem}.mkv"
        if name in seen:
            raise MediaError(f"{p} and {seen[name]} would both be written to {folder / name}: rename one or "
                             "run them separately")
        seen[name] = p
        outs.append(folder / name)
    return outs


def _options(args):
    """(EngineOptions, --input-fps) from the command line, read as the single run reads them."""
    from . import cli_upsample as cu
    factor, fps, input_fps = cu._retime(args)
    return cu.engine_options(args, factor, fps, cu._precision(args)), input_fps


@dataclass
class Clip:
    source: Path
    output: Path
    work: Path
    keep: bool
    plan: Plan | None = None
    manifest: Manifest | None = None
    todo: list | None = None
    skipped: list | None = None
    written: int = 0
    stitch_seconds: float = 0.0


def _done_before(out: Path, work: Path) -> bool:
    """An output a previous run of this job stitched (its manifest records the output's SHA-256, or
    that the stitch had begun: an output only ever appears complete, by a rename)."""
    import json
    m = work / "manifest.json"
    if not (out.exists() and m.is_file()):
        return False
    try:
        data = json.loads(m.read_text())
    except (OSError, ValueError):
        return False
    if data.get("stitching"):  # stitched, then stopped before the manifest said so: the output is ours
        return True
    done = data.get("done")
    return bool(done) and sha256(out) == done["sha256"]


def run(args) -> int:
    from .cli_upsample import Terminated, _terminate
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    state = {"work": None, "stitchers": {}}
    resume = lambda: (f": finished chunks are kept in {state['work']}: rerun the same command to resume"
                      if state["work"] else "; no output written")
    try:
        return _run(args, state)
    except (MediaError, InputError, WeightsError, ChunkError, RayError) as e:
        print(f"stvsr upsample: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stvsr upsample: interrupted{resume()}", file=sys.stderr)
        return 130
    except Terminated:
        print(f"stvsr upsample: terminated{resume()}", file=sys.stderr)
        return 143
    finally:
        for st in state["stitchers"].values():
            st.abort()
        release_locks()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args, state) -> int:
    if args.ray is not None:
        import_ray()  # before anything: one line naming the install
        if args.ray != "local" and Path(args.ray).exists():
            raise MediaError(f"--ray took the input {args.ray} as the cluster's address: put --ray after the "
                             "inputs, or write --ray=ADDRESS")
    if args.chunk_frames is not None and args.chunk_frames < 2:
        raise InputError(f"--chunk-frames {args.chunk_frames}: a chunk needs at least 2 source frames")
    if args.ray_workers < 0 or args.cpus_per_worker < 1:
        raise InputError("--ray-workers must be >= 0 and --cpus-per-worker >= 1")
    inputs, batch = expand(_inputs(args))
    outputs = _outputs(inputs, Path(args.output), batch)
    if args.work:
        work_root = Path(args.work)
    elif batch:
        work_root = outputs[0].parent / ".stvsr-work"
    else:
        work_root = outputs[0].parent / f".{outputs[0].name}.stvsr-work"
    clips = []
    for src, out in zip(inputs, outputs):  # every check on the outputs before decoding and the model
        work = work_root / out.name if batch or args.work else work_root
        if not _done_before(out, work):
            check_output(out, src, args.overwrite)
        clips.append(Clip(src, out, work, keeps_rotation(out)))
    for clip in clips:  # every input opens (one line naming a bad one) before any work is done
        read_frames(clip.source).timed.close()
    if args.ray is not None:
        ray_connect(args.ray)  # a cluster that cannot be reached fails here, before the plan
    opts, input_fps = _options(args)  # the options' one-line errors before the model
    model_path = resolve_model(args.model)
    model = load_weights(model_path)
    settings = settings_of(opts, sha256(model_path), args.device)
    planner = Engine(model, "cpu", replace(opts, precision="fp32", backend="torch", workers=1, threads=0))
    precision = _precision(args, opts, clips)
    opts = replace(opts, precision=precision)
    chunk_frames = args.chunk_frames or DEFAULT_CHUNK_FRAMES
    state["work"] = work_root
    truncated = 0
    for clip in clips:
        src = read_frames(clip.source)
        turn = 0 if clip.keep else src.rotation
        if src.display_matrix and not clip.keep and (src.mirrored or turn % 90):
            raise InputError(f"{clip.source}: its display matrix {'mirrors' if src.mirrored else 'rotates'} "
                             f"the picture{'' if src.mirrored else f' by {turn} degrees'}, which only a video "
                             f"output keeps: write .mp4, .mov, .mkv or .webm")
        plan = scan(src, planner, _input_rate(src, opts.fps, input_fps), turn, chunk_frames, str(clip.output))
        plan.key = job_key(plan, settings | {"chunk_frames": chunk_frames})
        clip.plan = plan
        clip.manifest = Manifest.open(clip.work, plan, args.overwrite, precision)
        if clip.manifest.finished(clip.output):
            print(f"stvsr: {clip.source}: done before ({clip.output}, {plan.n_out} frames): skipped", file=sys.stderr)
            clip.todo, clip.skipped = [], list(range(len(plan.chunks)))
            continue
        if clip.output.exists() and not args.overwrite and not clip.manifest.data.get("stitching"):
            check_output(clip.output, clip.source, args.overwrite)  # stitched by another job
        clip.skipped = [c.index for c in plan.chunks if clip.manifest.verified(c)]
        clip.todo = [c for c in plan.chunks if c.index not in clip.skipped]
        truncated += bool(plan.error)
        h, w = plan.size
        print(f"stvsr: {clip.source} ({w}x{h}, {plan.n_src} frames, {_rate(plan.fps_in)} fps, "
              f"{len(plan.cuts)} scene cut(s)) -> {clip.output} ({plan.n_out} frames, {_rate(plan.fps_out)} fps) "
              f"in {len(plan.chunks)} chunk(s): skipped {_ids(clip.skipped)} (finished before, verified), "
              f"rendering {_ids([c.index for c in clip.todo])}", file=sys.stderr)
        if plan.repaired:
            log.warning("%d frame(s) of %s had a missing or out-of-order timestamp: each was placed one frame "
                        "period after the previous", plan.repaired, clip.source)
    by_key = {c.plan.key: c for c in clips}
    # absolute paths: a Ray worker runs in a folder of its own (and, on another machine, sees them
    # only on storage every node mounts at the same path)
    jobs = [(c.plan.key, str(c.source.resolve()), ch, c.plan.turn, str((c.work / ch.name).resolve()))
            for c in clips for ch in c.todo]
    total = sum(ch.frames for c in clips for ch in c.todo)
    t0 = time.time()
    stitchers = state["stitchers"] = {c.plan.key: Stitcher(c) for c in clips if not c.manifest.finished(c.output)}
    for st in stitchers.values():  # what finished before: all of a clip, or the chunks it starts with
        st.advance()
    workers: dict[str, list] = {}  # where -> [chunks rendered, models loaded there, seconds rendering]
    with tqdm(total=total, unit="frame", desc="upsample", dynamic_ncols=True) as bar:
        def on_result(r):
            w = workers.setdefault(r["worker"], [0, 0, 0.0])
            w[0], w[1], w[2] = w[0] + 1, r["loads"], w[2] + r.get("seconds", 0)
            clip = by_key[r["key"]]
            chunk = clip.plan.chunks[r["chunk"]]
            path = clip.work / chunk.name
            if not path.is_file() or sha256(path) != r["sha256"]:
                raise ChunkError(f"{clip.source}: {chunk.label()}, written on {r['worker']}, is "
                                 f"{'not' if not path.is_file() else 'not the same'} in {clip.work} here: --work "
                                 "must be on storage every node mounts at the same path")
            clip.manifest.record(chunk, {k: r[k] for k in ("file", "frames", "sha256", "worker", "loads")})
            log.debug("%s: %s done on %s", clip.source, chunk.label(), r["worker"])
            clip.todo = [c for c in clip.todo if c.index != chunk.index]
            stitchers[clip.plan.key].advance()

        def on_progress(frames):
            bar.update(frames - bar.n)

        failed = None
        if args.ray is not None and jobs:
            failed = run_on_ray(jobs, address=args.ray, model=str(model_path), weights=model_path.read_bytes(),
                                device=args.device, options=opts, workers=args.ray_workers,
                                cpus_per_worker=args.cpus_per_worker, on_result=on_result, on_progress=on_progress)
        elif jobs:
            worker = ChunkWorker(str(model_path), None, args.device, opts, args.threads)
            if worker.error:
                raise WeightsError(worker.error)
            done = 0
            for job in jobs:
                r = worker.render(*job, progress=lambda n: bar.update(done + n - bar.n))
                if "error" in r:
                    failed = r
                    break
                done += r["frames"]
                on_result(r)
    if failed is not None:
        clip = by_key.get(failed.get("key"))
        if clip is None:
            raise ChunkError(f"{failed['error']}: rerun the same command to resume (finished chunks are kept "
                             f"in {work_root})")
        chunk = clip.plan.chunks[failed["chunk"]]
        kept = len(clip.manifest.data["chunks"])
        raise ChunkError(f"{clip.source}: {chunk.label()} failed on {failed['worker']}: {failed['error']}: fix "
                         f"that and rerun the same command ({kept} finished chunk(s) are kept in {clip.work})")
    dt = time.time() - t0
    frames = sum(c.written for c in clips)
    rendered = sum(len(c.plan.chunks) - len(c.skipped) for c in clips)
    print(f"stvsr: wrote {frames} frames of {sum(bool(c.written) for c in clips)} clip(s) in {dt:.1f} s "
          f"({rendered} chunk(s) rendered, {sum(len(c.skipped) for c in clips)} skipped"
          f"{', on Ray' if args.ray is not None else ''})", file=sys.stderr)
    if workers:
        print("stvsr: workers: " + ", ".join(f"{w} ({n} chunk(s) in {sec:.1f} s, model loaded {loads}x)"
                                             for w, (n, loads, sec) in sorted(workers.items())), file=sys.stderr)
    stitched = sum(c.stitch_seconds for c in clips)
    if stitched:
        print(f"stvsr: stitched in {stitched:.1f} s", file=sys.stderr)
    for c in clips:  # all finished: the work folder goes
        shutil.rmtree(c.work, ignore_errors=True)
    if not args.work and work_root.is_dir() and not any(work_root.iterdir()):
        work_root.rmdir()
    for c in clips:
        if c.plan.error:
            print(f"stvsr upsample: warning: {c.source}: {c.plan.error}: wrote {c.plan.n_out} frames from its "
                  f"first {c.plan.n_src} frames to {c.output}, shorter than the input: repair or re-download "
                  "the input for the rest", file=sys.stderr)
    return 3 if truncated else 0


def _precision(args, opts, clips) -> str:
    """One precision for every chunk of a job, so that no two workers render a clip differently: the
    one asked for; else the one an earlier run of this job chose (its manifest: a resume keeps it);
    else auto, resolved once here: fp16 on a cluster with GPUs, else this machine's choice (on a CPU
    a measurement, which may differ from run to run under load)."""
    if opts.precision != "auto" or opts.backend.startswith("openvino"):
        return opts.precision
    for c in clips:
        if stored_precision(c.work):
            return stored_precision(c.work)
    if args.ray is not None:
        if int(ray_connect(args.ray).cluster_resources().get("GPU", 0)):
            return "fp16"
        return resolve("cpu", "auto", opts.backend).precision
    return resolve(args.device, "auto", opts.backend).precision


def _rate(fps) -> str:
    from .cli_upsample import _rate
    return _rate(fps)


def _input_rate(src, fps, input_fps):
    from .cli_upsample import input_rate  # (cli_upsample imports this module)
    return input_rate(src, fps, input_fps)


def _ids(xs) -> str:
    return ", ".join(map(str, xs)) if xs else "none"


class Stitcher:
    """A clip's output, written from its chunks in order as soon as each is finished (so the encode
    runs beside the rendering, not after it), at the timeline's times, with the source's audio,
    through the single run's writer. Only a complete output is renamed into place."""

    def __init__(self, clip: Clip):
        self.clip, self.writer, self.next, self.j = clip, None, 0, 0

    def advance(self):
        clip, plan = self.clip, self.clip.plan
        t0 = time.perf_counter()
        while self.next < len(plan.chunks) and str(self.next) in clip.manifest.data["chunks"]:
            if self.writer is None:
                self._open()
            for rgb in read_lossless(clip.work / plan.chunks[self.next].name):
                if self.j < plan.n_out:
                    self.writer.write(rgb, plan.times[self.j])
                self.j += 1
            self.next += 1
        clip.stitch_seconds += time.perf_counter() - t0
        if self.next == len(plan.chunks) and self.writer is not None:
            self._close()

    def _open(self):
        import av
        clip, plan = self.clip, self.clip.plan
        clip.manifest.data["stitching"] = True  # from here an OUTPUT there is this job's (see _done_before)
        clip.manifest.save()
        audio = Path(plan.source) if plan.audio else None
        writer = open_writer(clip.output, plan.fps_out, True, audio, plan.display_matrix if clip.keep else None,
                             plan.time_base)
        self.writer = writer.__enter__()
        container = getattr(writer, "container", None)
        if container is not None and Path(plan.source).is_file():
            with av.open(plan.source) as src:  # the clip's metadata (title, date, ...)
                container.metadata.update({k: v for k, v in src.metadata.items() if k.lower() not in _OWN_TAGS})

    def _close(self):
        clip, plan, writer = self.clip, self.clip.plan, self.writer
        if self.j != plan.n_out:
            self.abort()
            raise ChunkError(f"{clip.output}: the chunks gave {self.j} frames, the plan {plan.n_out}: rerun the "
                             "same command (the chunks are verified again)")
        t0 = time.perf_counter()
        self.writer = None
        writer.__exit__(None, None, None)  # the rename into place
        clip.stitch_seconds += time.perf_counter() - t0
        clip.written = writer.count
        clip.manifest.mark_done(clip.output, writer.count)

    def abort(self):
        """Stopped or failed: the partial output goes (the chunks stay for the rerun)."""
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
