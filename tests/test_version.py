"""Every result names the code that made it: a git commit (with a dirty flag), or a hash of the sources."""
import os
import subprocess

import pytest

from memomentum import version


def git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


def test_git_version_names_the_commit_and_whether_the_checkout_is_dirty(tmp_path):
    if subprocess.run(["git", "--version"], capture_output=True).returncode != 0:
        pytest.skip("git is not installed")
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert version.git_version(str(tmp_path)) == f"git:{head.strip()[:12]}"
    (tmp_path / "a.py").write_text("x = 2\n")
    assert version.git_version(str(tmp_path)) == f"git:{head.strip()[:12]}+dirty"
    (tmp_path / "sub").mkdir()
    assert version.git_version(str(tmp_path / "sub")) is None  # not the top of the checkout
    assert version.git_version(str(tmp_path.parent / "nowhere")) is None


def test_source_version_follows_the_sources(tmp_path):
    (tmp_path / "m.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("not code")
    first = version.source_version(str(tmp_path))
    assert first.startswith("src:") and len(first) == 16
    (tmp_path / "notes.txt").write_text("still not code")
    assert version.source_version(str(tmp_path)) == first
    (tmp_path / "m.py").write_text("x = 2\n")
    assert version.source_version(str(tmp_path)) != first


def test_the_drivers_version_reaches_workers_through_the_environment(monkeypatch):
    version.code_version.cache_clear()
    monkeypatch.setenv(version.CODE_VERSION_ENV, "git:0123456789ab")
    try:
        assert version.code_version() == "git:0123456789ab"
    finally:
        version.code_version.cache_clear()
    monkeypatch.delenv(version.CODE_VERSION_ENV)
    assert version.code_version().startswith(("git:", "src:"))
    version.code_version.cache_clear()
