"""Write a folder atomically: build it under a temporary name, move it into place at the end.

A failed or killed run leaves the previous complete folder (or nothing), never a
half-written one. One writer at a time: a second run on the same output folder fails at
once with the first one's pid, instead of both building and one silently replacing the
other. The lock is an OS file lock, so a killed run (even SIGKILL) releases it, and the
next run clears what the killed one left beside the folder.

--force replaces only a folder edgekit wrote: `--out ~/project --force` must never delete a user's own files.
Each kind of output knows its own entries (a run's report.json and stage folders, an export's export.json and
the files it lists, a bundle's manifest), so an existing folder holding anything else is refused, naming it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from edgekit.errors import OutputExists, OutputLocked
from edgekit.trust.reading import shown


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


def _refuse_foreign(out: Path, foreign: Callable[[Path], list[str]]) -> None:
    """OutputExists unless `out` is a folder of edgekit's own: `foreign(out)` lists the entries it did not write."""
    if out.is_symlink() or not out.is_dir():
        raise OutputExists(f"'{shown(out)}' is {'a link' if out.is_symlink() else 'a file'}, not a folder edgekit "
                           "wrote, and --force replaces only those: choose another output folder.")
    entries = foreign(out)
    if entries:
        listed = ", ".join(shown(name) for name in sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputExists(f"'{shown(out)}' holds {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} edgekit "
                           f"did not write ({listed}), and --force replaces only a folder edgekit wrote, so that "
                           "nothing of yours is lost: move them out, or choose another output folder.")


def unexpected_entries(folder: Path, expected) -> list[str]:
    """The names in `folder` that are not among `expected` (an output kind's own entries)."""
    return [entry.name for entry in folder.iterdir() if entry.name not in expected]


@contextmanager
def atomic_dir(out: str | Path, foreign: Callable[[Path], list[str]], replace: bool = False):
    """Yield a fresh temporary folder beside `out`; on success it becomes `out`.

    An existing non-empty `out` is refused unless `replace`, and then only replaced when `foreign(out)` (the
    entries of `out` this kind of output does not write) is empty; it is swapped out only after the new folder
    is complete.
    """
    out = Path(out)
    with output_lock(out):
        # Checked under the lock: a run that finished meanwhile is not replaced without --force.
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            if not replace:
                raise OutputExists(f"'{shown(out)}' already exists and is not empty. Pass --force to replace it, "
                                   "or choose another output folder.")
            _refuse_foreign(out, foreign)
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


def write_text_atomic(path: Path, text: str) -> None:
    """Write a whole text file or none: a temporary beside it, moved into place once complete, removed when the
    write fails (a full disk), so no half-written file is left where a reader would take it for the real one."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
