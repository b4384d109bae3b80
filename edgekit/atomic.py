"""Write a folder atomically: build it under a temporary name, move it into place at the end.

A failed or killed run leaves the previous complete folder (or nothing), never a
half-written one. One writer at a time: a second run on the same output folder fails at
once with the first one's pid, instead of both building and one silently replacing the
other. The lock is an OS file lock, so a killed run (even SIGKILL) releases it, and the
next run clears what the killed one left beside the folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from edgekit.errors import OutputExists, OutputLocked


def _lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.lock")


@contextmanager
def output_lock(out: Path):
    """Hold the lock on `out` (a hidden `.NAME.lock` file beside it, removed again at the end)."""
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    path = _lock_path(out)
    while True:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until the block ends
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise OutputLocked(f"'{out}' is being written by {holder}; wait for that run to finish, or pass "
                               "another --out. Two runs on one folder would replace each other's results.") from None
        # The holder before us may have removed the file between our open and our lock: then we hold
        # a lock nobody else can see, so take it again on the file that is there now.
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"edgekit pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # before the lock goes, so no one locks a file about to vanish
        handle.close()


def _clear_leftovers(out: Path) -> None:
    """Temporary folders of earlier runs on `out` that were killed before they could clean up
    (SIGKILL, power loss): with the lock held, nothing else can be using them."""
    for leftover in [*out.parent.glob(f".{out.name}.tmp-*"), *out.parent.glob(f".{out.name}.old-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def atomic_dir(out: str | Path, replace: bool = False):
    """Yield a fresh temporary folder beside `out`; on success it becomes `out`.

    An existing non-empty `out` is refused unless `replace`, and is then swapped
    out only after the new folder is complete.
    """
    out = Path(out)
    with output_lock(out):
        # Checked under the lock: a run that finished meanwhile is not replaced without --force.
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not replace:
            raise OutputExists(f"'{out}' already exists and is not empty. Pass --force to replace it, "
                               "or choose another output folder.")
        _clear_leftovers(out)
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
