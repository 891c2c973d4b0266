"""The package installs with pip and works from any directory (pyproject.toml)."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_pip_install_into_a_fresh_target_and_import_from_elsewhere(tmp_path):
    target, elsewhere, source = tmp_path / "site", tmp_path / "elsewhere", tmp_path / "source"
    elsewhere.mkdir()
    # a copy of the checkout: the build writes build/ and *.egg-info next to the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "*.egg-info",
                                                                  "build", "data"))
    # the dependencies are this environment's (same pins); --no-build-isolation: no download of setuptools
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet",
                           "--target", str(target), str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (target / "memomentum" / "methods" / "jocor.py").exists() and (target / "sweeps" / "grid.py").exists()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import memomentum, sweeps.grid, run_sweep; print(memomentum.__file__); "
            "print(sorted(memomentum.METHODS))")
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(str(target)) and "'coteaching'" in out.stdout  # the installed copy, not the checkout
    cli = subprocess.run([sys.executable, "-m", "memomentum", "--list-methods"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and "jocor" in cli.stdout, cli.stderr
    installed = subprocess.run([sys.executable, "-m", "pip", "show", "-f", "memomentum"], env=env, cwd=elsewhere,
                               capture_output=True, text=True, timeout=300).stdout
    for pin in ("torch==2.14.1", "torchvision==0.29.1"):  # the same pins as requirements.txt
        assert pin in open(os.path.join(ROOT, "requirements.txt")).read()
    assert "Name: memomentum" in installed and "Requires:" in installed and "torch" in installed
