"""Long clips in chunks: planned at scene cuts, rendered anywhere, verified, resumed, stitched.

A clip of N source frames is cut into chunks of source frames [first, last]. The output slots come
from the one timeline (`timeline.Timeline`, streamed over the clip's timestamps exactly as
`stvsr upsample` streams it), and each slot belongs to exactly one chunk:

- a chunk owns the slots whose source frame k lies in [first, last), and also k == last when it
  does not overlap the next chunk (it ends at a scene cut, or it is the last chunk);
- a chunk that ends without a cut overlaps the next by one source frame (its `last` is the next
  one's `first`): it reads frame `last` for the in-between frames of the pair (last - 1, last),
  and the next chunk renders frame `last` itself, so no pair is lost or done twice;
- a chunk that ends at a cut (the one cut measure, `scenecut.is_cut` on the frames the engine
  sees) needs no overlap: the in-between frames of the cut pair repeat its frame `last`, as the
  engine renders them in a single run.

Chunk outputs are lossless FFV1 (RGB, exact) in a work folder, each renamed into place only once
complete and recorded in a manifest with its frame count and SHA-256, so a rerun skips exactly
the chunks that are verifiably finished and nothing half-written is ever taken as done.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import torch

from .scenecut import is_cut, scene_score
from .video_io import IMAGE_EXTS, MediaError, _image_rgb, _natural_key, upright

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
DEFAULT_CHUNK_FRAMES = 600  # source frames per chunk where no scene cut comes first
CUT_MARGIN = 1e-4  # a cut is a chunk boundary only when its score clears the threshold by this much


_LOCKS: list = []  # the jobs this process holds (Manifest.lock)


def release_locks():
    while _LOCKS:
        _LOCKS.pop().close()


class ChunkError(RuntimeError):
    """A chunk that cannot be rendered or verified, with the fix."""


@dataclass(frozen=True)
class Span:
    """Source frames [first, last] of one chunk; `overlap`: `last` is also the next chunk's first."""

    first: int
    last: int
    overlap: bool


def split(n_src: int, cuts, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> list[Span]:
    """Chunks of at most `chunk_frames` source frames. A chunk ends at the last scene cut in its
    second half (cut k: between frames k and k + 1), else after `chunk_frames` frames with one
    frame of overlap; the last chunk ends at the clip's last frame."""
    if chunk_frames < 2:
        raise ValueError(f"chunk frames must be >= 2, got {chunk_frames}")
    cuts = sorted(c for c in set(cuts) if 0 <= c < n_src - 1)
    spans, a = [], 0
    while True:
        end = a + chunk_frames - 1
        if end >= n_src - 1:
            spans.append(Span(a, n_src - 1, False))
            return spans
        window = [c for c in cuts if max(a, end - chunk_frames // 2) <= c <= end]
        if window:
            spans.append(Span(a, window[-1], False))
            a = window[-1] + 1
        else:
            spans.append(Span(a, end, True))
            a = end


def owns(span: Span, k: int) -> bool:
    return span.first <= k < span.last or (k == span.last and not span.overlap)


def assign(slots, spans: list[Span]) -> list[tuple[int, int]]:
    """Each chunk's output slots as a range [j0, j1) of the clip's slots (in order, disjoint, covering all)."""
    ranges, j = [], 0
    for span in spans:
        j0 = j
        while j < len(slots) and owns(span, slots[j].k):
            j += 1
        ranges.append((j0, j))
    if j != len(slots):
        raise AssertionError(f"chunk plan covers {j} of {len(slots)} output frames")
    return ranges


@dataclass
class Chunk:
    index: int
    first: int
    last: int
    overlap: bool
    j0: int                 # the clip's output frames [j0, j1) are this chunk's
    j1: int
    slots: list             # [(k, t as "num/den")] of each output frame, k in the clip's frame numbers
    pts: list               # the source frames' timestamps (stream units) or None, for seeking
    cut_after: bool         # the pair (last, last + 1) is a scene cut (its in-between frames repeat `last`)

    @property
    def name(self) -> str:
        return f"chunk_{self.index:05d}.mkv"

    @property
    def frames(self) -> int:
        return self.j1 - self.j0

    def label(self) -> str:
        return f"chunk {self.index} (source frames {self.first}-{self.last}, output frames {self.j0}-{self.j1 - 1})"


@dataclass
class Plan:
    """One clip's job: its timeline, chunks and everything the stitch needs."""

    source: str
    output: str
    n_src: int
    fps_in: Fraction
    fps_out: Fraction
    times: list               # the output frames' times (s), from the timeline
    chunks: list[Chunk]
    turn: int                 # rotation applied to the frames (the output cannot store it)
    display_matrix: bytes | None
    audio: bool
    time_base: Fraction
    size: tuple[int, int]     # source (height, width) as stored
    cuts: list = field(default_factory=list)
    repaired: int = 0
    error: str | None = None  # the input ended short of its announced end
    key: str = ""

    @property
    def n_out(self) -> int:
        return len(self.times)


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)


def scan(src, engine, fps_in, turn: int = 0, chunk_frames: int = DEFAULT_CHUNK_FRAMES, output: str = "") -> Plan:
    """Decode the clip (a `video_io.Source`, at `fps_in`) once: its timestamps through the one
    timeline (as `stvsr upsample` streams them), the scene cuts by the one cut measure on the frames
    the engine sees, and the chunks."""
    source = src.path
    timeline = engine.timeline(fps_in)
    threshold = engine.options.scene_threshold
    slots, pts, cuts = [], [], []
    prev, n = None, 0
    tb = src.time_base
    for t, rgb in src.timed:
        timeline.add(t)
        slots.extend(timeline.ready())
        pts.append(None if t is None or tb is None else int(t / tb))
        L = engine.prepare(_tensor(upright(rgb, turn)), n, src.size if not turn % 180 else src.size[::-1])
        if prev is not None and is_cut(prev, L, threshold) and scene_score(prev, L) > threshold + CUT_MARGIN:
            cuts.append(n - 1)
        prev, n = L, n + 1
    if n < 2 and engine.retime.temporal:
        raise MediaError(f"{source}: has {n} frame: interpolation needs at least 2 frames "
                         "(--factor 1 upscales a single frame)")
    timeline.close()
    slots.extend(timeline.ready())
    if None in pts or any(a >= b for a, b in zip(pts, pts[1:])):
        pts = [None] * n  # timestamps that cannot place a seek: each chunk counts frames from the start
    spans = split(n, cuts, chunk_frames)
    chunks = []
    for i, (span, (j0, j1)) in enumerate(zip(spans, assign(slots, spans))):
        chunks.append(Chunk(i, span.first, span.last, span.overlap, j0, j1,
                            [(s.k, f"{s.t.numerator}/{s.t.denominator}") for s in slots[j0:j1]],
                            pts[span.first:span.last + 1], span.last in cuts))
    time_base = timeline.time_base(src.time_base)  # the single run's
    return Plan(str(source), str(output), n, Fraction(fps_in), timeline.fps_out, [s.time for s in slots], chunks,
                turn, src.display_matrix, src.audio, time_base, src.size, cuts, timeline.repaired, src.error)


# -- reading a chunk's source frames: frame-accurate seeking with PyAV ----------------------------

def source_frames(path, first: int, last: int, pts: list) -> Iterator[np.ndarray]:
    """Source frames first..last (RGB uint8) of a video or an image folder. A video seeks to the
    keyframe at or before frame `first` and decodes forward to its timestamp; each frame's
    timestamp is checked against the plan, so a wrong seek can never shift a chunk."""
    path = Path(path)
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS), key=_natural_key)
        for p in files[first:last + 1]:
            yield _image_rgb(p)
        return
    known = all(p is not None for p in pts) and all(a < b for a, b in zip(pts, pts[1:]))
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        if first > 0 and known:
            c.seek(pts[0], stream=s, backward=True, any_frame=False)
        skip = 0 if known else first  # no usable timestamps: count frames from the start
        i = 0
        for f in c.decode(s):
            if known:
                if f.pts is None or f.pts < pts[0]:
                    continue
                if i == 0 and f.pts != pts[0]:  # the seek landed past the chunk's first frame
                    raise ChunkError(f"{path}: seeking to frame {first} (pts {pts[0]}) gave pts {f.pts}: "
                                     "remux the input (ffmpeg -i IN -c copy OUT.mkv) and rerun")
                if f.pts != pts[i]:
                    raise ChunkError(f"{path}: frame {first + i} has pts {f.pts}, the plan says {pts[i]}: "
                                     "the input changed since the plan: rerun with --overwrite")
            elif skip:
                skip -= 1
                continue
            yield f.to_ndarray(format="rgb24")
            i += 1
            if i == last - first + 1:
                return
    raise ChunkError(f"{path}: ended after {first + i} frames, the plan needs {last + 1}: the input changed "
                     "or is damaged: rerun with --overwrite")


# -- lossless chunk files ----------------------------------------------------------------------

class LosslessWriter:
    """RGB frames -> FFV1 in Matroska (packed RGB: exactly the uint8 frames), at a partial path
    renamed to `path` only by `commit`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial.mkv")
        self.container = av.open(str(self.partial), "w")
        self.stream = None
        self.count = 0

    def write(self, rgb: np.ndarray):
        if self.stream is None:
            self.stream = self.container.add_stream("ffv1", rate=25)
            self.stream.codec_context.time_base = Fraction(1, 25)
            self.stream.width, self.stream.height = rgb.shape[1], rgb.shape[0]
            self.stream.pix_fmt = "bgr0"  # RGB, 8 bits a channel: the uint8 frames exactly
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.count
        for p in self.stream.encode(frame):
            self.container.mux(p)
        self.count += 1

    def commit(self) -> dict:
        if self.stream is not None:
            for p in self.stream.encode():
                self.container.mux(p)
        self.container.close()
        info = {"file": self.path.name, "frames": count_frames(self.partial), "sha256": sha256(self.partial)}
        os.replace(self.partial, self.path)
        return info

    def discard(self):
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - closing a broken container on the way out
            pass
        self.partial.unlink(missing_ok=True)


def read_lossless(path) -> Iterator[np.ndarray]:
    with av.open(str(path)) as c:
        for f in c.decode(c.streams.video[0]):
            yield f.to_ndarray(format="rgb24")


def count_frames(path) -> int:
    """Frames in a chunk file by its packets (FFV1 is intra-only: one packet per frame)."""
    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size)


def sha256(path, block: int = 1 << 20) -> str:
    """Of a file, or of a folder's files (names and contents: a folder of PNG frames)."""
    h = hashlib.sha256()
    path = Path(path)
    for p in sorted(path.iterdir()) if path.is_dir() else [path]:
        if path.is_dir():
            h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(block):
                h.update(chunk)
    return h.hexdigest()


# -- the manifest: what is verifiably done -----------------------------------------------------

def job_key(plan: Plan, settings: dict) -> str:
    """What makes two runs the same job: the input file, the model and options, the plan."""
    st = Path(plan.source).stat()
    what = {"version": MANIFEST_VERSION, "source": str(Path(plan.source).resolve()), "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "settings": settings, "n_src": plan.n_src, "turn": plan.turn,
            "chunks": [(c.first, c.last, c.overlap, c.j0, c.j1, c.cut_after) for c in plan.chunks]}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


class Manifest:
    """`work/manifest.json`: the job's key, each finished chunk (file, frames, SHA-256) and, once
    stitched, the output's. Written by the driver only, atomically (a rename)."""

    def __init__(self, work: Path, plan: Plan):
        self.work, self.plan = Path(work), plan
        self.path = self.work / MANIFEST
        self.data = {"version": MANIFEST_VERSION, "key": plan.key, "source": plan.source, "output": plan.output,
                     "chunks": {}, "done": None, "precision": None}

    @classmethod
    def open(cls, work: Path, plan: Plan, overwrite: bool = False, precision: str | None = None) -> "Manifest":
        """The job's manifest, made or resumed; another job's is refused (or, with overwrite, replaced).
        `precision`: what every chunk of the job runs at (chunks made at another are not kept)."""
        m = cls(work, plan)
        m.data["precision"] = precision
        if m.path.exists():
            try:
                old = json.loads(m.path.read_text())
            except (OSError, ValueError) as e:
                old = {"key": f"unreadable ({e})"}
            if old.get("key") != plan.key and not overwrite:
                raise MediaError(f"{m.path}: holds another job's chunks (a different input, model or settings: "
                                 f"{old.get('source', '?')}): delete {work} or pass --overwrite to start over")
            if old.get("key") == plan.key and old.get("precision") in (None, precision):
                m.data = old | {"precision": precision}  # the same job: resume it (also with --overwrite)
        work.mkdir(parents=True, exist_ok=True)
        m.lock()
        for stale in work.glob(".*.partial.*"):  # what a killed run was writing
            stale.unlink(missing_ok=True)
        recorded = {entry["file"] for entry in m.data["chunks"].values()}
        for old_chunk in work.glob("chunk_*.mkv"):  # another job's, or renamed but never recorded
            if old_chunk.name not in recorded:
                old_chunk.unlink()
        m.save()
        return m

    def lock(self):
        """One command at a time on a job: a second one would render the same chunks (held until exit)."""
        import fcntl
        lock = open(self.work / ".lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise MediaError(f"{self.work}: another stvsr command is running this job: wait for it to finish "
                             "(or stop it), then rerun") from None
        _LOCKS.append(lock)

    def save(self):
        tmp = self.path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def verified(self, chunk: Chunk) -> bool:
        """A finished chunk: recorded, its file present with the recorded frame count and SHA-256."""
        entry = self.data["chunks"].get(str(chunk.index))
        path = self.work / chunk.name
        if not entry or not path.is_file():
            return False
        try:
            ok = entry["frames"] == chunk.frames == count_frames(path) and entry["sha256"] == sha256(path)
        except (av.FFmpegError, OSError, KeyError):
            ok = False
        if not ok:
            self.data["chunks"].pop(str(chunk.index), None)
            path.unlink(missing_ok=True)
            self.save()
        return ok

    def record(self, chunk: Chunk, info: dict):
        if info["frames"] != chunk.frames:
            raise ChunkError(f"{self.plan.source}: {chunk.label()} gave {info['frames']} frames, "
                             f"the plan says {chunk.frames}")
        self.data["chunks"][str(chunk.index)] = info | {"at": time.time()}
        self.save()

    def finished(self, output: Path) -> bool:
        """The output was stitched by this job and is unchanged since."""
        done = self.data.get("done")
        return bool(done) and output.exists() and sha256(output) == done["sha256"]

    def mark_done(self, output: Path, frames: int):
        self.data["done"] = {"frames": frames, "sha256": sha256(output)}
        self.data["stitching"] = False
        self.save()
        for c in self.plan.chunks:
            (self.work / c.name).unlink(missing_ok=True)


def stored_precision(work: Path) -> str | None:
    """The precision an earlier run of a job chose (its manifest), if any."""
    try:
        return json.loads((Path(work) / MANIFEST).read_text()).get("precision")
    except (OSError, ValueError, AttributeError):
        return None


def settings_of(opts, model_sha: str, device: str) -> dict:
    d = asdict(opts)
    d.pop("threads", None)  # how fast, not what
    d.pop("workers", None)
    return d | {"model_sha256": model_sha, "device": str(device)}
