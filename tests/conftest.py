import os
import warnings

import psutil
import pytest

from stvsr_core import save_weights

from helpers import random_model

# OpenVINO sends telemetry unless told not to: each model conversion forks this process to post
# it (the source of hung pytest copies in CI runs); it honours CI=true
os.environ["CI"] = "true"


@pytest.fixture(scope="session")
def untrained_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "untrained.safetensors"
    save_weights(random_model(), path, description="untrained, for tests")
    return path


def _forks() -> dict:
    """This pytest's descendants that are copies of it (fork without exec): a library that forks
    a pool leaves them; they hold ~1 GB each, and hung ones outlive the run (seen in CI)."""
    me = psutil.Process()
    out = {}
    for p in me.children(recursive=True):
        try:
            if p.cmdline() == me.cmdline():
                out[p.pid] = p
        except psutil.Error:
            pass
    return out


@pytest.fixture(autouse=True, scope="module")
def no_leftover_forks(request):
    """Each test module ends without forked copies of pytest still alive: those it leaves are
    named (so the module that made them is known) and killed, so they cannot pile up."""
    before = set(_forks())
    yield
    left = {pid: p for pid, p in _forks().items() if pid not in before}
    if left:
        _, alive = psutil.wait_procs(list(left.values()), timeout=3)
        for p in alive:
            p.kill()
        if alive:
            warnings.warn(f"{request.module.__name__} left {len(alive)} forked pytest process(es) "
                          f"behind (killed): {sorted(p.pid for p in alive)}")
