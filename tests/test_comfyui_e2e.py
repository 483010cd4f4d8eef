"""End to end in a real ComfyUI, as on a fresh install: start it on an empty base directory with
this checkout as its only custom-node pack, then use the template browser's endpoints, queue
every workflows/api/*_api.json over HTTP and check the saved frames and videos.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout; COMFYUI_PYTHON is the interpreter
that runs it (default: this one). Where ComfyUI-VideoHelperSuite sits in COMFYUI_PATH's
custom_nodes (or VHS_PATH names it), it is loaded too and its nodes are tested with ours.
Only loopback traffic.
"""
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import av
import numpy as np
import pytest
from PIL import Image

from helpers import DEMO, ROOT, real_frames, write_video

COMFY = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFY, reason="set COMFYUI_PATH to a ComfyUI checkout to run this")
VHS = os.environ.get("VHS_PATH") or (COMFY and os.path.join(COMFY, "custom_nodes", "ComfyUI-VideoHelperSuite"))

# workflow -> {filename_prefix: (frame count, (width, height))}; 8 input frames at 640x272
EXPECTED = {
    "stvsr_upsample": {"stvsr/upsample": (15, (1280, 544))},
    "stvsr_triple_rate": {"stvsr/triple_rate": (22, (1280, 544))},  # multiplier 3: (8 - 1) * 3 + 1
    "stvsr_dual_stream": {"stvsr/dual_stream": (15, (1280, 544)), "stvsr/mask_st": (7, (1280, 544)),
                          "stvsr/mask_ts": (7, (1280, 544))},
}
CLIP_20FPS = "bikes_20fps.mp4"  # 12 frames of the demo clip at 20 fps, written into the input folder
SHIPPED_X4 = "stvsr-fast-x4"  # trained 4x model, tested when stvsr_core/weights has it
X4_CONFIG = {"scale": 4, "spatial": {"arch": "unshuffle_sr", "channels": 16, "blocks": 1},
             "temporal": {"arch": "dis", "preset": "ultrafast", "high_res_flow": "upsample"},
             "fusion": {"preset": "lite"}, "refine": {"preset": "lite"}}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, raw=False):
    with urllib.request.urlopen(url, timeout=10) as r:
        return (r.headers.get("Content-Type"), r.read()) if raw else json.loads(r.read())


def _post(url, data):
    req = urllib.request.Request(url, json.dumps(data).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy")  # a fresh install: no input, models or user folders yet
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "stvsr").symlink_to(ROOT, target_is_directory=True)
    if VHS and os.path.isdir(VHS):
        (base / "custom_nodes" / "ComfyUI-VideoHelperSuite").symlink_to(VHS, target_is_directory=True)
    port = _port()
    log = open(base / "comfyui.log", "w")
    proc = subprocess.Popen(
        [os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu", "--listen", "127.0.0.1",
         "--port", str(port), "--base-directory", str(base)],
        cwd=COMFY, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited: {(base / 'comfyui.log').read_text()[-3000:]}")
            try:
                _get(url + "/system_stats")
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("ComfyUI did not answer within 180 s")
        yield url, base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _run_prompt(url, prompt, expect="success"):
    """Queue an API-format prompt, wait until the queue is empty (meta batches requeue it) and
    return the status of each prompt it ran; all must have `expect`."""
    before = set(_get(url + "/history"))
    _post(url + "/prompt", {"prompt": prompt, "client_id": "stvsr-test"})
    for _ in range(900):
        time.sleep(1)
        queue = _get(url + "/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            break
    hist = _get(url + "/history")
    statuses = [hist[k]["status"] for k in set(hist) - before]
    assert statuses and all(s["status_str"] == expect for s in statuses), json.dumps(statuses)[-3000:]
    return statuses


def _error(status) -> str:
    return next(m[1]["exception_message"] for m in status["messages"] if m[0] == "execution_error")


def _loader(n, file="bikes_short.mp4", model="stvsr-fast", device="cpu"):
    """The loader chain of workflows/api/stvsr_upsample_api.json, cut to n frames."""
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": file}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "ImageFromBatch", "inputs": {"batch_index": 0, "length": n, "image": ["2", 0]}},
        "4": {"class_type": "LoadSTVSRModel", "inputs": {"model_name": model, "device": device, "precision": "auto"}},
    }


UPSAMPLE = {"scene_threshold": 0.15, "tile": 0, "exact_double": False, "stvsr_model": ["4", 0]}


def _pngs(base, prefix):
    files = sorted((base / "output").glob(prefix + "_*.png"))
    return files, [np.asarray(Image.open(f)) for f in files]


def _video(base, prefix):
    (path,) = (base / "output").glob(prefix + "*.mp4")
    with av.open(str(path)) as c:
        rate = c.streams.video[0].average_rate
        return float(rate), sum(1 for _ in c.decode(video=0))


def test_fresh_install_loads_the_pack(server):
    url, base = server
    info = _get(url + "/object_info/STVSRUpsample")
    assert "STVSRUpsample" in info
    models = _get(url + "/object_info/LoadSTVSRModel")["LoadSTVSRModel"]["input"]["required"]["model_name"][0]
    assert "stvsr-lite" in models and "stvsr-fast" in models
    log = (base / "comfyui.log").read_text()
    # only this pack's import: ComfyUI's own optional nodes (audio without torchaudio) may fail
    failed = [line for line in log.splitlines() if "IMPORT FAILED" in line or "Cannot import" in line]
    assert not [line for line in failed if "stvsr" in line], failed
    assert (base / "models" / "stvsr").is_dir()  # where users put their own .safetensors
    assert (base / "input" / DEMO.name).read_bytes() == DEMO.read_bytes()  # what the templates load
    assert "multiplier" in info["STVSRUpsample"]["output_tooltips"][1]
    optional = info["STVSRUpsample"]["input"]["optional"]
    assert optional["multiplier"][1]["default"] == 2 and optional["multiplier"][1]["min"] == 1
    assert optional["target_fps"][1]["default"] == 0 and optional["upscale"][1]["default"] is True


def test_template_browser_lists_ui_templates_with_thumbnails(server):
    url, _ = server
    assert sorted(_get(url + "/workflow_templates")["stvsr"]) == sorted(EXPECTED)  # no *_api twins
    for name in EXPECTED:
        assert "nodes" in _get(f"{url}/api/workflow_templates/stvsr/{name}.json")  # UI format opens
        kind, jpg = _get(f"{url}/api/workflow_templates/stvsr/{name}.jpg", raw=True)
        assert kind == "image/jpeg" and jpg == (ROOT / "example_workflows" / f"{name}.jpg").read_bytes()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_template_runs_on_a_fresh_install(server, name):
    """The first Run of each shipped template, with nothing copied by hand; its thumbnail is its output."""
    url, base = server
    prompt = json.loads((ROOT / "workflows" / "api" / f"{name}_api.json").read_text())
    _run_prompt(url, prompt)
    middle = []
    for prefix, (count, size) in EXPECTED[name].items():
        files, frames = _pngs(base, prefix)
        assert len(files) == count, prefix
        assert all(Image.open(f).size == size for f in files)
        if "mask" not in prefix:  # the shipped model's masks are near-constant (see docs/MODELS.md)
            assert any(not np.array_equal(frames[0], f) for f in frames[1:]), f"{prefix}: all frames equal"
        middle.append(Image.open(files[len(files) // 2]))
    spec = importlib.util.spec_from_file_location("make_thumbnails", ROOT / "tools" / "make_thumbnails.py")
    thumbs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(thumbs)
    made = np.asarray(thumbs.thumbnail(middle), dtype=float)
    shipped = np.asarray(Image.open(ROOT / "example_workflows" / f"{name}.jpg"), dtype=float)
    assert 10 * np.log10(255 ** 2 / np.mean((made - shipped) ** 2)) > 30  # dB: JPEG's loss only


@pytest.fixture(scope="module")
def clip_20fps(server):
    _, base = server
    frames = [(f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for f in real_frames(count=12)]
    write_video(base / "input" / CLIP_20FPS, frames, fps=20)
    return CLIP_20FPS


def test_frame_rate_doubles_the_sources_or_is_asked_for(server, clip_20fps):
    """A 20 fps clip comes out at 40 fps; with no rate wired the node says so (it used to write 50)."""
    url, base = server
    save = {"7": {"class_type": "CreateVideo", "inputs": {"images": ["5", 0], "fps": ["5", 1]}},
            "8": {"class_type": "SaveVideo", "inputs": {"video": ["7", 0], "filename_prefix": "video/rate",
                                                        "format": "auto", "codec": "auto"}}}
    wired = dict(_loader(4, clip_20fps), **save, **{"5": {"class_type": "STVSRUpsample", "inputs": dict(
        UPSAMPLE, images=["3", 0], frame_rate=["2", 2])}})
    _run_prompt(url, wired)
    assert _video(base, "video/rate") == (40.0, 7)
    unwired = dict(wired, **{"5": {"class_type": "STVSRUpsample", "inputs": dict(UPSAMPLE, images=["3", 0])}},
                   **{"8": dict(save["8"], inputs=dict(save["8"]["inputs"], filename_prefix="video/norate"))})
    (status,) = _run_prompt(url, unwired, expect="error")
    assert "the input's frame rate is unknown" in _error(status)


@pytest.mark.parametrize("retime, expect", [
    ({"multiplier": 3}, (60.0, 10)),             # 20 fps x3; (4 - 1) * 3 + 1 frames
    ({"target_fps": 50.0}, (50.0, 8)),           # 5 frames per 2: floor(3 * 5/2) + 1
    ({"multiplier": 1}, (20.0, 4)),              # spatial-only
])
def test_frame_rate_follows_multiplier_and_target(server, clip_20fps, retime, expect):
    url, base = server
    prefix = "video/retime_" + "_".join(f"{k}{v:g}" for k, v in retime.items())
    prompt = dict(_loader(4, clip_20fps), **{
        "5": {"class_type": "STVSRUpsample", "inputs": dict(UPSAMPLE, images=["3", 0], frame_rate=["2", 2],
                                                           **retime)},
        "7": {"class_type": "CreateVideo", "inputs": {"images": ["5", 0], "fps": ["5", 1]}},
        "8": {"class_type": "SaveVideo", "inputs": {"video": ["7", 0], "filename_prefix": prefix,
                                                    "format": "auto", "codec": "auto"}}})
    _run_prompt(url, prompt)
    assert _video(base, prefix) == expect


@pytest.fixture(scope="module")
def x4_model(server):
    """The shipped 4x model by name where stvsr_core/weights has it, else an untrained 4x model
    written by the test into the server's models/stvsr folder (as a user would add one)."""
    _, base = server
    if (ROOT / "stvsr_core" / "weights" / f"{SHIPPED_X4}.safetensors").is_file():  # what the pack ships
        return SHIPPED_X4
    from helpers import random_model
    from stvsr_core import save_weights
    save_weights(random_model(X4_CONFIG), base / "models" / "stvsr" / "random_x4.safetensors")
    return "random_x4.safetensors"


def test_x4_model_through_every_node(server, x4_model):
    """A 4x model in the real server: Spatial Upscale, Dual-Stream -> Fuse -> Refine -> Interleave
    and STVSR Upsample at multiplier 3 all give 4x frames (3 input frames shrunk to 160x68)."""
    url, base = server
    models = _get(url + "/object_info/LoadSTVSRModel")["LoadSTVSRModel"]["input"]["required"]["model_name"][0]
    assert x4_model in models
    m, low = ["4", 0], ["9", 0]
    prompt = dict(_loader(3, model=x4_model), **{
        "9": {"class_type": "ImageScale", "inputs": {"image": ["3", 0], "upscale_method": "area", "width": 160,
                                                     "height": 68, "crop": "disabled"}},
        "10": {"class_type": "STVSRSpatialUpscale", "inputs": {"stvsr_model": m, "images": low, "tile": 0}},
        "11": {"class_type": "STVSRDualStreamUpsample", "inputs": {"stvsr_model": m, "images": low, "tile": 0}},
        "12": {"class_type": "STVSRFuseStreams", "inputs": {"stvsr_model": m, "H_st": ["11", 1], "H_ts": ["11", 2],
                                                            "cue": ["11", 3]}},
        "13": {"class_type": "STVSRRefine", "inputs": {"stvsr_model": m, "images": ["12", 0]}},
        "14": {"class_type": "STVSRInterleave", "inputs": {"frames": ["11", 0], "in_between": ["13", 0],
                                                           "source": low, "scene_threshold": 0.15}},
        "5": {"class_type": "STVSRUpsample", "inputs": dict(UPSAMPLE, images=low, frame_rate=["2", 2],
                                                           multiplier=3)},
        **{str(20 + i): {"class_type": "SaveImage", "inputs": {"filename_prefix": f"stvsr/x4_{name}",
                                                               "images": [src, 0]}}
           for i, (name, src) in enumerate((("spatial", "10"), ("chain", "14"), ("upsample", "5")))}})
    _run_prompt(url, prompt)
    for name, count in (("spatial", 3), ("chain", 5), ("upsample", 7)):
        files, _ = _pngs(base, f"stvsr/x4_{name}")
        assert len(files) == count, name
        assert all(Image.open(f).size == (640, 272) for f in files), name


def test_cuda_on_a_machine_without_cuda_is_refused_clearly(server):
    url, _ = server
    if any(d["type"] == "cuda" for d in _get(url + "/system_stats")["devices"]):
        pytest.skip("this machine has CUDA")
    prompt = dict(_loader(2, device="cuda"), **{
        "5": {"class_type": "STVSRUpsample", "inputs": dict(UPSAMPLE, images=["3", 0], frame_rate=["2", 2])},
        "6": {"class_type": "SaveImage", "inputs": {"filename_prefix": "stvsr/cuda", "images": ["5", 0]}}})
    (status,) = _run_prompt(url, prompt, expect="error")
    assert "no CUDA device" in _error(status) and "set device to auto" in _error(status)


def test_quality_model_with_upscale_input(server):
    """stvsr-quality (SPAN + RIFE) on the CPU in the real server; optional UPSCALE_MODEL input declared."""
    url, base = server
    for node in ("LoadSTVSRModel", "STVSRDualStreamUpsample"):
        spec = _get(f"{url}/object_info/{node}")[node]["input"]
        assert spec.get("optional", {}).get("upscale_model", [None])[0] == "UPSCALE_MODEL", node
    assert "stvsr-quality" in _get(url + "/object_info/LoadSTVSRModel")["LoadSTVSRModel"]["input"][
        "required"]["model_name"][0]
    n = 3
    prompt = dict(_loader(n, model="stvsr-quality"), **{
        "5": {"class_type": "STVSRUpsample", "inputs": dict(UPSAMPLE, images=["3", 0], frame_rate=["2", 2])},
        "6": {"class_type": "SaveImage", "inputs": {"filename_prefix": "stvsr/quality", "images": ["5", 0]}}})
    _run_prompt(url, prompt)
    files, frames = _pngs(base, "stvsr/quality")
    assert len(files) == 2 * n - 1
    assert all(Image.open(f).size == (1280, 544) for f in files)
    assert any(not np.array_equal(frames[0], f) for f in frames[1:]), "all frames equal"


@pytest.fixture(scope="module")
def vhs(server):
    url, _ = server
    if "VHS_LoadVideo" not in _get(url + "/object_info"):
        pytest.skip("ComfyUI-VideoHelperSuite is not in COMFYUI_PATH/custom_nodes (or VHS_PATH)")


def _vhs_graph(file, prefix, meta_batch=None, multiplier=2):
    """VHS Load Video -> STVSR Upsample (rate from video_info) -> VHS Video Combine and Save Image."""
    batch = {"meta_batch": ["10", 0]} if meta_batch else {}
    graph = {
        "1": {"class_type": "VHS_LoadVideo", "inputs": dict(
            video=file, force_rate=0, custom_width=0, custom_height=0, frame_load_cap=0, skip_first_frames=0,
            select_every_nth=1, format="AnimateDiff", **batch)},
        "4": _loader(1)["4"],
        "5": {"class_type": "STVSRUpsample", "inputs": dict(UPSAMPLE, images=["1", 0], video_info=["1", 3],
                                                           multiplier=multiplier, **batch)},
        "6": {"class_type": "SaveImage", "inputs": {"filename_prefix": f"stvsr/{prefix}", "images": ["5", 0]}},
        "7": {"class_type": "VHS_VideoCombine", "inputs": dict(
            images=["5", 0], frame_rate=["5", 1], loop_count=0, filename_prefix=f"video/{prefix}",
            format="video/h264-mp4", pingpong=False, save_output=True, **batch)},
    }
    if meta_batch:
        graph["10"] = {"class_type": "VHS_BatchManager", "inputs": {"frames_per_batch": meta_batch}}
    return graph


def test_vhs_video_info_gives_the_rate_and_meta_batches_the_same_frames(server, vhs, clip_20fps):
    """Items 8 and 11 with VideoHelperSuite: its video info gives the rate; its Meta Batch Manager
    feeds 12 frames as 5 + 5 + 2 (one requeued prompt each) and the result is the frames of one run."""
    url, base = server
    _run_prompt(url, _vhs_graph(clip_20fps, "vhs_whole"))
    assert _video(base, "video/vhs_whole") == (40.0, 23)
    statuses = _run_prompt(url, _vhs_graph(clip_20fps, "vhs_batched", meta_batch=5))
    assert len(statuses) == 3
    assert _video(base, "video/vhs_batched") == (40.0, 23)
    (_, whole), (_, batched) = _pngs(base, "stvsr/vhs_whole"), _pngs(base, "stvsr/vhs_batched")
    assert len(batched) == len(whole) == 23
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(whole, batched)) <= 1


def test_vhs_meta_batches_at_multiplier_3_give_the_frames_of_one_run(server, vhs, clip_20fps):
    """12 frames at multiplier 3 as 5 + 5 + 2: 34 frames at 60 fps, those of one run."""
    url, base = server
    _run_prompt(url, _vhs_graph(clip_20fps, "vhs3_whole", multiplier=3))
    assert _video(base, "video/vhs3_whole") == (60.0, 34)
    statuses = _run_prompt(url, _vhs_graph(clip_20fps, "vhs3_batched", meta_batch=5, multiplier=3))
    assert len(statuses) == 3
    assert _video(base, "video/vhs3_batched") == (60.0, 34)
    (_, whole), (_, batched) = _pngs(base, "stvsr/vhs3_whole"), _pngs(base, "stvsr/vhs3_batched")
    assert len(batched) == len(whole) == 34
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(whole, batched)) <= 1
