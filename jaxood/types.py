"""The small set of types every part of jaxood agrees on.

* ``Features``: what a model's ``features`` function returns for a batch.
* ``Model``: a classifier given as two pure functions (features, head) plus metadata.
* ``Inputs``: what a detector's ``score``/``fit`` receive for a batch (cached arrays and,
  when the detector needs the network, the input images).
* ``Detector``: a record of plain functions (fit, score, optional extract) with its
  hyperparameter defaults and APS sweep grid.
* ``PreprocessSpec``: the exact eval preprocessing a checkpoint expects.

Score convention everywhere: one float per sample, **higher = more in-distribution**.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax

Array = jax.Array
Variables = Any  # a Flax variables dict, or any pytree the model functions accept
Stats = Any  # a pytree of fitted detector statistics


class Features(NamedTuple):
    """Outputs of a model's feature function for a batch of B inputs.

    Attributes:
      logits: ``[B, K]`` classifier logits, ``head(variables, feature)``.
      feature: ``[B, D]`` penultimate (pooled) vector the head consumes. Post-ReLU (>= 0)
        for CNNs; can be negative for transformers.
      feature_map: ``[B, H, W, C]`` map before global pooling (post-BN-ReLU for CNNs), or
        ``None`` when the architecture has none.
      attention: ``[B, T]`` last block's CLS-query attention row averaged over heads
        (transformers only), or ``None``.
    """

    logits: Array
    feature: Array
    feature_map: Array | None = None
    attention: Array | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A classifier as a pair of pure functions.

    Attributes:
      features: ``features(variables, x) -> Features`` with ``x`` of shape ``[B, H, W, C]``,
        already normalised. Pure; BatchNorm (if any) in inference mode.
      head: ``head(variables, feature) -> logits``; ``feature [B, D] -> [B, K]``. Must be the
        final affine layer, i.e. ``logits == head(variables, features(variables, x).feature)``.
      name: a label for messages and cache keys.
      num_classes: K, when known.
      feature_dim: D, when known.
      has_feature_map: whether ``features`` fills ``feature_map``.
      has_attention: whether ``features`` fills ``attention``.
      input_shape: ``(H, W, C)`` the model was built for, when known.

    Instances hash by identity so they can be closed over by ``jax.jit``.
    """

    features: Callable[[Variables, Array], Features]
    head: Callable[[Variables, Array], Array]
    name: str = "model"
    num_classes: int | None = None
    feature_dim: int | None = None
    has_feature_map: bool = False
    has_attention: bool = False
    input_shape: tuple[int, int, int] | None = None

    def logits(self, variables: Variables, x: Array) -> Array:
        """``[B, H, W, C] -> [B, K]`` logits."""
        return self.features(variables, x).logits


class Inputs(NamedTuple):
    """What a detector sees for one batch.

    Attributes:
      features: the model's ``Features`` for the batch (possibly from the on-disk cache).
      x: ``[B, H, W, C]`` normalised inputs, or ``None`` when scoring from cache. Detectors
        that declare ``"input"`` in ``needs`` require it.
      extras: arrays produced by the detector's own ``extract`` (e.g. AdaSCALE's perturbed
        features), keyed by name. Empty when the detector has no ``extract``.
    """

    features: Features
    x: Array | None = None
    extras: Mapping[str, Array] = {}  # noqa: RUF012 - immutable by convention

    @property
    def batch_size(self) -> int:
        return int(self.features.logits.shape[0])


#: Every value allowed in ``Detector.needs``.
NEEDS = frozenset({"logits", "feature", "feature_map", "attention", "input"})


@dataclasses.dataclass(frozen=True)
class Detector:
    """A post-hoc OOD detector as a record of plain functions.

    Attributes:
      name: registry name, e.g. ``"adascale_a"``.
      score: ``score(model, variables, stats, inputs, **hparams) -> [B]`` float scores,
        higher = more in-distribution. Pure and jit-able with the hyperparameters in
        ``static_hparams`` marked static; all other hyperparameters may be traced arrays.
        Receives every hyperparameter except those in ``extract_hparams`` and
        ``fit_only_hparams``.
      fit: ``fit(model, variables, data, **fit_hparams) -> stats`` where ``data`` maps split
        names in ``fit_splits`` (``"train"``, ``"val"``) to ``Inputs``. ``None`` when the
        detector needs no statistics (then ``stats`` is ``None``).
      fit_splits: ID splits ``fit`` needs, e.g. ``("val",)`` for ReAct (OpenOOD fits on ID-val).
      fit_hparams: names of the hyperparameters ``fit`` consumes; changing any of them
        requires re-fitting.
      extract: ``extract(model, variables, x, **extract_hparams) -> dict[str, Array]``: extra
        per-sample arrays that need the network (cached per extract-hyperparameter values).
      extract_hparams: the hyperparameters ``extract`` consumes.
      fit_only_hparams: hyperparameters only ``fit`` consumes (not passed to ``score``).
      static_hparams: hyperparameters that change array shapes (jit static arguments).
      defaults: default value of every hyperparameter.
      sweep: the APS grid: ordered mapping name -> list of values (Cartesian product in
        this order, first maximum wins). Empty when the method has no search.
      needs: subset of ``NEEDS``: what ``score``/``fit`` read from ``Inputs``.
      reference: where the formula comes from (paper/code), for users and docs.
      stream: True for test-time adaptive detectors whose score of a sample depends on the
        samples scored before it (OODD's OOD queue). ``score`` is then called once per
        evaluation stream (e.g. ID-test and one OOD set, permuted with a seed, as the
        release does) rather than per batch; it must not be batch-invariant.
    """

    name: str
    score: Callable[..., Array]
    fit: Callable[..., Stats] | None = None
    fit_splits: tuple[str, ...] = ()
    fit_hparams: tuple[str, ...] = ()
    extract: Callable[..., Mapping[str, Array]] | None = None
    extract_hparams: tuple[str, ...] = ()
    fit_only_hparams: tuple[str, ...] = ()
    static_hparams: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    sweep: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
    needs: frozenset[str] = frozenset({"logits"})
    reference: str = ""
    stream: bool = False

    def __post_init__(self):
        unknown = set(self.needs) - NEEDS
        if unknown:
            raise ValueError(
                f"Detector {self.name!r}: unknown needs {sorted(unknown)}; allowed: {sorted(NEEDS)}"
            )
        hparam_lists = (self.fit_hparams, self.extract_hparams, self.fit_only_hparams,
                        self.static_hparams, tuple(self.sweep))
        for key in (k for keys in hparam_lists for k in keys):
            if key not in self.defaults:
                raise ValueError(
                    f"Detector {self.name!r}: hyperparameter {key!r} has no default in `defaults`"
                )
        if self.fit is None and self.fit_splits:
            raise ValueError(f"Detector {self.name!r}: fit_splits given but no fit function")

    @property
    def needs_network(self) -> bool:
        """True when scoring cannot be done from cached features alone."""
        return "input" in self.needs

    def split_hparams(self, hparams: Mapping[str, Any]) -> tuple[dict, dict, dict]:
        """Splits full hyperparameters into (extract, fit, score) keyword dicts."""
        full = {**self.defaults, **hparams}
        unknown = set(full) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"Detector {self.name!r}: unknown hyperparameters {sorted(unknown)}; "
                f"valid: {sorted(self.defaults)}"
            )
        extract = {k: full[k] for k in self.extract_hparams}
        fit = {k: full[k] for k in (*self.fit_hparams, *self.fit_only_hparams)}
        skip = set(self.extract_hparams) | set(self.fit_only_hparams)
        score = {k: v for k, v in full.items() if k not in skip}
        return extract, fit, score


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """Eval preprocessing, torchvision style: resize shorter side -> centre crop -> /255 -> normalise.

    Attributes:
      resize_size: target of the shorter side (``None``: no resize).
      crop_size: centre-crop size (square), or ``None`` for no crop.
      interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"`` (PIL, with antialiasing).
      mean, std: per-channel normalisation applied after scaling to [0, 1].
      channels: 3 for RGB models (grayscale images are replicated), 1 for grayscale models.
    """

    resize_size: int | None
    crop_size: int | None
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    channels: int = 3

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessSpec:
        d = dict(d)
        d["mean"] = tuple(d["mean"])
        d["std"] = tuple(d["std"])
        return cls(**d)
