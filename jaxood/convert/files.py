"""Reading PyTorch state-dict files (``.safetensors`` without torch, ``.pth`` with it) as
NumPy arrays, for every converter (:mod:`jaxood.convert.torchvision`,
:mod:`jaxood.convert.openood`)."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

TORCH_EXTRA_HINT = "pip install 'jaxood[torch]'"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- reading files


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict as ``{name: float32/int NumPy array}``.

    ``.safetensors`` is read with the ``safetensors`` NumPy API (no torch). Anything else
    (``.pth``, ``.pt``, ``.bin``) is read with ``torch.load(weights_only=True)``; a checkpoint
    dict wrapping the weights under ``state_dict``/``model`` and a ``module.`` prefix
    (DataParallel) are unwrapped.

    Raises:
      FileNotFoundError: no such file.
      ImportError: a ``.pth`` file but torch is not installed (names the extra to install).
      ValueError: truncated/corrupt file or contents that are not a state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    name = os.path.basename(path)
    if path.endswith(".safetensors"):
        tensors = _read_safetensors(path)
    else:
        tensors = _read_torch(path)
    if not tensors:
        raise ValueError(f"{name}: the file contains no tensors")
    return _unwrap(tensors)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError:  # pragma: no cover - safetensors is a core dependency
        raise ImportError(
            "reading .safetensors needs the `safetensors` package: pip install safetensors"
        ) from None
    try:
        return dict(load_file(path))
    except TypeError as e:
        if "bfloat16" not in str(e):
            raise
        return _read_safetensors_bf16(path)  # NumPy has no bfloat16: parse via ml_dtypes
    except Exception as e:  # safetensors raises SafetensorError / OSError / ValueError
        raise ValueError(
            f"{os.path.basename(path)}: not a readable safetensors file (truncated or corrupt?): "
            f"{type(e).__name__}: {e}"
        ) from e


_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def _read_safetensors_bf16(path: str) -> dict[str, np.ndarray]:
    """Minimal safetensors reader (8-byte header size, JSON header, raw little-endian data)."""
    import ml_dtypes  # only for bfloat16 files

    with open(path, "rb") as f:
        buf = f.read()
    n = int.from_bytes(buf[:8], "little")
    header = json.loads(buf[8 : 8 + n])
    header.pop("__metadata__", None)
    out = {}
    for k, h in header.items():
        dtype = ml_dtypes.bfloat16 if h["dtype"] == "BF16" else np.dtype(_ST_DTYPES[h["dtype"]])
        start, end = h["data_offsets"]
        arr = np.frombuffer(buf[8 + n + start : 8 + n + end], dtype=dtype).reshape(h["shape"])
        out[k] = arr.astype(np.float32) if h["dtype"] == "BF16" else arr.copy()
    return out


def _read_torch(path: str) -> dict[str, Any]:
    name = os.path.basename(path)
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{name}: reading a PyTorch .pth file needs torch, which is not installed. Install the "
            f"torch extra ({TORCH_EXTRA_HINT}) or convert the file to .safetensors on a machine "
            "with torch (safetensors.torch.save_file(torch.load(f), 'model.safetensors'))."
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError/zipfile errors
        hint = "truncated or corrupt file?"
        if isinstance(e, EOFError | zipfile.BadZipFile) or "zip" in str(e).lower():
            hint = "the file is truncated or corrupt (incomplete download?)"
        elif "weights_only" in str(e):
            hint = (
                "it contains pickled Python objects, not only tensors; save "
                "model.state_dict() instead of the whole model"
            )
        raise ValueError(
            f"{name}: could not read it with torch.load: {hint} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from e
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{name}: expected a state dict (a mapping of tensors), found {type(obj).__name__}"
        )
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if (
            wrapper in obj
            and isinstance(obj[wrapper], Mapping)
            and not hasattr(obj[wrapper], "shape")
        ):
            obj = obj[wrapper]
            break
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(
                f"{name}: entry {k!r} is a {type(v).__name__}, not a tensor; not a state dict"
            )
        # bfloat16 has no NumPy dtype: go through float32 (params are kept in float32 anyway).
        v = v.detach().cpu()
        out[k] = (v.float() if v.is_floating_point() else v).numpy()
    return out


def _unwrap(tensors: dict[str, Any]) -> dict[str, np.ndarray]:
    """Strips a DataParallel ``module.`` prefix."""
    keys = list(tensors)
    if keys and all(k.startswith("module.") for k in keys):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors
