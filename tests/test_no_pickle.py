"""Issue 13 item 19: no code path unpickles. Checkpoints are safetensors, `--init` reads safetensors
only, and a pickled file is refused before any of its code can run."""
import pickle
import re
from pathlib import Path

import pytest
import torch

from stvsr_core import DualStream, load_weights, save_weights
from stvsr_core.backbones.store import installed
from stvsr_core.checkpoint import CheckpointError, read_checkpoint
from stvsr_core.cli_train import init_part
from stvsr_core.registry import list_models, load_model
from stvsr_core.train import StageSpec, run_stage, train

from helpers import RandomTriplets, random_model, require_backbones

ROOT = Path(__file__).resolve().parent.parent


class _Forbidden(pickle.Unpickler):
    def __init__(self, *a, **k):
        raise AssertionError("something unpickled")


@pytest.fixture
def no_unpickling(monkeypatch):
    """Any plain unpickler (pickle's or torch.load(weights_only=False)'s) fails the test."""
    def refuse(*a, **k):
        raise AssertionError("something unpickled")
    monkeypatch.setattr(pickle, "Unpickler", _Forbidden)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


def test_resume_reads_safetensors_and_matches_an_uninterrupted_run(tmp_path, no_unpickling):
    spec = StageSpec(steps=6, lr=1e-3, batch=2, crop=32)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    torch.manual_seed(0)
    straight = DualStream()
    run_stage(straight, RandomTriplets(), 2, spec, tmp_path / "a", checkpoint_every=2)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        run_stage(DualStream(), RandomTriplets(fail_at=3), 2, spec, tmp_path / "b", checkpoint_every=2)
    torch.manual_seed(0)
    resumed = DualStream()
    run_stage(resumed, RandomTriplets(), 2, spec, tmp_path / "b", checkpoint_every=2)
    assert not list((tmp_path / "b").glob("*.pt")) and not list((tmp_path / "b").glob("*.tmp"))
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k  # optimiser moments, schedule and both RNGs came back exactly


def test_next_stage_and_init_start_from_a_safetensors_checkpoint(tmp_path, no_unpickling, untrained_file):
    stages = {2: StageSpec(steps=2, lr=1e-3, batch=1, crop=32), 3: StageSpec(steps=1, lr=1e-3, batch=1, crop=32)}
    train(DualStream(), RandomTriplets(), tmp_path, stages)
    ckpt = tmp_path / "stage2.safetensors"
    fresh = DualStream()
    init_part(fresh, str(ckpt), "R")
    saved = read_checkpoint(ckpt)[0]
    assert torch.equal(fresh.R.tail.weight, saved["model/R.tail.weight"])
    init_part(fresh, str(untrained_file), "M_S")  # a weights file works too
    assert torch.equal(fresh.M_S.state_dict()["head.weight"], load_weights(untrained_file).M_S.state_dict()["head.weight"])


def test_shipped_models_load_without_unpickling(no_unpickling):
    if not all(installed(n) for n in ("spanx2_ch48", "rife-4.25")):
        require_backbones("stvsr-quality's backbones are not installed")
    for name in list_models():
        load_model(name)


class _Payload:
    """Pickled, it creates `marker` when a plain unpickler loads it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pickled_init_file_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "ran"
    bad = tmp_path / "stage1.pt"
    torch.save({"model": {}, "x": _Payload(str(marker))}, bad)
    with pytest.raises(SystemExit, match=r"--init .*stage1.pt: not a safetensors .*convert .pt/.pth"):
        init_part(DualStream(), str(bad), "M_S")
    assert not marker.exists()


def test_an_old_pickled_run_folder_is_refused_with_the_fix(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"model": _Payload(str(marker))}, tmp_path / "stage2.pt")
    with pytest.raises(SystemExit, match="pickled checkpoint of an older stvsr.*delete it"):
        train(DualStream(), RandomTriplets(), tmp_path, {2: StageSpec(steps=1, lr=1e-3, batch=1, crop=32)})
    assert not marker.exists()


def test_a_corrupt_checkpoint_gets_one_clear_error(tmp_path):
    bad = tmp_path / "stage2.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="unreadable checkpoint.*delete it"):
        read_checkpoint(bad)
    save_weights(random_model(), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="not an stvsr training checkpoint"):
        read_checkpoint(tmp_path / "w.safetensors")


def test_no_unsafe_load_in_the_sources():
    """A static guard beside the runtime one: unpickling calls never come back into the code."""
    unsafe = re.compile(r"weights_only\s*=\s*False|pickle\.loads?\(|allow_pickle\s*=\s*True|pickle\.Unpickler\(")
    hits = [f"{p.relative_to(ROOT)}:{i}" for folder in ("stvsr_core", "nodes", "vs_plugin", "tools")
            for p in (ROOT / folder).rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
            if unsafe.search(line)]
    assert not hits, hits
