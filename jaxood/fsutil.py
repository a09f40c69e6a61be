"""Files that are never half-written, and the one JSON-plain conversion.

* :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json`: temp file
  in the same directory + ``os.replace``; permissions follow the umask (``mkstemp`` would
  leave 0600).
* :func:`atomic_dir`: build a directory under a temp name, then rename it into place; mode
  follows the umask (``mkdtemp`` would leave 0700, unreadable to other users and hosts on
  shared storage).
* :func:`locked` / :func:`merge_json`: the one path for files several processes update (a
  result store, a results table): an exclusive lock (``fcntl.flock`` on ``<file>.lock``),
  re-read the file's current content, merge into it, write atomically, unlock. Two runs into
  one folder therefore keep both runs' results, never only the last writer's.
* :func:`plain`: JSON-friendly copy of nested results (tuples -> lists, NumPy -> Python,
  non-finite floats -> ``None``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


def plain(obj: Any) -> Any:
    """JSON-friendly copy (tuples -> lists, numpy scalars/arrays -> Python, NaN/Inf -> None)."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if isinstance(obj, np.generic):
        return plain(obj.item())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def temp_prefix() -> str:
    """``.tmp-<pid>-``: temp files name their writer, so :func:`clean_stale_temps` can tell
    the leftovers of a killed process from the files of a running one."""
    return f".tmp-{os.getpid()}-"


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temp file in the same directory + ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(), dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str, obj: Any) -> None:
    """``plain(obj)`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(plain(obj), indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Holds an exclusive advisory lock on ``path`` (a ``<path>.lock`` file beside it) for the
    ``with`` block. The kernel releases it when the process dies, so a killed run never
    leaves the file locked; the small ``.lock`` file stays (it is not a temporary)."""
    fd = os.open(os.fspath(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_json(path: str) -> Any:
    """The JSON content of ``path``; ``ValueError`` naming it when it is corrupt."""
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is corrupt ({e}); move it away (or restore it) and retry"
                         ) from None


def merge_json(path: str, merge: Callable[[Any], Any]) -> Any:
    """Under :func:`locked`: ``new = merge(current)`` where ``current`` is the file's content
    read now (``None`` when it does not exist), written atomically; returns ``new``.

    ``merge`` must add to ``current`` (never drop what another process wrote) and may raise
    to refuse (e.g. results of another model), leaving the file as it was."""
    with locked(path):
        current = read_json(path) if os.path.isfile(path) else None
        new = merge(current)
        atomic_write_json(path, new)
    return new


def append_line(path: str, line: str) -> None:
    """Appends one line to ``path`` under :func:`locked` (a log several processes write)."""
    with locked(path), open(path, "a") as f:
        f.write(line.rstrip("\n") + "\n")


def check_not_read(out: str, files=(), folders=(), flag: str = "-o") -> None:
    """Refuses an output path that is one of the ``files`` a command reads, or lies inside one
    of the ``folders`` it reads (a detector, a model): writing it would destroy an input.
    Paths are compared after resolving symlinks."""
    target = os.path.realpath(os.fspath(out))
    for f in files:
        if target == os.path.realpath(os.fspath(f)):
            raise ValueError(f"{flag} {out!r} is one of the inputs ({f}); writing it would "
                             "replace that input: choose another output file")
    for d in folders:
        d = os.path.realpath(os.fspath(d))
        if target == d or target.startswith(d + os.sep):
            raise ValueError(f"{flag} {out!r} lies inside {d}, which this command reads; "
                             "choose an output outside it")


def clean_stale_temps(directory: str, prefix: str = ".tmp-", max_age_s: float = 86400.0) -> None:
    """Removes temp files ``prefix*`` in ``directory`` left by a killed process: those older
    than ``max_age_s``, or whose writer (``.tmp-<pid>-``) is no longer running."""
    for name in os.listdir(directory):
        if not name.startswith(prefix):
            continue
        path = os.path.join(directory, name)
        pid = name[len(prefix):].split("-", 1)[0]
        dead = pid.isdigit() and not _alive(int(pid))
        try:
            if os.path.isfile(path) and (dead or time.time() - os.path.getmtime(path) > max_age_s):
                os.unlink(path)
        except OSError:  # another process removed or owns it: not ours to fight over
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_can_create(path: str, flag: str = "output") -> None:
    """Raises ``PermissionError`` naming ``path`` when it cannot be created: its folder cannot
    be made or written (checked before any work, e.g. a fit, is done)."""
    parent = os.path.dirname(os.path.abspath(os.fspath(path)))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise PermissionError(
            f"{flag} {path!r}: its folder {parent!r} cannot be created ({e.strerror or e})"
        ) from None
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"{flag} {path!r}: folder {parent!r} is not writable")


def check_replaceable(directory: str, *, overwrite: bool, marker: str | None) -> None:
    """Raises ``FileExistsError`` unless ``directory`` is free, or may be replaced: it exists,
    ``overwrite`` is set and (with ``marker``) it holds that file, i.e. it is a directory of
    the kind being written, never a model or another folder given by mistake."""
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.exists(directory):
        return
    if not overwrite:
        raise FileExistsError(f"{directory} exists; pass overwrite=True (--overwrite) to replace it")
    if marker is not None and not os.path.isfile(os.path.join(directory, marker)):
        what = "a folder" if os.path.isdir(directory) else "a file"
        raise FileExistsError(
            f"refusing to replace {directory}: it is {what} without {marker}, not one this "
            "would write (overwrite only replaces its own kind); choose another path"
        )


@contextlib.contextmanager
def atomic_dir(
    directory: str, *, overwrite: bool = False, marker: str | None = None
) -> Iterator[str]:
    """Yields a temp directory beside ``directory``; on success it replaces ``directory``.

    Args:
      overwrite: replace an existing ``directory``.
      marker: a file every directory of this kind holds (e.g. ``detector.json``): an
        existing ``directory`` without it is never replaced, so ``overwrite`` cannot delete
        a model, a results folder or anything else by mistake.

    Raises:
      FileExistsError: ``directory`` exists and not ``overwrite``, or it is not a directory
        of this kind (checked before any work).
    """
    directory = os.path.abspath(os.fspath(directory))
    check_replaceable(directory, overwrite=overwrite, marker=marker)
    parent = os.path.dirname(directory)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=temp_prefix(), dir=parent)
    except OSError as e:
        raise PermissionError(
            f"cannot write {directory}: its folder {parent} cannot be created or written "
            f"({e.strerror or e})"
        ) from None
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)
        yield tmp
        if os.path.exists(directory):
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(directory: str | os.PathLike, filename: str, *, kind: str, make: str) -> dict:
    """The JSON object ``<directory>/<filename>`` that describes a saved artifact (a saved
    model's ``manifest.json``, a saved detector's ``detector.json``).

    Args:
      directory: the artifact's directory.
      filename: the manifest's file name.
      kind: what the directory should be, for messages (``"saved jaxood detector"``).
      make: how to make one, for messages (``"write one with `jaxood fit`"``).

    Raises:
      FileNotFoundError: no such directory, or no manifest in it.
      ValueError: the manifest is not valid JSON or not a JSON object.
    """
    directory = os.fspath(directory)
    path = os.path.join(directory, filename)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{kind} {directory!r} does not exist")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory!r} has no {filename}: not a {kind} ({make})")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is corrupt (invalid JSON: {e}); {make} again") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is corrupt (not a JSON object); {make} again")
    return manifest


def check_writable(path: str) -> None:
    """Creates ``path`` and writes/removes a probe file; clear error when not writable."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"output directory {path!r} is not writable ({e.strerror or e})") from None
