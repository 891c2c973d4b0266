"""Which code made a result: `code_version()` is recorded with every result, trial row and trial file.

    git:<commit 12 hex>          a clean git checkout of this project
    git:<commit 12 hex>+dirty    ... with changes not committed (tracked edits or new files git does not ignore)
    src:<12 hex>                 no git checkout (an installed package): a hash of the package's source files

A sweep's driver computes it once and hands it to its workers through CODE_VERSION_ENV, since the
package copies Ray ships to them are not a git checkout. The method's own `version` (its registry entry)
is recorded beside it and is part of a trial's key; see memomentum/methods/method.py.
"""
import functools
import hashlib
import os
import subprocess
from typing import Optional

CODE_VERSION_ENV = "MEMOMENTUM_CODE_VERSION"
PACKAGE = os.path.dirname(os.path.abspath(__file__))


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    given = os.environ.get(CODE_VERSION_ENV, "").strip()
    if given:
        return given[:100]
    return git_version(os.path.dirname(PACKAGE)) or source_version(PACKAGE)


def git_version(root: str) -> Optional[str]:
    """'git:<commit>[+dirty]' when `root` is the top of a git working tree, else None (no git, not a checkout)."""
    def git(*args) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or os.path.realpath(top.strip()) != os.path.realpath(root):
        return None
    commit, status = git("rev-parse", "HEAD"), git("status", "--porcelain")
    if not commit or status is None:
        return None
    return f"git:{commit.strip()[:12]}" + ("+dirty" if status.strip() else "")


def source_version(package: str) -> str:
    """'src:<hash>' of every .py file of the package (their paths and bytes, in a fixed order)."""
    digest = hashlib.sha1()
    paths = sorted(os.path.relpath(os.path.join(folder, name), package)
                   for folder, _, files in os.walk(package) for name in files if name.endswith(".py"))
    for rel in paths:
        digest.update(rel.replace(os.sep, "/").encode() + b"\0")
        with open(os.path.join(package, rel), "rb") as fh:
            digest.update(fh.read() + b"\0")
    return f"src:{digest.hexdigest()[:12]}"


__all__ = ["CODE_VERSION_ENV", "code_version", "git_version", "source_version"]
