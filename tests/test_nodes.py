"""The ComfyUI node pack, called directly as ComfyUI would (ComfyUI itself is not on PyPI).

The repository root is loaded as a package the way ComfyUI loads a custom-node folder.
"""
import importlib.util
import json
import sys
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from helpers import DEMO, ROOT, real_frames


def _load_pack():
    if "stvsr_pack" in sys.modules:
        return sys.modules["stvsr_pack"]
    spec = importlib.util.spec_from_file_location("stvsr_pack", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["stvsr_pack"] = mod
    spec.loader.exec_module(mod)
    return mod


pack = _load_pack()
N = pack.NODE_CLASS_MAPPINGS
nodes_mod = sys.modules["stvsr_pack.nodes.stvsr_nodes"]
host = sys.modules["stvsr_pack.nodes.host"]
InputError = sys.modules["stvsr_pack.stvsr_core"].InputError
WeightsError = sys.modules["stvsr_pack.stvsr_core"].WeightsError


def _call(name, *args, **kw):
    node = N[name]()
    return getattr(node, node.FUNCTION)(*args, **kw)


def _images(start, count, size=None, crop=None):
    f = torch.stack(real_frames(start=start, count=count, size=size))
    if crop:
        f = f[..., : crop[0], : crop[1]]
    return f.movedim(1, -1).contiguous()  # IMAGE [B, H, W, 3]


@pytest.fixture(scope="module")
def model():
    return _call("LoadSTVSRModel", "stvsr-lite", "cpu", "fp32")[0]


def test_mappings_and_node_declarations():
    assert set(N) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    for name, cls in N.items():
        spec = cls.INPUT_TYPES()
        assert "required" in spec and cls.CATEGORY == "video/stvsr"
        assert hasattr(cls, cls.FUNCTION) and isinstance(cls.RETURN_TYPES, tuple)
        for opts in spec["required"].values():
            assert isinstance(opts, tuple)
    assert "stvsr-lite" in N["LoadSTVSRModel"].INPUT_TYPES()["required"]["model_name"][0]
    assert "ComfyUI" not in " ".join(pack.NODE_DISPLAY_NAME_MAPPINGS.values())


@pytest.mark.parametrize("name", ["stvsr-lite", "stvsr-fast-v2"])
def test_separate_nodes_in_paper_order_equal_all_in_one(name):
    """Dual-Stream -> Fuse -> Refine -> Interleave gives the all-in-one node's frames, cut included;
    stvsr-fast-v2's F also reads the cue output (DIS's warp error), stvsr-lite's has none (zeros)."""
    model = _call("LoadSTVSRModel", name, "cpu", "fp32")[0]
    images = _images(start=6, count=5, size=(320, 136), crop=(128, 320))  # low-res 320x128, a cut after frame 3
    up, H_st, H_ts, cue = _call("STVSRDualStreamUpsample", model, images)
    assert cue.shape == H_st.shape[:3]
    assert (cue.abs().max() > 0) == model.model.info.needs_cue
    if model.model.info.needs_cue:
        with pytest.raises(InputError, match="connect Dual-Stream Upsample's cue output"):
            _call("STVSRFuseStreams", model, H_st, H_ts)
        with pytest.raises(InputError, match="the cue is"):
            _call("STVSRFuseStreams", model, H_st, H_ts, cue=cue[:, :10])
    H_F, M_st, M_ts = _call("STVSRFuseStreams", model, H_st, H_ts, cue=cue)
    H_R = _call("STVSRRefine", model, H_F)[0]
    separate = _call("STVSRInterleave", up, H_R, source=images)[0]
    together, fps = _call("STVSRUpsample", model, images, frame_rate=23.976)
    assert together.shape == separate.shape == (9, 256, 640, 3) and together.dtype == torch.float32
    # the same frames: float rounding (1e-7) can flip a pixel of DIS's 8-bit luma input, which moves
    # a flow vector a little, so "equal" means within one 8-bit level, and equal on average
    diff = (together - separate).abs()
    assert diff.max() < 1 / 255 and diff.mean() < 1e-5
    assert torch.equal(together[7], together[6])  # the cut: earlier frame repeated
    assert fps == 48000 / 1001  # 23.976 typed is NTSC's 24000/1001, doubled
    assert M_st.shape == (4, 256, 640) and 0 <= M_st.min() and M_ts.max() <= 1


def test_spatial_and_temporal_nodes(model):
    images = _images(start=30, count=3, size=(160, 68))
    up = _call("STVSRSpatialUpscale", model, images)[0]
    assert up.shape == (3, 136, 320, 3)
    mid = _call("STVSRFrameInterpolate", model, images)[0]
    assert mid.shape == (5, 68, 160, 3)
    assert torch.equal(mid[0::2], images) and not torch.equal(mid[1], mid[0])
    cut = _call("STVSRFrameInterpolate", model, _images(start=8, count=3, size=(160, 68)))[0]
    assert torch.equal(cut[3], cut[2])  # frames 9 -> 10 of the clip are a hard cut


def test_exact_double_and_odd_sizes(model):
    images = _images(start=30, count=3, size=(101, 43))
    out, fps = _call("STVSRUpsample", model, images, exact_double=True, frame_rate=30.0)
    assert out.shape == (6, 86, 202, 3) and fps == 60.0 and torch.equal(out[-1], out[-2])


@pytest.mark.parametrize("images, match", [
    (torch.rand(1, 32, 32, 3), "at least 2 frames"),
    (torch.rand(3, 32, 32, 4), "needs RGB"),
    (torch.rand(32, 32, 3), "IMAGE batch"),
])
def test_bad_images(model, images, match):
    with pytest.raises(InputError, match=match):
        _call("STVSRUpsample", model, images)


def test_streams_of_different_sizes(model):
    with pytest.raises(InputError, match="connect both outputs of the same Dual-Stream"):
        _call("STVSRFuseStreams", model, torch.rand(2, 64, 64, 3), torch.rand(2, 64, 96, 3))


def test_missing_and_foreign_model_files(tmp_path):
    with pytest.raises(WeightsError, match="Load STVSR Model: model 'nope.safetensors' is neither"):
        _call("LoadSTVSRModel", "nope.safetensors", "cpu", "fp32")
    foreign = tmp_path / "sd_vae.safetensors"
    save_file({"decoder.conv_in.weight": torch.zeros(4, 4, 3, 3)}, str(foreign))
    with pytest.raises(WeightsError, match="not an stvsr weights file"):
        _call("LoadSTVSRModel", str(foreign), "cpu", "fp32")
    with pytest.raises(InputError, match="fp16 needs a CUDA device"):
        _call("LoadSTVSRModel", "stvsr-lite", "cpu", "fp16")


def test_model_returns_to_cpu_and_progress_interrupts(model, monkeypatch):
    calls = []

    class FakeMM:
        OOM_EXCEPTION = torch.cuda.OutOfMemoryError

        @staticmethod
        def throw_exception_if_processing_interrupted():
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt("interrupted by user")

        free_memory = soft_empty_cache = staticmethod(lambda *a, **k: None)

    monkeypatch.setattr(host, "mm", FakeMM)
    with pytest.raises(KeyboardInterrupt):
        _call("STVSRUpsample", model, _images(start=30, count=4, size=(96, 40)), frame_rate=25.0)
    assert len(calls) == 2  # checked at every output frame, stopped at the second
    assert next(model.model.parameters()).device.type == "cpu"


def test_out_of_memory_halves_the_tile():
    tried = []

    def run(tile):
        tried.append(tile)
        if tile != 256:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return "ok"

    assert nodes_mod._with_smaller_tiles(run, 0) == "ok" and tried == [0, 512, 256]


def _generator():
    spec = importlib.util.spec_from_file_location("make_workflows", ROOT / "tools" / "make_workflows.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return gen


def test_workflows_match_their_generator_and_the_nodes():
    gen = _generator()
    for name, graph in gen.GRAPHS.items():
        assert json.loads((ROOT / "example_workflows" / f"{name}.json").read_text()) == gen.ui(graph)
        api = json.loads((ROOT / "workflows" / "api" / f"{name}_api.json").read_text())
        assert api == gen.api(graph)
        assert any(n["class_type"] == "SaveImage" for n in api.values())
        assert any(n["class_type"] == "LoadVideo" for n in api.values())
        for node in api.values():
            if node["class_type"] in N:  # our nodes: every input the graph sets is one the node declares
                spec = N[node["class_type"]].INPUT_TYPES()
                declared = set(spec["required"]) | set(spec.get("optional", {}))
                assert set(node["inputs"]) <= declared and set(spec["required"]) <= set(node["inputs"])


def test_template_browser_gets_ui_workflows_with_thumbnails_laid_out_left_to_right():
    """ComfyUI lists every *.json directly in these folders of a pack as a template (0.3.64,
    app/custom_node_manager.py) and asks for <name>.jpg as its thumbnail."""
    served = [ROOT / d for d in ("example_workflows", "example", "examples", "workflow", "workflows")]
    listed = sorted(f for d in served for f in d.glob("*.json"))
    assert [f.stem for f in listed] == sorted(_generator().GRAPHS)
    for f in listed:
        wf = json.loads(f.read_text())
        assert {"nodes", "links"} <= set(wf), f"{f.name} is not UI format"
        with Image.open(f.with_suffix(".jpg")) as thumb:
            assert thumb.format == "JPEG" and min(thumb.size) >= 256
        assert f.with_suffix(".jpg").stat().st_size < 100_000
        box = {n["id"]: (*n["pos"], *n["size"]) for n in wf["nodes"]}
        for _, src, _, dst, _, _ in wf["links"]:  # every wire runs left to right
            assert box[src][0] + box[src][2] < box[dst][0], (f.name, src, dst)
        for i in box:
            for j in box:  # no two nodes overlap, previews included
                a, b = box[i], box[j]
                assert i == j or a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or \
                    a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1], (f.name, i, j)


def _fake_folder_paths(tmp_path):
    entries = {}
    return SimpleNamespace(
        models_dir=str(tmp_path / "models"), folder_names_and_paths=entries,
        get_input_directory=lambda: str(tmp_path / "input"),
        add_model_folder_path=lambda name, path, is_default=False:
            entries.setdefault(name, ([], set()))[0].append(path))


def test_pack_load_creates_model_folder_and_puts_the_demo_clip_in_input(tmp_path, monkeypatch):
    """A fresh install: no ComfyUI/models/stvsr and no clip in ComfyUI/input; the templates load it."""
    monkeypatch.setattr(host, "folder_paths", _fake_folder_paths(tmp_path))
    host.register_model_folder()
    host.install_demo_clip()
    assert (tmp_path / "models" / "stvsr").is_dir()
    for graph in _generator().GRAPHS.values():
        for _, cls, widgets, *_ in graph:
            if cls == "LoadVideo":
                assert (tmp_path / "input" / widgets["file"]).read_bytes() == DEMO.read_bytes()
    mine = tmp_path / "input" / DEMO.name
    mine.write_bytes(b"the user's own file")
    host.install_demo_clip()  # never overwrites
    assert mine.read_bytes() == b"the user's own file"


def test_every_input_and_output_has_a_tooltip():
    for name, cls in N.items():
        spec = cls.INPUT_TYPES()
        for group in ("required", "optional"):
            for inp, opts in spec.get(group, {}).items():
                assert len(opts) == 2 and opts[1].get("tooltip"), f"{name}.{inp}"
        assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES), name
        assert all(cls.OUTPUT_TOOLTIPS), name


def test_frame_rate_from_video_info_or_a_clear_error(model):
    """A 20 fps clip: twice 20, never a default of 25 doubled."""
    images = _images(start=30, count=3, size=(96, 40))
    info = {"source_fps": 20.0, "loaded_fps": 20.0, "loaded_frame_count": 3}  # VHS_VIDEOINFO
    assert _call("STVSRUpsample", model, images, video_info=info)[1] == 40.0
    assert _call("STVSRUpsample", model, images, frame_rate=20.0)[1] == 40.0
    with pytest.raises(InputError, match="frame rate is unknown.*wire fps .* or video_info"):
        _call("STVSRUpsample", model, images)
    with pytest.raises(InputError, match="frame_rate is 25 but video_info says 20 fps"):
        _call("STVSRUpsample", model, images, frame_rate=25.0, video_info=info)
    # nothing reads the rate (frames saved as images): no rate needed
    prompt = {"5": {"class_type": "STVSRUpsample", "inputs": {}},
              "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0]}}}
    out, _ = _call("STVSRUpsample", model, images, prompt=prompt, unique_id="5")
    assert out.shape[0] == 5


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused_when_loading():
    with pytest.raises(InputError, match="device is cuda, but this machine has no CUDA device .*set device to auto"):
        _call("LoadSTVSRModel", "stvsr-fast", "cuda", "auto")


def test_meta_batches_give_the_frames_of_one_run(model):
    """VideoHelperSuite's Meta Batch Manager requeues the workflow per batch; the frames between
    batches are kept, so 3 + 3 + 2 frames give the 15 frames of one 8-frame run."""
    images = _images(start=2, count=8, size=(128, 56))  # a scene cut after frame 7 of the clip
    whole, fps = _call("STVSRUpsample", model, images, frame_rate=25.0)
    manager = SimpleNamespace(unique_id="9")  # what the loader, this node and the saver share

    def prompt(requeue):
        return {"9": {"class_type": "VHS_BatchManager", "inputs": {"frames_per_batch": 3, "requeue": requeue}},
                "5": {"class_type": "STVSRUpsample", "inputs": {"meta_batch": ["9", 0]}}}

    node = N["STVSRUpsample"]()
    parts = [node.upsample(model, images[k:k + 3], frame_rate=25.0, meta_batch=manager,
                           prompt=prompt(k // 3), unique_id="5") for k in (0, 3, 6)]
    assert [p[0].shape[0] for p in parts] == [5, 6, 4] and {p[1] for p in parts} == {fps}
    assert (torch.cat([p[0] for p in parts]) - whole).abs().max() < 1 / 255
    again = node.upsample(model, images[:3], frame_rate=25.0, meta_batch=manager, prompt=prompt(0), unique_id="5")
    assert torch.equal(again[0], parts[0][0])  # a new run starts afresh
    with pytest.raises(InputError, match="Meta Batch Manager.*wire|meta_batch wired"):
        node.upsample(model, images[:3], frame_rate=25.0, prompt=prompt(0), unique_id="5")
    with pytest.raises(InputError, match="Frame Interpolate: this workflow has a Meta Batch Manager"):
        _call("STVSRFrameInterpolate", model, images, prompt=prompt(0), unique_id="7")
    with pytest.raises(InputError, match="exact_double cannot be used with meta_batch"):
        node.upsample(model, images[:3], exact_double=True, meta_batch=manager, prompt=prompt(0), unique_id="5")


def test_users_upscale_model_becomes_M_S(model, tmp_path):
    """An UPSCALE_MODEL (a spandrel descriptor, as ComfyUI's Load Upscale Model gives) as M_S."""
    spandrel = pytest.importorskip("spandrel")
    from spandrel.architectures.Compact import Compact
    torch.manual_seed(2)
    torch.save(Compact(num_feat=16, num_conv=2, upscale=2).state_dict(), tmp_path / "2x.pth")
    upscaler = spandrel.ModelLoader().load_from_file(str(tmp_path / "2x.pth"))
    images = _images(start=40, count=2, size=(160, 96))
    up, H_st, H_ts, _ = _call("STVSRDualStreamUpsample", model, images, upscale_model=upscaler)
    with torch.inference_mode():
        expect = upscaler.model(images.movedim(-1, 1)).clamp(0, 1).movedim(1, -1)
    assert torch.allclose(up, expect, atol=1e-5)
    plain = _call("STVSRDualStreamUpsample", model, images)[0]
    assert not torch.allclose(up, plain, atol=1e-3)  # the user's model, not the shipped M_S
    loaded = _call("LoadSTVSRModel", "stvsr-lite", "cpu", "fp32", upscale_model=upscaler)[0]
    assert torch.allclose(_call("STVSRSpatialUpscale", loaded, images)[0], expect, atol=1e-5)
    torch.save(Compact(num_feat=8, num_conv=1, upscale=4).state_dict(), tmp_path / "4x.pth")
    x4 = spandrel.ModelLoader().load_from_file(str(tmp_path / "4x.pth"))
    with pytest.raises(InputError, match="Dual-Stream Upsample: the upscaler is x4"):
        _call("STVSRDualStreamUpsample", model, images, upscale_model=x4)


def test_quality_model_is_offered_and_missing_backbones_are_named(monkeypatch, tmp_path):
    choices = N["LoadSTVSRModel"].INPUT_TYPES()["required"]["model_name"][0]
    assert "stvsr-quality" in choices
    monkeypatch.setenv("STVSR_BACKBONES", str(tmp_path))
    with pytest.raises(WeightsError, match="Load STVSR Model: pretrained backbone .* `stvsr fetch-backbones`"):
        _call("LoadSTVSRModel", "stvsr-quality", "cpu", "auto")


# -- issue 11: any multiplier, target frame rates, spatial- and temporal-only, any model scale ----------
X4_CONFIG = {"scale": 4, "spatial": {"arch": "unshuffle_sr", "channels": 16, "blocks": 1},
             "temporal": {"arch": "dis", "preset": "ultrafast", "high_res_flow": "upsample"},
             "fusion": {"preset": "lite"}, "refine": {"preset": "lite"}}
SHIPPED_X4 = "stvsr-fast-x4"


@pytest.fixture(scope="module")
def x4_file(tmp_path_factory):
    """An untrained 4x model (F and R perturbed) as a .safetensors file, as a user would drop into
    ComfyUI/models/stvsr."""
    from helpers import random_model
    from stvsr_core import save_weights
    path = tmp_path_factory.mktemp("models") / "stvsr" / "random_x4.safetensors"
    path.parent.mkdir()
    save_weights(random_model(X4_CONFIG), path)
    return path


@pytest.fixture(scope="module", params=["random_x4", SHIPPED_X4])
def x4(request, x4_file):
    if request.param == SHIPPED_X4:
        if SHIPPED_X4 not in sys.modules["stvsr_pack.stvsr_core"].list_models():
            pytest.skip(f"{SHIPPED_X4} is not shipped in stvsr_core/weights yet")
        return _call("LoadSTVSRModel", SHIPPED_X4, "cpu", "fp32")[0]
    return _call("LoadSTVSRModel", str(x4_file), "cpu", "fp32")[0]


def test_widget_defaults_come_from_engine_options():
    opts = sys.modules["stvsr_pack.stvsr_core"].EngineOptions()
    up = N["STVSRUpsample"].INPUT_TYPES()
    assert up["required"]["tile"][1]["default"] == opts.tile
    assert up["required"]["scene_threshold"][1]["default"] == opts.scene_threshold
    assert up["required"]["exact_double"][1]["default"] == opts.exact_double
    assert up["optional"]["multiplier"][1]["default"] == opts.factor and up["optional"]["multiplier"][1]["min"] == 1
    assert up["optional"]["upscale"][1]["default"] == opts.upscale
    assert up["optional"]["target_fps"][1]["default"] == 0.0
    for name in ("STVSRFrameInterpolate", "STVSRDualStreamUpsample"):
        assert N[name].INPUT_TYPES()["optional"]["multiplier"][1]["default"] == opts.factor
    assert N["LoadSTVSRModel"].INPUT_TYPES()["required"]["precision"][1]["default"] == opts.precision


def test_multiplier_3_triples_the_frames_and_the_rate(model):
    images = _images(start=30, count=4, size=(96, 40))
    out, fps = _call("STVSRUpsample", model, images, frame_rate=25.0, multiplier=3)
    assert out.shape == (10, 80, 192, 3) and fps == 75.0
    up = _call("STVSRSpatialUpscale", model, images)[0]
    assert (out[0::3] - up).abs().max() < 1e-5  # the source frames at t = 0
    assert not torch.equal(out[1], out[2]) and not torch.equal(out[1], out[0])  # t = 1/3 and t = 2/3
    double = _call("STVSRUpsample", model, images, frame_rate=25.0)[0]
    assert double.shape[0] == 7 and (double[0::2] - up).abs().max() < 1e-5
    tail, _ = _call("STVSRUpsample", model, images, frame_rate=25.0, multiplier=3, exact_double=True)
    assert tail.shape[0] == 12 and torch.equal(tail[-1], tail[-3])  # the last frame held for its duration


def test_target_fps_ntsc_film_to_59_94(model):
    """24000/1001 -> 60000/1001 is 5 output frames per 2 input frames; the target wins over multiplier."""
    images = _images(start=30, count=5, size=(96, 40))
    out, fps = _call("STVSRUpsample", model, images, frame_rate=24000 / 1001, target_fps=60000 / 1001, multiplier=3)
    assert out.shape[0] == 11 and fps == 60000 / 1001  # floor(4 * 5/2) + 1
    typed, fps_typed = _call("STVSRUpsample", model, images, frame_rate=23.976, target_fps=59.94)  # widget values
    assert fps_typed == fps and torch.equal(typed, out)
    up = _call("STVSRSpatialUpscale", model, images)[0]
    assert (out[0::5] - up[0::2]).abs().max() < 1e-5  # output frames 0, 5, 10 are source frames 0, 2, 4
    with pytest.raises(InputError, match="frame rate is unknown, so target_fps needs it"):
        _call("STVSRUpsample", model, images, target_fps=60.0)
    prompt = {"5": {"class_type": "STVSRUpsample", "inputs": {}},
              "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0]}}}
    with pytest.raises(InputError, match="target_fps needs it"):  # needed even when nothing reads the rate
        _call("STVSRUpsample", model, images, target_fps=60.0, prompt=prompt, unique_id="5")


def test_spatial_only_and_temporal_only(model):
    images = _images(start=30, count=3, size=(96, 40))
    up = _call("STVSRSpatialUpscale", model, images)[0]
    same, fps = _call("STVSRUpsample", model, images, frame_rate=25.0, multiplier=1)
    assert same.shape == up.shape and fps == 25.0 and (same - up).abs().max() < 1e-5
    one, _ = _call("STVSRUpsample", model, images[:1], frame_rate=25.0, multiplier=1)  # one image is fine
    assert one.shape == (1, 80, 192, 3)
    low, fps = _call("STVSRUpsample", model, images, frame_rate=25.0, upscale=False)
    assert low.shape == (5, 40, 96, 3) and fps == 50.0
    assert (low[0::2] - images).abs().max() < 1e-6 and not torch.equal(low[1], low[0])
    mid = _call("STVSRFrameInterpolate", model, images)[0]
    assert (low - mid).abs().max() < 1 / 255  # Frame Interpolate's M_T
    low3, fps = _call("STVSRUpsample", model, images, frame_rate=25.0, upscale=False, multiplier=3)
    assert low3.shape == (7, 40, 96, 3) and fps == 75.0
    with pytest.raises(InputError, match="STVSR Upsample: temporal-only .* leaves nothing to do"):
        _call("STVSRUpsample", model, images, frame_rate=25.0, upscale=False, multiplier=1)


def test_frame_interpolate_multiplier_3_and_cuts(model):
    images = _images(start=30, count=3, size=(160, 68))
    mid = _call("STVSRFrameInterpolate", model, images, multiplier=3)[0]
    assert mid.shape == (7, 68, 160, 3) and torch.equal(mid[0::3], images)
    assert not torch.equal(mid[1], mid[2])  # t = 1/3, 2/3
    cut = _call("STVSRFrameInterpolate", model, _images(start=8, count=3, size=(160, 68)), multiplier=3)[0]
    assert torch.equal(cut[4], cut[3]) and torch.equal(cut[5], cut[3])  # frames 9 -> 10: a hard cut


def test_separate_nodes_at_multiplier_3_equal_all_in_one(model):
    images = _images(start=6, count=5, size=(160, 68), crop=(64, 160))  # a cut after frame 3
    up, H_st, H_ts, _ = _call("STVSRDualStreamUpsample", model, images, multiplier=3)
    assert up.shape == (5, 128, 320, 3) and H_st.shape == H_ts.shape == (8, 128, 320, 3)
    H_R = _call("STVSRRefine", model, _call("STVSRFuseStreams", model, H_st, H_ts)[0])[0]
    separate = _call("STVSRInterleave", up, H_R, source=images)[0]
    together, fps = _call("STVSRUpsample", model, images, frame_rate=25.0, multiplier=3)
    assert together.shape == separate.shape == (13, 128, 320, 3) and fps == 75.0
    diff = (together - separate).abs()
    assert diff.max() < 1 / 255 and diff.mean() < 1e-5
    assert torch.equal(together[10], together[9]) and torch.equal(together[11], together[9])  # the cut
    with pytest.raises(InputError, match="Interleave: 5 frames need \\(multiplier-1\\) x 4 in-between frames"):
        _call("STVSRInterleave", up, H_R[:7])


def test_x4_model_through_every_node(x4):
    """A 4x model: every node reads the scale from the model's descriptor."""
    assert x4.scale == 4
    images = _images(start=6, count=3, size=(64, 28))
    up = _call("STVSRSpatialUpscale", x4, images)[0]
    assert up.shape == (3, 112, 256, 3)
    sr, H_st, H_ts, _ = _call("STVSRDualStreamUpsample", x4, images)
    assert sr.shape == (3, 112, 256, 3) and H_st.shape == (2, 112, 256, 3) and torch.allclose(sr, up, atol=1e-5)
    H_F, M_st, _ = _call("STVSRFuseStreams", x4, H_st, H_ts)
    assert H_F.shape == H_st.shape and M_st.shape == (2, 112, 256)
    H_R = _call("STVSRRefine", x4, H_F)[0]
    separate = _call("STVSRInterleave", sr, H_R, source=images)[0]
    together, fps = _call("STVSRUpsample", x4, images, frame_rate=25.0)
    assert together.shape == separate.shape == (5, 112, 256, 3) and fps == 50.0
    assert (together - separate).abs().max() < 1 / 255
    three, fps = _call("STVSRUpsample", x4, images, frame_rate=25.0, multiplier=3)
    assert three.shape == (7, 112, 256, 3) and fps == 75.0
    assert _call("STVSRUpsample", x4, images, frame_rate=25.0, upscale=False)[0].shape == (5, 28, 64, 3)


def test_x4_model_from_the_models_folder(x4_file, monkeypatch):
    """As in ComfyUI: the file is listed from models/stvsr and loaded by its name."""
    folder = SimpleNamespace(get_filename_list=lambda name: [x4_file.name],
                             get_full_path=lambda name, file: str(x4_file.parent / file))
    monkeypatch.setattr(host, "folder_paths", folder)
    assert x4_file.name in N["LoadSTVSRModel"].INPUT_TYPES()["required"]["model_name"][0]
    loaded = _call("LoadSTVSRModel", x4_file.name, "cpu", "auto")[0]
    assert loaded.scale == 4 and loaded.model.info.scale == 4


@pytest.mark.parametrize("retime, counts", [
    ({"multiplier": 3}, [7, 9, 6]),  # 22 = (8 - 1) * 3 + 1
    ({"frame_rate": 24000 / 1001, "target_fps": 60000 / 1001}, [6, 7, 5]),  # 18 = floor(7 * 5/2) + 1
])
def test_meta_batches_at_any_rate_give_the_slices_of_one_run(model, retime, counts):
    """Batches of 3 + 3 + 2 frames at multiplier 3, or at 5/2 where a batch's slots do not start on
    one of its own frames: each batch's output is its slice of the one run's timeline."""
    rate = {"frame_rate": 25.0, **retime}
    images = _images(start=2, count=8, size=(96, 40))  # a scene cut after frame 7 of the clip
    whole, fps = _call("STVSRUpsample", model, images, **rate)
    manager = SimpleNamespace(unique_id="9")

    def prompt(requeue):
        return {"9": {"class_type": "VHS_BatchManager", "inputs": {"frames_per_batch": 3, "requeue": requeue}},
                "5": {"class_type": "STVSRUpsample", "inputs": {"meta_batch": ["9", 0]}}}

    node = N["STVSRUpsample"]()
    parts = [node.upsample(model, images[k:k + 3], meta_batch=manager, prompt=prompt(k // 3), unique_id="5", **rate)
             for k in (0, 3, 6)]
    assert [p[0].shape[0] for p in parts] == counts and sum(counts) == whole.shape[0]
    assert {p[1] for p in parts} == {fps}
    assert (torch.cat([p[0] for p in parts]) - whole).abs().max() < 1 / 255
