"""`stvsr upsample --ray` on a real Ray cluster started here (a head node and a second worker node on
this machine, one CPU each; nothing mocked): the single run's frames, a worker killed mid-chunk,
the whole command killed and resumed."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stvsr_core.cli import main

from test_chunks import ENV, decoded, lossy_close, make_clip, pngs

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'stvsr[ray]'")
pytestmark = pytest.mark.slow


class Address(str):
    """The cluster's address (what --ray takes), with the Cluster itself for tests that change it."""


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                       "env_vars": {"OMP_NUM_THREADS": "1"}})
    c.add_node(num_cpus=1, env_vars={"OMP_NUM_THREADS": "1"})
    c.wait_for_nodes()
    address = Address(c.address)
    address.cluster = c
    yield address
    c.shutdown()


def stvsr(*args):
    """The command as a user runs it; its stderr to a file (a pipe could fill up and block it)."""
    log = Path(args[args.index("-o") + 1]).parent / f"stderr-{time.monotonic_ns()}.txt"
    p = subprocess.Popen([sys.executable, "-m", "stvsr_core.cli", "upsample", *map(str, args)], env=ENV,
                         stderr=open(log, "w"))
    p.log = log
    return p


def finish(p, timeout=600):
    p.wait(timeout=timeout)
    err = p.log.read_text()
    return p.returncode, "\n".join(line for line in re.split(r"[\r\n]", err) if line and "frame/s]" not in line)


def workers(err):
    """{pid: (chunks, model loads)} from the run's `workers:` line."""
    line = next(line for line in err.splitlines() if line.startswith("stvsr: workers:"))
    return {int(pid): (int(n), int(loads)) for pid, n, loads in
            re.findall(r":(\d+) \((\d+) chunk\(s\) in [\d.]+ s, model loaded (\d+)x\)", line)}


BF16 = ["--precision", "bf16"]  # named: auto is measured in each process


def single(clip, out, model):
    """The single streaming run of the same command, in this process."""
    return main(["upsample", str(clip), "-o", str(out), "--model", str(model), *BF16])


def same(a, b):
    fa, fb = pngs(a), pngs(b)
    return len(fa) == len(fb) and all(np.array_equal(x, y) for x, y in zip(fa, fb))


def test_two_nodes_give_the_single_run_frames(tmp_path, untrained_file, cluster):
    clip = make_clip(tmp_path / "in.mp4", count=24)
    assert single(clip, tmp_path / "single", untrained_file) == 0
    code, err = finish(stvsr(clip, "-o", tmp_path / "ray", "--model", untrained_file, *BF16, "--chunk-frames", 4,
                             f"--ray={cluster}"))
    assert code == 0, err
    assert same(tmp_path / "single", tmp_path / "ray")
    w = workers(err)
    assert len(w) == 2 and all(loads == 1 for _, loads in w.values())  # one actor a node, the model loaded once
    assert sum(n for n, _ in w.values()) == int(re.search(r"in (\d+) chunk", err).group(1))


def test_a_worker_killed_mid_chunk(tmp_path, untrained_file, cluster):
    """SIGKILL of the actor process while it writes a chunk: Ray restarts the actor and retries the
    chunk; the job completes with the single run's frames and no partial file is taken as done."""
    clip = make_clip(tmp_path / "in.mp4", count=48)
    work = tmp_path / "work"
    p = stvsr(clip, "-o", tmp_path / "ray", "--model", untrained_file, *BF16, "--chunk-frames", 6, "--work", work,
              f"--ray={cluster}")
    killed, deadline = None, time.time() + 300
    while killed is None and p.poll() is None and time.time() < deadline:
        for partial in (work / "ray").glob(".chunk_*.partial.mkv"):  # .chunk_NNNNN.PID.partial.mkv
            killed = int(partial.name.split(".")[2])
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.005)
    code, err = finish(p)
    assert killed is not None, f"no chunk was in flight: make the clip longer\n{err}"
    assert code == 0, err
    assert single(clip, tmp_path / "single", untrained_file) == 0
    assert same(tmp_path / "single", tmp_path / "ray")
    w = workers(err)
    n_chunks = int(re.search(r"in (\d+) chunk", err).group(1))
    assert sum(n for n, _ in w.values()) == n_chunks  # each chunk recorded once, the killed one by its retry
    assert len(set(w) - {killed}) == 2  # the other actor, and the killed one restarted as a new process
    assert all(loads == 1 for _, loads in w.values())
    assert list(work.iterdir()) == []


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_a_machine_lost_mid_run(tmp_path, untrained_file, cluster):
    """The second node goes (its raylet and workers killed) while its actor renders a chunk: Ray
    restarts that actor on the head node once the head's own actor has nothing left to do, and the
    job completes with the single run's frames."""
    clip = make_clip(tmp_path / "in.mp4", count=40)
    work = tmp_path / "work"
    c = cluster.cluster
    node = c.worker_nodes and next(iter(c.worker_nodes))
    raylet = node.all_processes["raylet"][0].process.pid
    p = stvsr(clip, "-o", tmp_path / "ray", "--model", untrained_file, *BF16, "--chunk-frames", 6, "--work", work,
              f"--ray={cluster}")
    lost, deadline = False, time.time() + 300
    while not lost and p.poll() is None and time.time() < deadline:
        for partial in (work / "ray").glob(".chunk_*.partial.mkv"):
            try:
                on_node = _parent(int(partial.name.split(".")[2])) == raylet
            except (OSError, ValueError):
                continue
            if on_node:
                c.remove_node(node, allow_graceful=False)
                lost = True
                break
        time.sleep(0.005)
    code, err = finish(p)
    c.add_node(num_cpus=1, env_vars={"OMP_NUM_THREADS": "1"})  # for the tests after this one
    c.wait_for_nodes()
    assert lost, f"no chunk was in flight on the second node: make the clip longer\n{err}"
    assert code == 0, err
    assert single(clip, tmp_path / "single", untrained_file) == 0
    assert same(tmp_path / "single", tmp_path / "ray")
    w = workers(err)
    assert len(w) >= 2 and sum(n for n, _ in w.values()) == int(re.search(r"in (\d+) chunk", err).group(1))
    # (the head's actor and the lost node's restarted on the head; the lost one too if it finished a chunk)


def test_the_whole_command_killed_then_resumed(tmp_path, untrained_file, cluster):
    """A folder of clips on Ray, the driver SIGKILLed mid-run; the same command again skips the
    chunks the manifests verified and renders only the others; the outputs are the single runs'."""
    clips = tmp_path / "clips"
    clips.mkdir()
    make_clip(clips / "a.mkv", count=24)
    make_clip(clips / "b.mkv", start=30, count=24)
    out, work = tmp_path / "out", tmp_path / "work"
    args = [clips, "-o", out, "--model", untrained_file, *BF16, "--chunk-frames", 3, "--work", work,
            f"--ray={cluster}"]
    p = stvsr(*args)

    def done():
        found = {}
        for m in work.glob("*/manifest.json"):
            try:
                found[m.parent.name] = sorted(int(k) for k in json.loads(m.read_text())["chunks"])
            except (OSError, ValueError):
                pass
        return found
    deadline = time.time() + 300
    while p.poll() is None and time.time() < deadline and sum(map(len, done().values())) < 4:
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    code, err = finish(p)
    assert code == -signal.SIGKILL, f"the run ended before it was killed: make the clips longer\n{err}"
    before = done()
    code, err = finish(stvsr(*args))
    assert code == 0, err
    skipped = 0
    for name in ("a.mkv", "b.mkv"):
        line = next(line for line in err.splitlines() if f"-> {out / name}" in line)
        n = int(re.search(r"in (\d+) chunk", line).group(1))
        ids = before.get(name, [])
        rest = [i for i in range(n) if i not in ids]
        assert f"skipped {', '.join(map(str, ids)) or 'none'} (finished before, verified), rendering " \
               f"{', '.join(map(str, rest)) or 'none'}" in line
        skipped += len(ids)
        assert main(["upsample", str(clips / name), "-o", str(tmp_path / f"single-{name}"),
                     "--model", str(untrained_file), "--precision", "bf16"]) == 0
        a, b = decoded(tmp_path / f"single-{name}"), decoded(out / name)
        assert a[1] == b[1] and lossy_close(a[0], b[0])  # the same timestamps; frames within codec noise
    assert skipped >= 4 and f"{skipped} skipped" in err
