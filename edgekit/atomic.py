"""Write a folder atomically: build it under a temporary name, move it into place at the end.

A failed or killed run leaves the previous complete folder (or nothing), never a
half-written one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from edgekit.errors import EdgekitError


class OutputExists(EdgekitError):
    """The output folder already holds results."""


@contextmanager
def atomic_dir(out: str | Path, replace: bool = False):
    """Yield a fresh temporary folder beside `out`; on success it becomes `out`.

    An existing non-empty `out` is refused unless `replace`, and is then swapped
    out only after the new folder is complete.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not replace:
        raise OutputExists(f"'{out}' already exists and is not empty. Pass --force to replace it, "
                           "or choose another output folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Same parent, so the final rename stays on one file system and is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
