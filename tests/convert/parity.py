"""Reusable torchvision -> jaxood parity check (used by every architecture's conversion test).

Usage from a test (``tmp_path`` is pytest's fixture)::

    from tests.convert.parity import assert_parity

    def test_resnet50(tmp_path):
        assert_parity("resnet50", tmp_path, input_size=64,
                      stages={"layer1": "layer1", "layer3": "layer3"})

What :func:`assert_parity` does:

1. builds ``torchvision.models.<builder>(num_classes=..., **tv_kwargs)`` with a fixed seed and
   randomises every BatchNorm's running mean/var, and every parameter the builder
   initialises to a constant (BN/LayerNorm scale & bias, zero-initialised heads, class
   tokens), so that swapped or unmapped tensors cannot go unnoticed;
2. saves its ``state_dict()`` to ``tmp_path/model.pth`` (or ``.safetensors``);
3. runs ``jaxood.convert.torchvision.convert`` (file -> orbax dir + manifest) and
   ``load_converted`` (dir -> model functions + variables), i.e. the real user path;
4. runs both on the same random input (NCHW for torch, NHWC for JAX) under
   ``jax.default_matmul_precision("highest")`` (eager, no jit, unless ``jit=True``);
5. compares logits, the penultimate feature (torch side: a forward *pre*-hook on the final
   Linear named by ``ARCHS[arch].head_key``; jax side: ``Features.feature``),
   ``head(feature) == logits`` on the jax side, and each requested intermediate stage, with
   the error ``max|jax - torch| / max|torch|`` <= ``tol``. It raises one AssertionError
   listing every comparison that failed (so a mismatch points at its first bad layer).

Intermediate stages: ``stages`` maps a torch module name (``model.get_submodule(name)``,
captured with a forward hook) to the name under which the Flax module ``sow``s the same
tensor into the ``"intermediates"`` collection (``self.sow("intermediates", "layer1", x)``
-> ``"layer1"``; a value sown by a submodule is reached with a ``/`` path such as
``"encoder/layer_3"``). Sowing costs nothing at inference: the collection is only
materialised when it is mutable. 4-D torch outputs are permuted NCHW -> NHWC when that
makes the shapes agree; outputs that already match (Swin's NHWC stages, ViT tokens) are
compared as they are.

Returns the dict of relative errors (useful for printing).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

DEFAULT_TOL = 1e-4


def randomize_torch_model(model, seed: int = 0) -> None:
    """Randomises BN running stats and every constant-initialised parameter, in place."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=g))
        for _, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            if flat.numel() and bool((flat == flat[0]).all()):
                std = 0.1 if p.ndim <= 1 else 0.02
                p.add_(std * torch.randn(p.shape, generator=g))


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _lookup(tree: Mapping[str, Any], path: str):
    node: Any = tree
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            keys = list(node) if isinstance(node, Mapping) else type(node).__name__
            raise KeyError(f"intermediate {path!r} not found (at {part!r}; have {keys})")
        node = node[part]
    if isinstance(node, Mapping) and "__call__" in node:
        node = node["__call__"]
    if isinstance(node, tuple):
        node = node[0]
    return np.asarray(node)


def _to_layout(t: np.ndarray, like_shape: tuple[int, ...]) -> np.ndarray:
    if t.ndim == 4 and t.transpose(0, 2, 3, 1).shape == tuple(like_shape):
        return t.transpose(0, 2, 3, 1)
    return t


def convert_via_file(
    state_dict,
    arch: str,
    tmp_path,
    *,
    input_size: int,
    num_classes: int = 1000,
    arch_kwargs: Mapping[str, Any] | None = None,
    fmt: str = "pth",
):
    """The real user path: save ``state_dict`` as ``model.<fmt>`` in ``tmp_path``, run
    ``convert()`` and ``load_converted()``. Returns ``(source file, LoadedConverted)``."""
    import torch

    from jaxood.convert.torchvision import convert, load_converted

    src = pathlib.Path(tmp_path) / f"model.{fmt}"
    if fmt == "pth":
        torch.save(state_dict, src)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(src))
    else:
        raise ValueError(f"fmt must be 'pth' or 'safetensors', got {fmt!r}")
    out = convert(
        src,
        arch,
        pathlib.Path(tmp_path) / "converted",
        num_classes=num_classes,
        arch_kwargs=arch_kwargs,
        input_size=input_size,
    )
    return src, load_converted(out)


def assert_parity(
    arch: str,
    tmp_path: pathlib.Path,
    *,
    input_size: int = 64,
    batch: int = 1,
    num_classes: int = 1000,
    stages: Mapping[str, str] | None = None,
    tv_kwargs: Mapping[str, Any] | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    fmt: str = "pth",
    tol: float = DEFAULT_TOL,
    seed: int = 0,
    jit: bool = False,
) -> dict[str, float]:
    """Converts a random torchvision ``arch`` with jaxood and checks outputs match.

    Args:
      arch: jaxood/torchvision architecture name (a key of ``jaxood.convert.torchvision.ARCHS``).
      tmp_path: a writable temp directory (pytest's ``tmp_path``).
      input_size: square input side (small sizes keep CNN tests fast; transformers need a
        size their ``image_size``/window config accepts).
      batch: batch size of the random input.
      num_classes: K of both models.
      stages: torch module name -> Flax sown intermediate name/path, compared too.
      tv_kwargs: extra kwargs of the torchvision builder (e.g. ``{"image_size": 32}``).
      arch_kwargs: extra kwargs of the jaxood factory (recorded in the manifest).
      fmt: ``"pth"`` (torch.save) or ``"safetensors"``.
      tol: max allowed ``max|jax - torch| / max|torch|`` per compared tensor.
      seed: seeds the torch init, the randomisation and the input.
      jit: run the jax side jitted (default eager, which is faster for one call).

    Returns:
      ``{name: relative error}`` for logits, feature, head and each stage.

    Raises:
      AssertionError: listing every comparison above ``tol``.
    """
    import torch
    import torchvision

    from jaxood.convert.torchvision import ARCHS

    info = ARCHS[arch]
    torch.manual_seed(seed)
    tv = getattr(torchvision.models, info.builder)(num_classes=num_classes, **dict(tv_kwargs or {}))
    tv.eval()
    randomize_torch_model(tv, seed)

    _, loaded = convert_via_file(
        tv.state_dict(),
        arch,
        tmp_path,
        input_size=input_size,
        num_classes=num_classes,
        arch_kwargs=arch_kwargs,
        fmt=fmt,
    )

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 3, input_size, input_size)).astype(np.float32)

    captured: dict[str, np.ndarray] = {}
    hooks = []
    head_name = info.head_key.rsplit(".", 1)[0]

    def pre_hook(_mod, args):
        captured["__feature__"] = args[0].detach().numpy().copy()

    hooks.append(tv.get_submodule(head_name).register_forward_pre_hook(pre_hook))
    for name in stages or {}:

        def hook(_mod, _args, output, name=name):
            captured[name] = output.detach().numpy().copy()

        hooks.append(tv.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            tv_logits = tv(torch.from_numpy(x)).numpy()
    finally:
        for h in hooks:
            h.remove()

    x_nhwc = x.transpose(0, 2, 3, 1)
    module, variables = loaded.module, loaded.variables

    def run(v, xx):
        return module.apply(v, xx, train=False, mutable=["intermediates"])

    with jax.default_matmul_precision("highest"):
        fn = jax.jit(run) if jit else run
        feats, state = fn(variables, x_nhwc)
        head_logits = loaded.model.head(variables, feats.feature)
    inter = state.get("intermediates", {})

    errors = {
        "logits": _rel_err(feats.logits, tv_logits),
        "feature": _rel_err(feats.feature, captured["__feature__"]),
        "head(feature)": _rel_err(head_logits, tv_logits),
    }
    for tname, fname in (stages or {}).items():
        j = _lookup(inter, fname)
        errors[f"{tname}->{fname}"] = _rel_err(j, _to_layout(captured[tname], j.shape))
    assert loaded.manifest["feature_dim"] == info.feature_dim, loaded.manifest["feature_dim"]
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, (
        f"{arch}: jaxood vs torchvision relative errors above {tol}: {bad} (all: {errors})"
    )
    return errors
