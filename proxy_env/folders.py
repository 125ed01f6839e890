"""Output folders that are safe to write: a folder that is not ours is never replaced, one writer at a time.

Every command that writes a folder (``train --save-dir``, ``demo --out``, ``rm train --out``,
``finetune --out``) writes it atomically: the new content goes into a hidden sibling that then
replaces the folder by renames. Replacing deletes what the folder held, so it is allowed only for a
folder that is *ours*: empty, or holding one of our marker files and nothing but names we write.
Anything else is refused, before any work starts (:func:`check_output_dir`) and again at the
moment of the swap (:func:`replace_dir`).

:class:`FolderLock` is a ``flock`` on a hidden file beside the folder (``.<name>.lock``), held for
a whole run, so a second run on the same folder fails at once with a clear error instead of racing
the first one's saves. The kernel releases it when the process ends, even on ``kill -9``.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> (root / "thesis").mkdir(); _ = (root / "thesis" / "ch1.tex").write_text("x")
>>> check_output_dir(root / "thesis", arg="save_dir", markers=("meta.json",), names=("meta.json",))
Traceback (most recent call last):
...
proxy_env.errors.OutputPathError: save_dir=... holds 1 entry that proxy-rlhf did not write (ch1.tex): writing there would replace the folder and delete it. Pass a new or empty folder, or one written by proxy-rlhf.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from proxy_env.errors import FolderInUseError, OutputPathError

logger = logging.getLogger(__name__)

_SHOWN = 3  # foreign entries named in an error


def foreign_entries(folder: Path, markers: Iterable[str], names: Iterable[str]) -> list[str]:
    """Entries of ``folder`` that show it is not ours (sorted); ``[]`` for an empty folder or one of ours.

    A folder is ours when it is empty, or when it holds one of ``markers`` and every entry is one of
    ``names`` (hidden files included: a stray ``.git`` makes a folder someone else's); ``names``
    holding ``"*"`` allows any entry once a marker is there (a model folder whose files vary).
    """
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return []
    allowed = set(names) | set(markers)
    foreign = [] if "*" in allowed else [e for e in entries if e not in allowed]
    if not foreign and not any(m in entries for m in markers):
        return entries  # only names we could write, but no marker: not provably ours
    return foreign


def _describe(foreign: list[str]) -> str:
    shown = ", ".join(foreign[:_SHOWN]) + (", ..." if len(foreign) > _SHOWN else "")
    return f"{len(foreign)} {'entry' if len(foreign) == 1 else 'entries'} that proxy-rlhf did not write ({shown})"


def check_not_a_file(path: str | Path, *, arg: str) -> Path:
    """Refuse (:class:`OutputPathError` naming ``arg``) a folder path that is a file or lies under one."""
    path = Path(path).expanduser()
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            what = "is a file" if parent == path else f"lies under {str(parent)!r}, which is a file"
            raise OutputPathError(f"{arg}={str(path)!r} {what}; pass a folder (it will hold the output files).")
    return path


def check_output_dir(path: str | Path, *, arg: str, markers: Iterable[str], names: Iterable[str]) -> Path:
    """Check, before any work, that the folder ``path`` can be written without destroying anything.

    Refuses (:class:`OutputPathError` naming ``arg``) a path that is a file or lies under one, a
    symbolic link, the current folder or one holding it, the home folder, a folder that is not ours
    (see :func:`foreign_entries`), and a parent that cannot be written. Creates the missing parents.
    Returns ``path`` with ``~`` expanded.
    """
    if not str(path).strip():
        raise OutputPathError(f"{arg}={str(path)!r} is empty; pass a folder to write, e.g. runs/proxy.")
    path = Path(path).expanduser()
    shown = f"{arg}={str(path)!r}"
    if path.is_symlink():
        raise OutputPathError(
            f"{shown} is a symbolic link; pass the folder it points to ({os.path.realpath(path)!r}) or a new folder."
        )
    check_not_a_file(path, arg=arg)
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or resolved == Path.home().resolve():
        raise OutputPathError(
            f"{shown} is the current or home folder (or holds it); pass a new subfolder, e.g. {arg}=runs/proxy."
        )
    if path.is_dir():
        foreign = foreign_entries(path, markers, names)
        if foreign:
            raise OutputPathError(
                f"{shown} holds {_describe(foreign)}: writing there would replace the folder and delete "
                f"{'it' if len(foreign) == 1 else 'them'}. Pass a new or empty folder, or one written by proxy-rlhf."
            )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(
            f"{shown}: cannot create its parent folder ({exc.strerror}); pass a folder you can write."
        ) from exc
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"{shown}: its parent folder {str(path.parent)!r} is not writable; pass a folder you can write."
        )
    return path


def replace_dir(tmp: Path, target: Path, *, markers: Iterable[str], names: Iterable[str] | None = None) -> None:
    """Rename the finished folder ``tmp`` onto ``target``, replacing an existing ``target`` without losing it.

    An existing ``target`` is replaced only if it is ours (:func:`foreign_entries` with ``markers``
    and ``names``; ``names`` defaults to what ``tmp`` holds); otherwise :class:`OutputPathError` is
    raised and nothing moves. It is first renamed aside to a hidden
    sibling; if renaming ``tmp`` onto ``target`` then fails, the old folder is renamed back and the
    error is raised again; the old folder is deleted only once the new one is in place. ``tmp`` is
    the caller's to clean up on failure.
    """
    old = None
    if target.exists():
        names = [p.name for p in tmp.iterdir()] if names is None else names
        foreign = foreign_entries(target, markers, names) if target.is_dir() else [target.name]
        if foreign:
            raise OutputPathError(
                f"{str(target)!r} holds {_describe(foreign)}; it was not replaced. Pass a new or empty folder."
            )
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)  # put the only copy back before reporting the failure
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_and_clean(path: Path) -> None:
    """Undo what a save killed midway left: a checkpoint moved aside in the swap window goes back to ``path``;
    half-written ``.tmp-`` folders and ``.old-`` folders are deleted (they used to stay forever)."""
    olds = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not path.exists():
        for old in reversed(olds):
            if (old / path.name).is_dir():
                os.replace(old / path.name, path)
                logger.warning("restored the checkpoint %s from %s, where a killed save had left it", path, old)
                break
    for leftover in [*path.parent.glob(f".{path.name}.tmp-*"), *olds]:
        shutil.rmtree(leftover, ignore_errors=True)


def match_modes(tmp: Path, path: Path) -> None:
    """Give the new folder the old one's mode (or the umask's), and its files the umask's: mkdtemp makes 0700."""
    umask = _umask()
    os.chmod(tmp, path.stat().st_mode & 0o7777 if path.is_dir() else 0o777 & ~umask)
    for file in tmp.iterdir():
        os.chmod(file, 0o666 & ~umask)


def _umask() -> int:
    """The process's umask, read without changing it (Linux); elsewhere set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


_HELD: dict[str, FolderLock] = {}  # locks this process holds, by lock file path


class FolderLock:
    """An exclusive lock on output folder ``path`` (a ``flock`` on ``.<name>.lock`` beside it) while in use.

    Acquiring fails at once with :class:`FolderInUseError` naming ``arg`` and the holder's pid when
    another process, or another :class:`FolderLock` of this one, holds it. Releasing deletes the
    lock file while still holding the lock; an acquirer that locked a file deleted meanwhile sees
    that the path names another file now and tries again, so two runs never both hold it. A run
    killed with ``kill -9`` leaves the file behind, unlocked: the next run takes it.
    """

    def __init__(self, path: str | Path, *, arg: str = "path") -> None:
        self.path = Path(path).expanduser()
        self.file = self.path.parent / f".{self.path.name}.lock"
        self.arg = arg
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks; the folder checks still apply
            logger.warning("no fcntl on this platform: %s is not locked against a second run", self.path)
            return self
        self.file.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise FolderInUseError(
                    f"{self.arg}={str(self.path)!r} is being written by another run (pid {holder}; lock {str(self.file)!r}); "
                    f"wait for it to finish or pass another folder."
                ) from None
            try:
                if os.stat(self.file).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # the previous holder deleted the file we locked: lock the current one
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        _HELD[str(self.file.resolve())] = self
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        _HELD.pop(str(self.file.resolve()), None)
        try:
            os.unlink(self.file)
        except FileNotFoundError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def held_here(path: str | Path) -> bool:
    """True when this process holds the :class:`FolderLock` of ``path``."""
    lock = FolderLock(path)
    return str(lock.file.resolve()) in _HELD
