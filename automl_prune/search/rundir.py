"""A run directory: one process at a time (a lock file), and the paths stored in it relative to it.

Lock
    ``<run_dir>/run.lock`` holds one JSON line naming its holder (``pid``, ``host``, ``started``,
    ``command``) and is held with ``flock`` for as long as the holder works in the directory (a search, a
    resumed search, ``promote``). A second process is refused at once with :class:`RunDirBusyError`,
    which names the holder. The kernel drops the ``flock`` of a process that dies, even by ``kill -9``,
    so a lock file left behind by a killed process is stale by construction: the next process takes it
    over (and says so). The file is removed when its holder ends normally. A copied run directory may
    carry the file of a search that is still running in the original; its ``flock`` stays with the
    original, so the copy is free. On a file system without ``flock`` the lock falls back to the pid:
    a holder on this host whose pid is not alive is stale, any other holder is respected.

Paths
    Everything a run directory stores about itself is relative to it: trial records keep ``model_dir``
    and ``figures`` relative (:func:`stored_path`), and they are rooted again at the directory they are
    read from (:func:`loaded_path`), so a run directory that was moved or copied resumes, fronts and
    promotes in place. Paths outside the run directory (``--weights``, ``--space``) stay absolute.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from automl_prune.errors import AutomlPruneError

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunDirBusyError(AutomlPruneError):
    """Another process works in the run directory."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a run directory's lock."""

    pid: int
    host: str
    started: str
    command: str = "search"

    @classmethod
    def me(cls, command: str) -> Holder:
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%dT%H:%M:%S%z"), command)

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            d = json.loads(text)
            return cls(int(d["pid"]), str(d["host"]), str(d["started"]), str(d.get("command", "search")))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"`automl-prune {self.command}` (pid {self.pid} on host {self.host}, since {self.started})"

    def alive(self) -> bool:
        """Whether the holder may still run: a pid that exists on this host, or any holder elsewhere."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True


@dataclass
class RunDirLock:
    """A held lock; ``previous`` is the stale holder it took over from (None: the lock was free)."""

    run_dir: Path
    path: Path
    fd: int
    holder: Holder
    previous: Holder | None = None
    depth: int = 1

    def release(self) -> None:
        self.depth -= 1
        if self.depth > 0:
            return
        _HELD.pop(self.run_dir.resolve(), None)
        try:
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(self.fd), os.stat(self.path)):
                    self.path.unlink()  # still holding the flock: nobody can take it in between
        finally:
            os.close(self.fd)


_HELD: dict[Path, RunDirLock] = {}  # locks this process holds (a nested lock of the same dir is reentrant)


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _write(fd: int, holder: Holder) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(asdict(holder)) + "\n").encode())
    os.fsync(fd)


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: this file system has no ``flock``."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in _NO_FLOCK:
            return None
        raise
    return True


def _await_name(fd: int, wait_s: float = 1.0) -> Holder | None:
    """The holder's name, which it writes just after taking the lock: a search started at the same moment
    reads it again for up to ``wait_s`` so that its error names the process it lost to."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if (holder := Holder.parse(_read(fd))) is not None:
            return holder
    return None


def _busy(run_dir: Path, holder: Holder | None, what: str, flock: bool) -> RunDirBusyError:
    who = holder.describe() if holder else "another process (it has not written its name yet)"
    fix = "wait for it to finish (then --resume continues the search), or choose another --out"
    if not flock:  # only the pid tells, and a holder on another host cannot be checked from here
        fix += f"; if that process is gone, delete {run_dir / LOCK_FILE}"
    return RunDirBusyError(
        f"{run_dir} is in use by {who}; a run directory holds one search at a time, so this {what} "
        "did not start (nothing was changed)",
        fix,
    )


def lock_run_dir(run_dir: str | Path, command: str = "search") -> RunDirLock:
    """Take the lock of ``run_dir`` (created if missing) for ``command``, or raise :class:`RunDirBusyError`.

    Call :meth:`RunDirLock.release` when done (or use :func:`locked`).
    """
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key in _HELD:
        _HELD[key].depth += 1
        return _HELD[key]
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    me = Holder.me(command)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = _try_flock(fd)
            previous = Holder.parse(_read(fd))
            if locked is False:
                raise _busy(run_dir, previous or _await_name(fd), command, flock=True)
            if locked is None and previous is not None and previous.alive():
                raise _busy(run_dir, previous, command, flock=False)
            try:  # the file may have been removed by its last holder after we opened it: start over
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            _write(fd, me)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        if previous is not None:
            log.warning("%s: took over the stale lock of %s", run_dir, previous.describe())
        lock = RunDirLock(run_dir, path, fd, me, previous)
        _HELD[key] = lock
        return lock


@contextlib.contextmanager
def locked(run_dir: str | Path, command: str = "search") -> Iterator[RunDirLock]:
    """``with locked(run_dir, "promote"):`` -- :func:`lock_run_dir` released on exit."""
    lock = lock_run_dir(run_dir, command)
    try:
        yield lock
    finally:
        lock.release()


# ----------------------------------------------------------------------------------------------- paths


def stored_path(path: str | Path | None, run_dir: str | Path) -> str | None:
    """``path`` as stored in ``run_dir``: relative to it (POSIX separators) when inside it, else absolute."""
    if path is None:
        return None
    absolute = Path(path).resolve()
    try:
        return absolute.relative_to(Path(run_dir).resolve()).as_posix()
    except ValueError:
        return str(absolute)


def loaded_path(path: str | None, run_dir: str | Path, origin: str | Path | None = None) -> str | None:
    """A path read from ``run_dir``: a relative one is rooted at ``run_dir``. An absolute one inside
    ``origin`` (where the run directory was when an older version stored absolute paths) is moved to
    the same place in ``run_dir``; any other absolute path (outside the run directory) is kept."""
    if path is None:
        return None
    if origin is not None and Path(path).is_absolute():
        with contextlib.suppress(ValueError):
            return str(Path(run_dir) / Path(path).relative_to(origin))
    return str(Path(run_dir) / path)


def stored_origin(run_dir: str | Path) -> Path | None:
    """Where ``run_dir`` was when its search.json was written by a version that stored the absolute run
    directory (None: search.json stores ``"."``, or there is none)."""
    try:
        stored = json.loads((Path(run_dir) / "search.json").read_text()).get("run_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(stored) if isinstance(stored, str) and Path(stored).is_absolute() else None
