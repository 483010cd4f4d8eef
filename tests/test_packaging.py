"""The repository as people get it: any clone folder name works (issue 13 item 17)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["stvsr-main", "stvsr ci"])
def test_tests_run_in_a_clone_whose_name_is_not_an_identifier(tmp_path, name):
    """The root __init__.py (ComfyUI's entry point) must not break pytest's collection."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / name
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    for f in ("__init__.py", "tests/helpers.py", "tests/conftest.py", "tests/test_weights.py"):  # this tree's
        (clone / f).write_bytes((ROOT / f).read_bytes())
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_weights.py"],
                       cwd=clone, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stdout[-2000:]
    assert " passed" in r.stdout and "error" not in r.stdout.lower()


def test_the_wheel_builds_without_warnings_and_carries_the_data(tmp_path):
    """assets/ and weights/ are declared packages: no setuptools 'Package would be ignored' warnings."""
    import zipfile
    src = tmp_path / "src"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(src)], check=True)
    (src / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())  # this tree's
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", ".", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path / "wheel")], cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warn" not in (r.stdout + r.stderr).lower(), r.stderr[-3000:]
    names = zipfile.ZipFile(next((tmp_path / "wheel").glob("*.whl"))).namelist()
    assert "stvsr_core/assets/bikes_short.mp4" in names
    assert "stvsr_core/weights/stvsr-fast.safetensors" in names


def test_the_readme_python_snippet_runs_as_written(capsys):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    namespace = {}
    for block in section.split("```python\n")[1:]:  # the blocks build on each other, as a reader runs them
        exec(compile(block.split("```", 1)[0], "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed.count("torch.Size([3, 544, 1280])") == 9  # 5 frames in, 2N-1 out, twice the size
    assert "'H_R': (1, 3, 544, 1280)" in printed[-2]
    assert printed[-1].startswith("118 Slot(j=1, k=0, t=Fraction(2, 5)")
    assert len(namespace["out"]) == 11 and namespace["frame"].shape == (3, 544, 1280)
