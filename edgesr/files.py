"""Writing files safely: atomically (a crash never leaves half a file), with the user's umask (a temporary
file renamed into place would otherwise keep ``mkstemp``'s private 0600 mode), and one writer per run
directory (an advisory lock that the operating system releases when its process dies, so a killed run
never leaves it stuck)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import EdgesrError

__all__ = ["current_umask", "atomic_write_bytes", "atomic_path", "atomic_write_text", "make_temp_dir", "fix_mode",
           "RunLock", "RunLocked", "remove_stale_temps", "remove_stale_temps_of", "folder_lock"]


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows, else set and restored at once)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fix_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have given it under the current umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def _lock_fd(fd: int) -> None:
    """Hold an exclusive lock on a temporary file while it is written: the kernel drops it when the writer
    exits (kill -9 included), so :func:`remove_stale_temps_of` can tell a live writer's file from a dead one's."""
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _temp_pattern(name: str):
    import re

    return re.compile(rf"^\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}\.tmp$")  # tempfile.mkstemp's names, as made below


def remove_stale_temps_of(targets: list[Path] | Path) -> list[str]:
    """Remove the temporary files that writers of ``targets`` (final paths) left when they were killed: only
    names this module makes for those paths (``.<name>.XXXXXXXX.tmp`` beside them), and only when no live
    process holds the file's lock. Returns the names removed."""
    import fcntl

    targets = [Path(targets)] if isinstance(targets, (str, os.PathLike)) else [Path(t) for t in targets]
    by_dir: dict[Path, set[str]] = {}
    for t in targets:
        by_dir.setdefault(t.parent, set()).add(t.name)
    removed = []
    for directory, names in by_dir.items():
        if not directory.is_dir():
            continue
        for p in directory.iterdir():
            if not (p.name.startswith(".") and p.name.endswith(".tmp")):
                continue
            stem = p.name[1:-13]  # ".<name>.XXXXXXXX.tmp"
            if stem not in names or not _temp_pattern(stem).match(p.name) or not p.is_file() or p.is_symlink():
                continue
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer holds it
            finally:
                os.close(fd)  # (closing releases the lock taken just above too)
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _lock_fd(fd)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        fix_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """For writers that need a file name (an encoder, a library): yields a temporary path beside ``path``;
    on success the file gets the umask's mode and is renamed into place, on any error it is removed. The
    temporary file is locked while the writer works, and what a killed writer of ``path`` left is removed first
    (:func:`remove_stale_temps_of`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps_of(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _lock_fd(fd)
        yield Path(tmp)
        fix_mode(tmp)
        os.replace(tmp, path)
    finally:
        os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A fresh directory beside its final place (same file system, so it can be renamed into place)."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    fix_mode(tmp, directory=True)
    return tmp


def remove_stale_temps(directory: Path) -> list[str]:
    """Remove the temporary files and directories an interrupted writer left in ``directory`` (names start
    with ``.`` and contain ``.tmp``, ``.old`` or ``.load``); call only while holding the run lock."""
    removed = []
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        if p.name.startswith(".") and any(t in p.name for t in (".tmp", ".old", ".load")):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


@contextlib.contextmanager
def folder_lock(directory: str | os.PathLike, command: str):
    """Hold an exclusive lock on ``directory`` itself (its file descriptor: no file is created in it) while
    ``command`` writes there; a second writer is refused with :class:`RunLocked` instead of doing the same work
    again. The kernel releases it when the process ends, however it ends. A folder made here and left empty
    (the command refused before writing) is removed."""
    import fcntl

    directory = Path(directory)
    made = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunLocked(f"{directory}: another `{command}` is writing into this folder now; wait for it to end, "
                            "or write elsewhere (run again with --skip-existing afterwards to finish what it left)") \
                from None
        yield directory
    finally:
        os.close(fd)
        if made:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if empty


class RunLocked(EdgesrError):
    """Another process is writing the same run directory."""


class RunLock:
    """An exclusive advisory lock on a run directory (``<dir>/.edgesr.lock``), held while the run writes.

    ``flock`` is released by the kernel when the holding process exits for any reason, kill -9 included,
    so a crashed run never blocks the next one; the file's content (pid, start time) only explains a
    refusal."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / ".edgesr.lock"
        self._fh = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            try:
                holder = json.loads(fh.read() or "{}")
            except json.JSONDecodeError:
                holder = {}
            fh.close()
            raise RunLocked(f"{self.directory}: another edgesr run is writing this run directory (pid "
                            f"{holder.get('pid', '?')}, started {holder.get('started', '?')}). Wait for it to "
                            "finish, or choose another --out.") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(),
                             "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
