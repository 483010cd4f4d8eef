"""Reading and writing clips with PyAV (video files) and Pillow (folders of images).

Writers are atomic: output goes to a hidden partial file and is renamed only on success,
so a failed run never leaves a half-written video or folder behind.
"""
from __future__ import annotations

import logging
import math
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from av.video.stream import VideoStream
from PIL import Image

log = logging.getLogger("stvsr")

# the real clip shipped with the package: the default input of `stvsr upsample` and `stvsr bench`
DEMO_CLIP = Path(__file__).parent / "assets" / "bikes_short.mp4"
DEFAULT_FPS = Fraction(25)  # for image folders and streams that state no rate

VIDEO_EXTS = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".y4m", ".flv"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
ENCODERS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264",
            ".webm": "libvpx-vp9", ".avi": "mpeg4"}
# containers whose muxer writes a display matrix (AVI drops it, a folder of PNGs has none), where
# this PyAV can set one (VideoStream.set_display_matrix came in PyAV 17.1)
KEEPS_ROTATION = {".mp4", ".m4v", ".mov", ".mkv", ".webm"} if hasattr(VideoStream, "set_display_matrix") else set()
# containers that store one frame rate instead of a timestamp per frame
CONSTANT_RATE = {".avi"}


class MediaError(ValueError):
    """An input that cannot be read or an output that cannot be written, with the fix."""


@dataclass
class Source:
    path: Path
    timed: Iterator[tuple[Fraction | None, np.ndarray]]  # (time in s, or None; [H, W, 3] uint8 RGB)
    count: int | None
    fps: Fraction | None
    size: tuple[int, int]          # (height, width), as stored
    audio: bool = False
    display_matrix: bytes | None = None  # FFmpeg's 3x3 int32 orientation matrix (phone video)
    time_base: Fraction | None = None  # unit of the stream's timestamps
    variable_rate: bool = False    # the average rate differs from the stream's stated rate (phone video)
    error: str | None = None       # set when decoding stopped short of the end the header announced

    @property
    def frames(self) -> Iterator[np.ndarray]:
        return (rgb for _, rgb in self.timed)

    @property
    def rotation(self) -> int:
        """Counter-clockwise degrees that show the stored frames upright (av_display_rotation_get)."""
        if self.display_matrix is None:
            return 0
        a, b, _, c, d, *_ = struct.unpack("=9i", self.display_matrix)
        return round(-math.degrees(math.atan2(b / math.hypot(b, d), a / math.hypot(a, c)))) % 360

    @property
    def mirrored(self) -> bool:
        """A display matrix with a flip (negative determinant), which `upright` cannot apply."""
        if self.display_matrix is None:
            return False
        a, b, _, c, d, *_ = struct.unpack("=9i", self.display_matrix)
        return a * d - b * c < 0


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation to the pixels, for outputs that cannot store it as metadata."""
    return np.ascontiguousarray(np.rot90(rgb, rotation // 90)) if rotation % 360 else rgb


def _natural_key(p: Path):
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]


def _image_rgb(p: Path) -> np.ndarray:
    try:
        img = Image.open(p)
        img.load()
    except Exception as e:  # Pillow raises many types for bad files
        raise MediaError(f"{p}: cannot decode image ({e})") from None
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise MediaError(f"{p}: {img.mode} ({'16-bit' if '16' in img.mode else '32-bit'}) images are not "
                         "supported: convert the frames to 8-bit RGB first")
    if img.mode not in ("RGB", "L", "P", "RGBA", "LA", "CMYK", "YCbCr"):
        raise MediaError(f"{p}: pixel format {img.mode} is not supported: convert the frames to 8-bit RGB")
    return np.array(img.convert("RGB"))


def _read_folder(path: Path) -> Source:
    files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS), key=_natural_key)
    if not files:
        raise MediaError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_EXTS))})")
    first = _image_rgb(files[0])

    def gen():
        yield None, first
        for p in files[1:]:
            yield None, _image_rgb(p)

    return Source(path, gen(), len(files), None, first.shape[:2])


def _read_video(path: Path) -> Source:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise MediaError(f"{path}: cannot open as a video ({e})") from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fmt = stream.codec_context.pix_fmt
    decoded = container.decode(stream)

    def to_rgb(frame) -> np.ndarray:
        try:
            return frame.to_ndarray(format="rgb24")
        except (av.FFmpegError, ValueError) as e:
            raise MediaError(f"{path}: pixel format {frame.format.name} is not supported ({e}): "
                             "convert it, e.g. ffmpeg -i IN -pix_fmt yuv420p OUT") from None

    try:
        first_frame = next(decoded)
        first = to_rgb(first_frame)
    except StopIteration:
        container.close()
        raise MediaError(f"{path}: the video stream has no decodable frames") from None
    except av.FFmpegError as e:
        container.close()
        raise MediaError(f"{path}: cannot decode video ({e})") from None
    log.debug("%s: %s, %s", path, stream.codec_context.name, fmt)
    tb = Fraction(stream.time_base)  # PyAV 19 returns its own AVRational
    time = lambda f: None if f.pts is None else f.pts * tb
    fps = stream.average_rate or stream.guessed_rate
    period = 1 / Fraction(fps if fps else DEFAULT_FPS)

    def gen():
        """Frames until the stream ends; a file cut short (a failed download) ends the clip there
        with `error` set, so what was decoded is still written."""
        f, n = first_frame, 1
        try:
            yield time(f), first
            for f in decoded:
                n += 1
                yield time(f), to_rgb(f)
        except av.FFmpegError as e:
            src.error = f"decoding failed after frame {n} ({e})"
        else:
            end, slack = _announced_end(container, stream, period)
            duration = getattr(f, "duration", None)  # PyAV 14 has no frame durations
            last = (time(f) or 0) + (duration * tb if duration else period)
            if end is not None and f.pts is not None and last < end - slack:
                src.error = f"the video ends at {float(last):.2f} s of {float(end):.2f} s announced"
        finally:
            container.close()

    matrix = first_frame.side_data.get(SideDataType.DISPLAYMATRIX)
    src = Source(path, gen(), stream.frames or None, Fraction(fps) if fps else None, first.shape[:2],
                 audio=bool(container.streams.audio), display_matrix=bytes(matrix) if matrix else None,
                 time_base=tb, variable_rate=bool(fps and stream.guessed_rate and fps != stream.guessed_rate))
    return src


def _announced_end(container, stream, period: Fraction) -> tuple[Fraction | None, Fraction]:
    """Where the header says the video ends (s), and how far short of it still counts as complete:
    one frame for the stream's own duration (an edit list may hide a frame or two), a second for the
    container's, which other streams (audio) may outlast the video by."""
    if stream.duration:
        return ((stream.start_time or 0) + stream.duration) * Fraction(stream.time_base), period
    tag = stream.metadata.get("DURATION", "")  # Matroska's end time of the stream, e.g. 00:00:02.360000000
    if re.fullmatch(r"\d+:\d\d:\d\d(\.\d+)?", tag):
        h, m, sec = tag.split(":")
        return Fraction(int(h) * 3600 + int(m) * 60) + Fraction(sec), period
    if container.duration:
        return Fraction((container.start_time or 0) + container.duration, av.time_base), max(period, Fraction(1))
    return None, period


def read_frames(path: str | os.PathLike) -> Source:
    """A video file or a folder of images -> frames as uint8 RGB arrays."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_folder(path)
    if path.suffix.lower() in IMAGE_EXTS:
        raise MediaError(f"{path}: a single image is not a clip: pass a folder of frames or a video")
    return _read_video(path)


class _Writer:
    """Base: a partial path renamed to the final one on success, removed on failure."""

    def __init__(self, path: Path, overwrite: bool):
        self.path = path
        if path.exists() and not overwrite:
            raise MediaError(f"{path}: already exists: choose another output or pass --overwrite")
        if not path.parent.is_dir():
            raise MediaError(f"{path.parent}: output folder does not exist")
        self.partial = path.with_name(f".{path.name}.partial{path.suffix}")
        self.count = 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self._close(ok=exc_type is None)
        except Exception:
            self._discard()
            raise
        if exc_type is None:
            if self.path.is_dir():
                shutil.rmtree(self.path)
            elif self.path.exists():
                self.path.unlink()
            os.replace(self.partial, self.path)
        else:
            self._discard()
        return False

    def _discard(self):
        if self.partial.is_dir():
            shutil.rmtree(self.partial, ignore_errors=True)
        elif self.partial.exists():
            self.partial.unlink()


class PngFolderWriter(_Writer):
    def __init__(self, path: Path, overwrite: bool = False):
        super().__init__(path, overwrite)
        self._discard()
        self.partial.mkdir()

    def write(self, rgb: np.ndarray, time: Fraction | None = None):
        Image.fromarray(rgb).save(self.partial / f"{self.count:06d}.png", compress_level=1)
        self.count += 1

    def _close(self, ok: bool):
        pass


class VideoWriter(_Writer):
    """Encodes RGB frames at their times (seconds) in `time_base`; copies the audio of `audio_from`
    when the container accepts it, and writes `display_matrix` (the input's orientation) when given."""

    def __init__(self, path: Path, fps: Fraction, overwrite: bool = False, audio_from: Path | None = None,
                 crf: int = 17, display_matrix: bytes | None = None, time_base: Fraction | None = None):
        super().__init__(path, overwrite)
        ext = path.suffix.lower()
        if ext not in ENCODERS:
            raise MediaError(f"{path}: unsupported output container {ext!r}: use one of "
                             f"{', '.join(sorted(ENCODERS))} or a folder name for PNGs")
        self.fps, self.audio_from, self.crf, self.codec = fps, audio_from, crf, ENCODERS[ext]
        self.display_matrix = display_matrix
        self.constant = ext in CONSTANT_RATE
        if self.constant:  # one rate for the whole file; MPEG-4 allows time-base denominators up to 65535
            self.fps = fps.limit_denominator(1001)
        self.time_base = 1 / self.fps if self.constant or time_base is None else time_base
        self._t0 = None
        self.container = av.open(str(self.partial), "w")
        self.stream = None

    def _open_stream(self, h: int, w: int):
        """Video and audio streams must both exist before the first packet is written."""
        s = self.container.add_stream(self.codec, rate=self.fps)
        s.codec_context.time_base = s.time_base = self.time_base
        s.width, s.height = w, h
        s.pix_fmt = "yuv420p"
        if self.display_matrix is not None:
            s.set_display_matrix(struct.unpack("=9i", self.display_matrix))
        if self.codec in ("libx264", "libvpx-vp9"):
            s.options = {"crf": str(self.crf)} | ({"b": "0"} if self.codec == "libvpx-vp9" else {})
        self.stream = s
        self._audio = None
        if self.audio_from is not None:
            src = av.open(str(self.audio_from))
            a_in = src.streams.audio[0] if src.streams.audio else None
            try:
                if a_in is not None:
                    self._audio = (src, a_in, self.container.add_stream_from_template(a_in))
            except (av.FFmpegError, ValueError) as e:
                log.warning("audio not copied: %s cannot hold %s audio (%s); use .mkv to keep it",
                            self.path.suffix, a_in.codec_context.name, e)
            if self._audio is None:
                src.close()

    def _pts(self, time: Fraction | None) -> int:
        """`time` in the time base; in a constant-rate container the frame's index, refused when
        that would show the frame over half a period away from its time."""
        if time is None:
            return self.count
        if not self.constant:
            return round(time / self.time_base)
        self._t0 = time if self._t0 is None else self._t0
        if abs(time - self._t0 - self.count / self.fps) > 1 / (2 * self.fps):
            raise MediaError(f"{self.path}: the input has a variable frame rate, which {self.path.suffix} "
                             "cannot store: write .mkv, .mp4 or .mov to keep its timing")
        return self.count

    def write(self, rgb: np.ndarray, time: Fraction | None = None):
        pts = self._pts(time)
        if self.stream is None:
            self._open_stream(*rgb.shape[:2])
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts, frame.time_base = pts, self.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.count += 1

    def _copy_audio(self):
        src, a_in, a_out = self._audio
        for packet in src.demux(a_in):
            if packet.dts is None:
                continue
            packet.stream = a_out
            self.container.mux(packet)

    def _close(self, ok: bool):
        try:
            if ok and self.stream is not None:
                for packet in self.stream.encode():
                    self.container.mux(packet)
                if self._audio is not None:
                    self._copy_audio()
        finally:
            if self.stream is not None and self._audio is not None:
                self._audio[0].close()
            self.container.close()


def png_output(path: str | os.PathLike) -> bool:
    """A folder of PNGs is an existing folder or a name without an extension; anything else names a video."""
    path = Path(path)
    return path.is_dir() or not path.suffix


def check_output(path: str | os.PathLike, source: str | os.PathLike, overwrite: bool = False) -> None:
    """Every check on OUTPUT that can fail, made before decoding or loading a model, so a run
    never spends its compute and then fails on the name, nor replaces its own input."""
    path = Path(path)
    if not png_output(path) and path.suffix.lower() not in ENCODERS:
        raise MediaError(f"{path}: unknown output extension {path.suffix!r}: use {', '.join(sorted(ENCODERS))} "
                         "for a video, or a name without an extension for a folder of PNGs")
    out, src = path.resolve(), Path(source).resolve()
    if out == src or (path.exists() and src.exists() and path.samefile(src)):
        raise MediaError(f"{path}: is the input: choose another output")
    if out in src.parents:
        raise MediaError(f"{path}: holds the input {source}: choose another output")
    if path.exists() and not overwrite:
        raise MediaError(f"{path}: already exists: choose another output or pass --overwrite")
    if path.is_dir() and any(p.suffix.lower() != ".png" for p in path.iterdir()):
        raise MediaError(f"{path}: holds more than PNG frames, which --overwrite would delete: choose another output")
    if not path.parent.is_dir():
        raise MediaError(f"{path.parent}: output folder does not exist: create it or choose another")
    try:
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as e:
        raise MediaError(f"{path.parent}: cannot write there ({e.strerror}): choose another output folder") from None


def keeps_rotation(path: str | os.PathLike) -> bool:
    """Whether an output at `path` stores a display matrix (else the rotation is applied to the frames)."""
    path = Path(path)
    return not path.is_dir() and path.suffix.lower() in KEEPS_ROTATION


def open_writer(path: str | os.PathLike, fps: Fraction, overwrite: bool = False,
                audio_from: Path | None = None, display_matrix: bytes | None = None,
                time_base: Fraction | None = None):
    """A video file by extension, or a folder of PNGs (`png_output`)."""
    path = Path(path)
    if png_output(path):
        return PngFolderWriter(path, overwrite)
    return VideoWriter(path, fps, overwrite, audio_from, display_matrix=display_matrix, time_base=time_base)
