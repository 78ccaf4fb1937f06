"""The output directory of ``ddtrace run``/``demo``: usable, and used by one run at a time.

:func:`claim_out_dir` creates the directory (a one-line ConfigError when it cannot: a path under
a file, a read-only file system, no permission) and takes an exclusive ``flock`` on
``DIR/.ddtrace.lock`` for the whole run, so a second run into the same directory is refused
instead of interleaving two datasets and two records. The lock dies with the process (a killed
run leaves no stale lock to clean up; ``--resume`` can claim the directory at once). The file
holds the owner's pid, only to name it in the error.

Claiming the directory does not touch ``data.jsonl`` or ``run.jsonl``: they are replaced only
once the run has really started (the engine opens them after its checks).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from ddscope.errors import ConfigError

LOCK_FILE = ".ddtrace.lock"


class OutDirClaim:
    """Holds the directory's lock until :meth:`release` (or the end of a ``with``)."""

    def __init__(self, directory: Path, fd: int) -> None:
        self.directory = directory
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> OutDirClaim:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def claim_out_dir(directory: Path, option: str = "--out") -> OutDirClaim:
    """Creates ``directory`` if needed and locks it for this run; ConfigError otherwise."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise ConfigError(f"{option} {directory}: exists and is not a directory") from exc
    except OSError as exc:
        raise ConfigError(f"{option} {directory}: cannot create: {exc.strerror}") from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {directory}: not writable ({_why_not_writable(directory)})")
    lock = directory / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(
            f"{option} {directory}: cannot create {LOCK_FILE}: {exc.strerror}"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        owner = _read_owner(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ConfigError(
                f"{option} {directory}: another ddtrace run{owner} is writing there "
                f"(lock {lock}); wait for it or choose another directory"
            ) from exc
        raise ConfigError(f"{option} {directory}: cannot lock {lock}: {exc.strerror}") from exc
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return OutDirClaim(directory, fd)


def _read_owner(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""


def _why_not_writable(directory: Path) -> str:
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "permission denied"
