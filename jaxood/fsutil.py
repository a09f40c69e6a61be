"""Files that are never half-written, and the one JSON-plain conversion.

* :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json`: temp file
  in the same directory + ``os.replace``; permissions follow the umask (``mkstemp`` would
  leave 0600).
* :func:`atomic_dir`: build a directory under a temp name, then rename it into place; mode
  follows the umask (``mkdtemp`` would leave 0700, unreadable to other users and hosts on
  shared storage).
* :func:`plain`: JSON-friendly copy of nested results (tuples -> lists, NumPy -> Python,
  non-finite floats -> ``None``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
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


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temp file in the same directory + ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
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
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
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
