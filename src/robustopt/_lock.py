"""One writing process per run folder: an ``fcntl.flock`` on ``FOLDER/.lock``.

A run folder (``robustopt train --out``, and what ``eval``, ``sweep``, ``report``,
``reproduce`` and ``demo`` write into) is held by one process at a time. The kernel
drops the lock when its process ends, however it ends (``kill -9`` included), so a
lock never outlives its process and a crashed run resumes without clean-up. The file
records the holder's PID and command for the error message of a second process; the
last holder removes it. ``reproduce --only`` holds the experiment folder *shared*, so
that several of them can train side by side while a full ``reproduce`` (exclusive)
waits for none of them silently. Evaluations and sweeps hold the run folder shared and their
result file alone (``FOLDER/.eval-madry.lock``): ``eval`` and ``sweep`` of one run go side by
side, two writers of one result do not, and training waits for none of them. The layout of a run
folder and its result files are :mod:`robustopt.runs`'s; this module only locks.

    from robustopt._lock import hold
    with hold("runs/a", "train"):     # RunFolderBusyError if another process holds it
        ...
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import functools
import inspect
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from robustopt import distributed

__all__ = ["LOCK_NAME", "RunFolderBusyError", "hold", "holding"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # file systems without flock (some network ones)
_held: dict[str, list[int]] = {}  # lock file -> [fd, depth] of the locks this process holds (re-entrant)
F = TypeVar("F", bound=Callable[..., Any])


class RunFolderBusyError(BlockingIOError):
    """Another live process holds the run folder (its message names the folder and the PID)."""


@contextlib.contextmanager
def hold(folder: str | os.PathLike[str], command: str, *, create: bool = True,
         shared: bool = False, result: str | None = None) -> Iterator[Path]:
    """Hold the run folder ``folder`` for the block: create it if needed, then lock it.

    Re-entrant within a process. Under torchrun only rank 0 locks; a failure is raised
    on every rank. If the block fails, the folders this call created are removed again
    when they are empty, so a refused or failed command leaves nothing behind.

    Args:
        folder: the run folder.
        command: what the holder does ("train", "eval", ...), shown to a second process.
        create: create ``folder`` (and its parents) when missing; with False a missing
            folder is not locked (the caller reports it).
        shared: a shared lock (several holders; an exclusive one waits for none of them).
        result: the result (file stem, e.g. "eval-madry") this holder writes: the folder is held
            shared and ``FOLDER/.RESULT.lock`` exclusively.

    Yields:
        ``folder`` as a Path.

    Raises:
        RunFolderBusyError: another process holds the folder.
        NotADirectoryError: ``folder`` or one of its parents is a file.
        PermissionError / OSError: the folder cannot be created or written (read-only
            file system, no permission); the message names the path.
    """
    folder = Path(folder)
    ctx = distributed.setup()
    created: list[Path] = []
    keys: list[str] = []

    def acquire() -> None:
        if not create and not folder.is_dir():
            return
        created.extend(_make_folder(folder))
        try:
            keys.append(_lock(folder, command, shared or result is not None))
            if result is not None:
                keys.append(_lock(folder, command, False, name=f".{result}.lock", what=result))
        except BaseException:
            for key in reversed(keys):
                _unlock(key)
            _remove_empty(created)
            raise

    ctx.run_on_main(acquire)
    done = False
    try:
        yield folder
        done = True
    finally:
        for key in reversed(keys):
            _unlock(key)
        if not done:
            _remove_empty(created)


def holding(folder: Callable[[Mapping[str, Any]], Any], command: str, *, create: bool = True,
            shared: Callable[[Mapping[str, Any]], bool] | None = None,
            result: Callable[[Mapping[str, Any]], str] | None = None) -> Callable[[F], F]:
    """Decorator: run the function while holding (see :func:`hold`) the folder named by its arguments.

    Args:
        folder: maps the bound arguments (a dict, defaults applied) to the folder; None locks nothing.
        command: as in :func:`hold`.
        create: as in :func:`hold`.
        shared: maps the bound arguments to True for a shared lock.
        result: maps the bound arguments to the result written (see :func:`hold`).

    Example:
        >>> @holding(lambda a: a["out"], "train")
        ... def train_run(out, **config): ...
    """
    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            path = folder(bound.arguments)
            if path is None:
                return fn(*args, **kwargs)
            with hold(path, command, create=create, shared=bool(shared and shared(bound.arguments)),
                      result=result(bound.arguments) if result else None):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


# --- internals -----------------------------------------------------------------------------------


def _unwritable(folder: Path, err: OSError) -> OSError:
    """``err`` with a one-line message that names ``folder`` (same type, so callers can still tell it)."""
    return type(err)(f"cannot write to {folder}: {err.strerror or err}.")


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the created ones, outermost first."""
    missing = []
    p = folder
    while not p.is_dir():
        if p.exists() or p.is_symlink():
            if p == folder:
                raise NotADirectoryError(f"{folder} is a file, not a folder; pass the path of a folder "
                                         "(it is created when missing).")
            raise NotADirectoryError(f"cannot create the folder {folder}: {p} is a file.")
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            if not d.is_dir():
                _remove_empty(created)
                raise NotADirectoryError(f"cannot create the folder {folder}: {d} is a file.") from None
            continue  # made by another process meanwhile
        except OSError as err:
            _remove_empty(created)
            raise _unwritable(folder, err) from None
        created.append(d)
    return created


def _remove_empty(created: list[Path]) -> None:
    """Remove the folders of ``created`` (outermost first) that are empty, innermost first."""
    for d in reversed(created):
        with contextlib.suppress(OSError):
            d.rmdir()  # only succeeds on an empty folder


def _lock(folder: Path, command: str, shared: bool, name: str = LOCK_NAME, what: str = "") -> str:
    """Lock ``folder/name`` (re-entrant within this process); return the key for :func:`_unlock`."""
    path = folder / name
    key = os.path.realpath(path)
    if key in _held:
        _held[key][1] += 1
        return key
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise _unwritable(folder, err) from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderBusyError(_busy_message(folder, holder, what)) from None
        except OSError as err:
            if err.errno not in _NO_FLOCK:
                os.close(fd)
                raise _unwritable(folder, err) from None
            logger.warning("cannot lock %s (%s): nothing stops another process from writing into it meanwhile",
                           folder, err.strerror)
            break
        # The last holder removes the file on leaving: if it did so between our open and flock,
        # we locked a file that no longer has a name. Start over with the current one.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    _held[key] = [fd, 1]
    return key


def _unlock(key: str) -> None:
    entry = _held[key]
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _held[key]
    fd = entry[0]
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while others share it: then they remove it
        os.unlink(key)
    except OSError:
        pass
    finally:
        os.close(fd)  # releases the lock


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _busy_message(folder: Path, holder: Mapping[str, Any], what: str = "") -> str:
    who = f"PID {holder['pid']}" if holder.get("pid") else "its PID is not recorded yet"
    if holder.get("host") and holder["host"] != socket.gethostname():
        who += f" on {holder['host']}"
    if holder.get("command"):
        who += f", `robustopt {holder['command']}`"
    if holder.get("since"):
        who += f", since {holder['since']}"
    if what:
        return f"{folder / what}.* is being written by another process ({who}); wait until it ends."
    return (f"{folder} is in use by another process ({who}); wait until it ends, "
            "or use another folder.")
