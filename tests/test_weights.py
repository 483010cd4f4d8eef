"""Weights files: round trip, registry, and every way a file can be wrong."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from stvsr_core import WeightsError, list_models, load_model, load_weights, resolve_model, save_weights
from stvsr_core.registry import DEFAULT_MODEL

from helpers import CONFIGS, random_model


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trip_rebuilds_the_same_model(tmp_path, name):
    model = random_model(CONFIGS[name])
    path = tmp_path / "m.safetensors"
    save_weights(model, path, description="test")
    loaded = load_weights(path)
    assert loaded.config == model.config
    a, b = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96)  # multiples of size_multiple
    with torch.no_grad():
        assert torch.equal(model(a, b).H_R, loaded(a, b).H_R)


def test_shipped_default_model_is_listed_and_loads():
    assert DEFAULT_MODEL in list_models()
    assert resolve_model("default") == resolve_model(DEFAULT_MODEL)
    m = load_model("default")
    assert m.scale == 2 and not m.training


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="neither a shipped model"):
        resolve_model(tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match="no such weights file"):
        load_weights(tmp_path / "nope.safetensors")


def test_truncated_file(tmp_path, untrained_file):
    data = untrained_file.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"cut\.safetensors: .*(truncated|not a readable)"):
        load_weights(bad)


def test_garbage_file(tmp_path):
    bad = tmp_path / "junk.safetensors"
    bad.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(WeightsError, match="junk.safetensors: not a readable safetensors file"):
        load_weights(bad)


def test_foreign_safetensors_file(tmp_path):
    foreign = tmp_path / "esrgan.safetensors"
    save_file({"conv_first.weight": torch.zeros(64, 3, 3, 3)}, str(foreign))
    with pytest.raises(WeightsError, match="esrgan.safetensors: not an stvsr weights file"):
        load_weights(foreign)


def _rewrite(src, dst, tensors=None, config=None):
    from safetensors import safe_open
    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
    state = load_file(str(src))
    if tensors:
        tensors(state)
    if config:
        cfg = json.loads(meta["config"])
        config(cfg)
        meta["config"] = json.dumps(cfg)
    save_file(state, str(dst), metadata=meta)


def test_mismatched_shapes_are_listed(tmp_path, untrained_file):
    bad = tmp_path / "wide.safetensors"
    _rewrite(untrained_file, bad, config=lambda c: c["spatial"].update(channels=64))
    with pytest.raises(WeightsError, match=r"wide.safetensors: does not match .*shape mismatches M_S.head.weight"):
        load_weights(bad)


def test_missing_and_unexpected_tensors(tmp_path, untrained_file):
    bad = tmp_path / "renamed.safetensors"
    _rewrite(untrained_file, bad, tensors=lambda s: s.update({"R.extra": s.pop("R.head.bias")}))
    with pytest.raises(WeightsError, match=r"missing tensors \['R.head.bias'\].*unexpected tensors \['R.extra'\]"):
        load_weights(bad)


def test_nan_weights(tmp_path, untrained_file):
    bad = tmp_path / "nan.safetensors"
    _rewrite(untrained_file, bad, tensors=lambda s: s["F.out.weight"].fill_(float("nan")))
    with pytest.raises(WeightsError, match=r"NaN or infinite values in \['F.out.weight'\]"):
        load_weights(bad)


def test_invalid_config(tmp_path, untrained_file):
    bad = tmp_path / "cfg.safetensors"
    _rewrite(untrained_file, bad, config=lambda c: c["temporal"].update(arch="dain"))
    with pytest.raises(WeightsError, match="cfg.safetensors: its architecture config is invalid: unknown temporal"):
        load_weights(bad)
