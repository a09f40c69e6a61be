"""The small set of types every part of jaxood agrees on.

* ``Features``: what a model's ``features`` function returns for a batch.
* ``Model``: a classifier given as two pure functions (features, head) plus metadata.
* ``Inputs``: what a detector's ``score``/``fit`` receive for a batch (cached arrays and,
  when the detector needs the network, the input images).
* ``HParam`` / ``Detector``: a record of plain functions (fit, score, optional extract) with
  one hyperparameter table (default, APS grid, consuming stage, static or traced).
* ``HParamPoint``: one detector's hyperparameters at one point, resolved and validated once
  and split into the groups each stage uses (``Detector.point``).
* ``PreprocessSpec``: the exact eval preprocessing a checkpoint expects.

Score convention everywhere: one float per sample, **higher = more in-distribution**.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

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
        that declare ``"input"`` in ``needs`` require it. In the ``data`` given to ``fit``
        it may instead be a lazily batched source (``len(x)`` and ``x.batch(start, stop)
        -> [n, H, W, C]`` float32) when the split is larger than the in-memory image
        budget: fits that read images iterate it (``jaxood.detectors.oodd.image_batches``).
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

#: The stage that consumes a hyperparameter: the detector's ``extract`` (per-sample arrays
#: that need the network; cached per value), its ``fit`` (fitted statistics; re-fit per value)
#: or its ``score``.
ROLES = ("extract", "fit", "score")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def plain_value(v: Any) -> Any:
    """NumPy scalars -> Python numbers, lists -> tuples (recursively): a hashable value."""
    if isinstance(v, (list, tuple)):
        return tuple(plain_value(x) for x in v)
    if isinstance(v, np.generic):
        return v.item()
    return v


@dataclasses.dataclass(frozen=True)
class HParam:
    """One hyperparameter of a detector: its default, APS grid, consuming stage, staticness.

    Attributes:
      default: the value used when none is given. Its type fixes what values are accepted:
        a number takes finite numbers, a tuple takes a sequence of the same length, a bool
        takes bools, a string takes strings.
      sweep: the APS grid values (OpenOOD order); ``()`` = not searched.
      role: ``"extract"``, ``"fit"`` or ``"score"`` (see ``ROLES``): the one stage whose
        function receives it. What ``score`` needs from a fit-time hyperparameter travels in
        the fitted statistics.
      static: True when array shapes or Python control flow depend on the value (a ``jax.jit``
        static argument). Non-numeric values (bool, str) must be static; numbers and tuples
        of numbers that are not static are passed to the jitted scorer as traced arrays, so
        sweeping them re-uses one compiled program.
      check: optional ``check(value, name)`` raising ``ValueError`` for invalid values (e.g.
        ``jaxood.validate.check_percentile``).
      doc: one line for ``jaxood detectors`` and the docs.
      any_length: a tuple default whose length may differ (e.g. a per-channel std).
    """

    default: Any
    sweep: tuple = ()
    role: str = "score"
    static: bool = False
    check: Callable[[Any, str], None] | None = None
    doc: str = ""
    any_length: bool = False

    def __post_init__(self):
        object.__setattr__(self, "default", plain_value(self.default))
        object.__setattr__(self, "sweep", tuple(plain_value(v) for v in self.sweep))
        if self.role not in ROLES:
            raise ValueError(f"HParam role must be one of {ROLES}, got {self.role!r}")
        if not self.static and not _numeric_like(self.default):
            raise ValueError(
                f"HParam default {self.default!r} is not a number or tuple of numbers, so it "
                "cannot be traced by jax.jit: declare it static=True"
            )

    def validate(self, value: Any, name: str) -> Any:
        """Checks ``value`` against the default's type (and ``check``); returns it plain.

        Raises:
          ValueError: naming ``name``, what was expected and what was given.
        """
        value = plain_value(value)
        d = self.default
        if isinstance(d, tuple):
            if not isinstance(value, tuple) or (len(value) != len(d) and not self.any_length):
                raise ValueError(
                    f"`{name}` must be a sequence of {len(d)} values like {list(d)}, got {value!r}"
                )
            bad = [v for v in value if not _is_number(v) or not np.isfinite(v)]
            if all(_is_number(v) for v in d) and bad:
                raise ValueError(f"`{name}` must hold finite numbers, got {list(value)}")
        elif isinstance(d, bool):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"`{name}` must be True or False, got {value!r}")
        elif _is_number(d):
            if not _is_number(value) or not np.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}")
            if isinstance(d, int) and self.static and value != int(value):
                raise ValueError(f"`{name}` must be an integer, got {value!r}")
        elif isinstance(d, str) and not isinstance(value, str):
            raise ValueError(f"`{name}` must be a string, got {value!r}")
        if self.check is not None:
            self.check(value, name)
        return value


def _numeric_like(v: Any) -> bool:
    if isinstance(v, tuple):
        return bool(v) and all(_is_number(x) for x in v)
    return _is_number(v)


@dataclasses.dataclass(frozen=True, eq=False)
class Detector:
    """A post-hoc OOD detector as a record of plain functions and one hyperparameter table.

    Attributes:
      name: registry name, e.g. ``"adascale_a"``.
      score: ``score(model, variables, stats, inputs, **score_hparams) -> [B]`` float scores,
        higher = more in-distribution. Pure and jit-able: the hyperparameters with
        ``role="score"`` are its keyword arguments (static ones as jit static arguments).
      fit: ``fit(model, variables, data, **fit_hparams) -> stats`` where ``data`` maps split
        names in ``fit_splits`` (``"train"``, ``"val"``) to ``Inputs``; receives exactly the
        ``role="fit"`` hyperparameters and returns an instance of ``stats_type``. ``None``
        when the detector needs no statistics (then ``stats`` is ``None``).
      fit_splits: ID splits ``fit`` needs, e.g. ``("val",)`` for ReAct (OpenOOD fits on ID-val).
      extract: ``extract(model, variables, x, **extract_hparams) -> dict[str, Array]``: extra
        per-sample arrays that need the network (cached per extract-hyperparameter values).
      extract_features: optional ``extract_features(model, variables, x, **extract_hparams)
        -> (Features, dict)``: ``extract``'s outputs together with the clean
        ``model.features(variables, x)`` its pass already computes (AdaSCALE's forward inside
        ``jax.vjp``); the extras bit-identical to ``extract``'s. Declaring it lets the feature
        pipeline compute a split's features and extras in one pass (one decode, one clean
        forward) when both are needed, after checking on one batch that the features have
        the plain forward's bits (XLA may round an op differently inside a gradient).
      hparams: ``{name: HParam}``, the one table of hyperparameters (dict order = APS order).
      stats_type: the pytree class ``fit`` returns (a ``flax.struct`` dataclass): saved,
        loaded, sharded and checked as such. ``None`` when there is no ``fit``.
      needs: subset of ``NEEDS``: what ``score``/``fit`` read from ``Inputs``.
      reference: where the formula comes from (paper/code), for users and docs.
      stream: True for test-time adaptive detectors whose score of a sample depends on the
        samples scored before it (OODD's OOD queue). ``score`` is then called once per
        evaluation stream (a fresh state, the batch in order) rather than per batch; it is
        not batch-invariant. Stream detectors also give ``init_state`` and ``step`` so a
        deployed detector can continue its stream across calls (and save its state).
      init_state: stream detectors: ``init_state(stats, feature_dim, **score_hparams) ->
        state`` (a pytree of arrays), the state before the first sample.
      step: stream detectors: ``step(model, variables, stats, state, inputs, valid,
        **score_hparams) -> (scores [B], state)``; rows where ``valid [B]`` is False (padding)
        are scored but never enter the state. Pure and jit-able.
      version: bump it when ``extract`` or ``fit`` change their output for the same inputs:
        it is part of every feature-cache key and saved detector, so stale cached arrays are
        never reused.
      dim_grid: optional ``dim_grid(D) -> {name: values}``: for a model whose feature
        dimension D the published grid does not fit (ViM's ``dim`` must be < D), the values
        that replace a hyperparameter's sweep (the first one also replaces its default);
        ``{}`` when the published grid fits. The benchmark runner and ``jaxood.fit`` apply
        it to hyperparameters the user did not give, and record it.
      dim_check: optional ``dim_check(hparams, D)`` raising ``ValueError`` (naming the
        hyperparameter, D and a value that works) when resolved ``hparams`` cannot work at
        feature dimension D, e.g. a percent of D that rounds to 0 elements; called before
        any network pass.
    """

    name: str
    score: Callable[..., Array]
    fit: Callable[..., Stats] | None = None
    fit_splits: tuple[str, ...] = ()
    extract: Callable[..., Mapping[str, Array]] | None = None
    extract_features: Callable[..., tuple[Features, Mapping[str, Array]]] | None = None
    hparams: Mapping[str, HParam] = dataclasses.field(default_factory=dict)
    stats_type: type | None = None
    needs: frozenset[str] = frozenset({"logits"})
    reference: str = ""
    stream: bool = False
    init_state: Callable[..., Any] | None = None
    step: Callable[..., tuple[Array, Any]] | None = None
    version: str = "1"
    dim_grid: Callable[[int], Mapping[str, tuple]] | None = None
    dim_check: Callable[[Mapping[str, Any], int], None] | None = None

    def __post_init__(self):
        unknown = set(self.needs) - NEEDS
        if unknown:
            raise ValueError(
                f"Detector {self.name!r}: unknown needs {sorted(unknown)}; allowed: {sorted(NEEDS)}"
            )
        for key, hp in self.hparams.items():
            if not isinstance(hp, HParam):
                raise TypeError(f"Detector {self.name!r}: hparams[{key!r}] must be an HParam")
        if self.fit is None and (self.fit_splits or self.names("fit")):
            raise ValueError(
                f"Detector {self.name!r}: fit_splits or role='fit' hyperparameters given but "
                "no fit function"
            )
        if self.extract is None and self.names("extract"):
            raise ValueError(
                f"Detector {self.name!r}: role='extract' hyperparameters given but no extract"
            )
        if self.stream != (self.step is not None) or self.stream != (self.init_state is not None):
            raise ValueError(
                f"Detector {self.name!r}: stream=True needs init_state and step (and only "
                "stream detectors have them)"
            )
        _check_signature(self.name, "score", self.score, self.names("score"), 4)
        if self.stream:
            _check_signature(self.name, "step", self.step, self.names("score"), 6)
            _check_signature(self.name, "init_state", self.init_state, self.names("score"), 2)
        if self.fit is not None:
            _check_signature(self.name, "fit", self.fit, self.names("fit"), 3)
        if self.extract is not None:
            _check_signature(self.name, "extract", self.extract, self.names("extract"), 3)
        if self.extract_features is not None:
            if self.extract is None:
                raise ValueError(f"Detector {self.name!r}: extract_features given without "
                                 "extract (it returns extract's outputs with the features)")
            _check_signature(self.name, "extract_features", self.extract_features,
                             self.names("extract"), 3)

    def names(self, role: str) -> tuple[str, ...]:
        """Hyperparameter names with ``role`` (``"extract"``, ``"fit"``, ``"score"``)."""
        return tuple(k for k, hp in self.hparams.items() if hp.role == role)

    @property
    def static_names(self) -> frozenset[str]:
        return frozenset(k for k, hp in self.hparams.items() if hp.static)

    @property
    def defaults(self) -> dict[str, Any]:
        """``{name: default}`` of every hyperparameter."""
        return {k: hp.default for k, hp in self.hparams.items()}

    @property
    def sweep(self) -> dict[str, tuple]:
        """The APS grid: ``{name: values}`` for the searched hyperparameters, in table order."""
        return {k: hp.sweep for k, hp in self.hparams.items() if hp.sweep}

    @property
    def needs_network(self) -> bool:
        """True when scoring cannot be done from cached features alone."""
        return "input" in self.needs

    def resolve(self, hparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults completed with ``hparams``, every value validated (table order).

        Raises:
          ValueError: an unknown name (the valid ones are listed) or an invalid value.
        """
        hparams = dict(hparams or {})
        unknown = set(hparams) - set(self.hparams)
        if unknown:
            raise ValueError(
                f"detector {self.name!r}: unknown hyperparameter(s) {sorted(unknown)}; "
                f"valid: {sorted(self.hparams) or 'none'}"
            )
        return {
            k: hp.validate(hparams.get(k, hp.default), k) for k, hp in self.hparams.items()
        }

    def split_hparams(self, hparams: Mapping[str, Any]) -> tuple[dict, dict, dict]:
        """Full hyperparameters -> the (extract, fit, score) keyword dicts."""
        point = self.point(hparams)
        return dict(point.extract), dict(point.fit), dict(point.score)

    def point(self, hparams: Mapping[str, Any] | None = None) -> HParamPoint:
        """``hparams`` resolved and validated once into an :class:`HParamPoint`; a point of
        this detector is returned as it is (passed down, never validated again).

        Raises:
          ValueError: an unknown name or an invalid value (see :meth:`resolve`).
        """
        if isinstance(hparams, HParamPoint) and hparams.detector is self:
            return hparams
        return HParamPoint(self, self.resolve(hparams))


class HParamPoint(Mapping):
    """One detector's hyperparameters at one point (a grid point of APS, a fitted detector's
    setting), resolved and validated once, split into the groups the stages use.

    A read-only mapping ``{name: value}`` of every hyperparameter (table order, plain values:
    tuples, Python numbers), so it is written to JSON and compared like the dict it replaces.
    Build it with :meth:`Detector.point`.

    Attributes:
      detector: the detector it belongs to.
      extract, fit, score: ``{name: value}`` of each role (the keyword arguments of the stage).
      traced: ``{name: array}`` of the non-static score hyperparameters: arguments of the
        compiled programs (float32 when the default is a float or the value is not an
        integer, so a sweep mixing 1 and 0.5 compiles once; int32 otherwise).
      score_static: sorted ``((name, value), ...)`` of the static score hyperparameters: part
        of a compiled program's cache key (programs on cached arrays).
      image_static: ``score_static`` plus every extract hyperparameter (always static: it
        selects cached arrays): the key of programs that run the network.
      fit_key: sorted ``((name, value), ...)`` of the extract and fit hyperparameters: what
        fitted statistics depend on (hashable).
    """

    def __init__(self, detector: Detector, resolved: Mapping[str, Any]):
        self.detector = detector
        self._values = dict(resolved)
        groups = {role: {k: self._values[k] for k in detector.names(role)} for role in ROLES}
        self.extract, self.fit, self.score = groups["extract"], groups["fit"], groups["score"]
        static = {k: v for k, v in self.score.items() if detector.hparams[k].static}
        self.traced = {
            k: np.asarray(v, _traced_dtype(detector.hparams[k].default, v))
            for k, v in self.score.items() if k not in static
        }
        self.score_static = tuple(sorted(static.items()))
        self.image_static = tuple(sorted({**static, **self.extract}.items()))
        self.fit_key = tuple(sorted({**self.extract, **self.fit}.items()))

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"HParamPoint({self.detector.name!r}, {self._values})"


def _traced_dtype(default: Any, value: Any):
    """float32 when the default is a float (so a sweep mixing 1 and 0.5 compiles once) or the
    value is not an integer (never truncated); int32 otherwise."""
    def floats(v):
        return [x for x in np.ravel(np.asarray(v, object)) if isinstance(x, float)]

    if floats(default) or any(x != int(x) for x in floats(value)):
        return np.float32
    return np.int32


def _check_signature(det: str, stage: str, fn: Callable, names: tuple[str, ...], npos: int):
    """A stage function must take exactly its role's hyperparameters as keyword arguments."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins / C functions: nothing to check
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    keywords = {p.name for p in params[npos:] if p.kind is not p.VAR_POSITIONAL}
    if keywords != set(names):
        raise ValueError(
            f"Detector {det!r}: {stage}() takes keyword arguments {sorted(keywords)} but the "
            f"role={stage!r} hyperparameters are {sorted(names)}; they must match (each stage "
            "receives exactly its own hyperparameters)"
        )


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
