"""``FittedDetector``: a detector fitted to one model, ready to score, threshold and ship.

Lifecycle: ``jaxood.fit`` (fit + calibrate + default threshold) -> ``fitted(x)`` /
``fitted.score_images(...)`` -> ``fitted.threshold(...)`` -> ``fitted.predict(x)`` ->
``fitted.save(dir)`` / ``jaxood.load_detector(dir, model)`` -> ``fitted.export(path)``.

Scoring runs one compiled program (network + the detector's extract + score:
:func:`jaxood.scoring.image_program`) per bucket size: a call of ``n`` rows is padded to the
next power of two (at most ``batch_size``), so a small call costs what it computes and at most
``log2(batch_size) + 1`` programs are ever compiled, whatever the call sizes. The default
``batch_size`` is chosen from the memory per image XLA reports for this program
(:mod:`jaxood.fitted.batching`). Scores: ``[N]`` float32, higher = more in-distribution;
``predict`` flags ``score < threshold``.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import jax
import numpy as np

from jaxood import detectors as registry
from jaxood import parallel, scoring, validate
from jaxood.data import inputs as inputs_lib
from jaxood.features.extract import device_batch_size
from jaxood.fitted import batching, export, io, thresholds
from jaxood.models import LoadedModel
from jaxood.types import Detector, HParamPoint


@dataclasses.dataclass(eq=False)
class FittedDetector:
    """A detector with its fitted statistics, bound to the model it was fitted on.

    Attributes:
      detector: the registered :class:`jaxood.Detector`.
      model: the model (functions, variables, preprocessing, manifest).
      hparams: every hyperparameter (all roles), resolved and validated.
      stats: the fitted statistics (``detector.stats_type``; ``None`` without fit).
      calibration: ``[n]`` ascending ID scores the thresholds are computed from.
      calibration_info: where the calibration scores came from (split, size, whether the
        fit also used them).
      threshold_value: flag ``score < threshold_value`` (``None``: not set).
      threshold_info: the rule that set it (see :mod:`jaxood.fitted.thresholds`).
      batch_size: the largest number of rows per compiled call (a call is padded to the next
        power of two up to it). ``None`` (default): chosen from the memory per image of the
        compiled scoring program, under ``memory_mb`` (:func:`jaxood.fitted.batching.choose`).
      batch_info: how ``batch_size`` was chosen (``{"rule": "auto", "mb_per_image", ...}``,
        ``{"rule": "given"}``, ...); saved with the detector.
      state: the stream state of a stream detector (OODD's queue); ``None`` otherwise
        until the first call.
      allow_any_size: accept inputs of another H x W than the model's manifest (for
        resolution-agnostic architectures; off by default, never silent).
      model_dir: the saved-model directory it was fitted with, when known (a hint for
        ``jaxood score``; the weights are always checked by fingerprint).
      adapted: hyperparameters whose published default did not fit the model's feature
        dimension D and were replaced (``{name: {"published", "used", "feature_dim"}}``,
        :func:`jaxood.detectors.adapt_to_dim`); saved with the detector.
      memory_mb: (init only) the per-device budget (MiB) of the automatic ``batch_size``;
        default :data:`jaxood.fitted.batching.SCORE_MEMORY_MB`.
    """

    detector: Detector
    model: LoadedModel
    hparams: dict[str, Any]
    stats: Any
    calibration: np.ndarray | None = None
    calibration_info: dict = dataclasses.field(default_factory=dict)
    threshold_value: float | None = None
    threshold_info: dict | None = None
    batch_size: int | None = None
    state: Any = None
    allow_any_size: bool = False
    model_dir: str | None = None
    adapted: dict = dataclasses.field(default_factory=dict)
    batch_info: dict | None = None
    memory_mb: dataclasses.InitVar[float | None] = None

    def __post_init__(self, memory_mb):
        self._point = self.detector.point(self.hparams)  # resolved and validated once
        self.hparams = dict(self._point)
        registry.check_stats(self.detector, self.stats)
        if self.calibration is not None:
            self.calibration = np.sort(np.asarray(self.calibration, np.float32))
        self._mesh = parallel.data_mesh()
        self._placed = None
        if self.batch_size is None:
            self.batch_size, self.batch_info = self._auto_batch_size(memory_mb)
        elif memory_mb is not None:
            raise ValueError("give `batch_size` or `memory_mb` (the budget that chooses it), "
                             "not both")
        elif self.batch_info is None:
            self.batch_info = batching.given(self.batch_size)
        self.batch_size = device_batch_size(self.batch_size, self._mesh)

    def _auto_batch_size(self, memory_mb) -> tuple[int, dict]:
        if self.input_shape is None:  # nothing to compile the probe for
            return batching.fallback("the model records no input shape")
        return batching.choose(self.lower, self._mesh, memory_mb)

    # ------------------------------------------------------------------ description

    @property
    def name(self) -> str:
        return self.detector.name

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        shape = self.model.manifest.get("input_shape") or self.model.model.input_shape
        return None if shape is None else tuple(int(s) for s in shape)

    def __repr__(self) -> str:
        t = "unset" if self.threshold_value is None else f"{self.threshold_value:.6g}"
        return (
            f"FittedDetector({self.name!r}, model={self.model.model.name!r}, "
            f"hparams={self.hparams}, threshold={t}, "
            f"n_calibration={0 if self.calibration is None else len(self.calibration)})"
        )

    # ------------------------------------------------------------------ scoring

    def __call__(self, x) -> np.ndarray:
        """``[N]`` scores (higher = more ID) of normalised float images ``x [N, H, W, C]``."""
        return self.detect(x)["score"]

    def detect(self, x) -> dict[str, np.ndarray]:
        """``{"score", "is_ood", "pred", "max_softmax"}`` (each ``[N]``) of normalised images.

        ``is_ood`` is all False when no threshold is set.
        """
        # Layout checked here (with allow_any_size); the values (NaN/Inf, unnormalised
        # pixels) batch by batch as the source reads them: one pass over the data.
        x = validate.images(x, "x", input_shape=self.input_shape,
                            allow_any_size=self.allow_any_size, values=False)
        return self._run(inputs_lib.NormalisedSource(x, name="x"))

    def score_images(self, images, *, data_dir: str | None = None) -> np.ndarray:
        """``[N]`` scores of raw images with the model's own preprocessing: a list of paths,
        a folder, an image list, an ``.npz``, or uint8 ``[N, H, W(, C)]``. A file that
        cannot be decoded raises an error naming it."""
        src = inputs_lib.open_input(
            images, self.model.preprocess, self.input_shape, data_dir=data_dir
        )
        return self._run(src, strict=True)["score"]

    def predict(self, x) -> np.ndarray:
        """``[N]`` bool: True = flagged as OOD (``score < threshold``)."""
        if self.threshold_value is None:
            raise ValueError("no threshold set: call fitted.threshold(tpr=...) first")
        return self.detect(x)["is_ood"]

    def iter_detect(self, source, *, strict: bool = True):
        """Yields ``(start, ok [b], {"score", "is_ood", "pred", "max_softmax"})`` per batch of
        ``source`` (decoded ahead in the background). With ``strict``, an unreadable input
        raises an error naming it; otherwise its row has ``ok = False`` (and NaN score) and
        it is listed in ``source.errors``."""
        t = self.threshold_value
        for start, x, ok in inputs_lib.prefetch(source, self.batch_size):
            if strict and not ok.all():
                path, reason = source.errors[-1]
                raise ValueError(f"could not read {path!r}: {reason}")
            res = self.score_batch(x, valid=ok)
            res["score"] = np.where(ok, res["score"], np.nan).astype(np.float32)
            res["is_ood"] = np.zeros(len(x), bool) if t is None else ~(res["score"] >= t)
            yield start, ok, res

    def _run(self, source, *, strict: bool = True) -> dict[str, np.ndarray]:
        parts = [res for _, _, res in self.iter_detect(source, strict=strict)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def score_batch(self, x: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """One batch of at most ``batch_size`` normalised images -> ``{"score", "pred",
        "max_softmax"}`` through the compiled program (padded to :func:`bucket_size`)."""
        n = len(x)
        size = bucket_size(n, self.batch_size, self._mesh)
        xp, mask = parallel.pad_batch(np.asarray(x, np.float32), size)
        if valid is not None:
            mask[:n] &= valid
        variables, stats = self._device_arrays()
        xp = jax.device_put(xp, parallel.batch_sharding(self._mesh))
        program, traced = self._program(), self.point.traced
        if self.detector.stream:
            if self.state is None:
                self.state = self._initial_state()
            res, self.state = program(variables, stats, self.state, xp, mask, traced)
        else:
            res = program(variables, stats, xp, traced)
        return {k: np.asarray(v)[:n] for k, v in res.items()}

    def _program(self):
        """The jitted scoring program of the current hyperparameters (see :func:`_jitted`)."""
        make = scoring.stream_program if self.detector.stream else scoring.image_program
        return _jitted(make(self.detector, self.model.model, self.point.image_static))

    def _initial_state(self):
        """A stream detector's fresh state, typed and placed as the state a call returns
        (NumPy: no weak types; replicated), so the first call runs the same compiled
        program as the later ones."""
        state = self.detector.init_state(self.stats, self.feature_dim, **self.score_hparams)
        return jax.device_put(jax.tree.map(np.asarray, state), parallel.replicated(self._mesh))

    def lower(self, batch: int) -> jax.stages.Lowered:
        """The program :meth:`score_batch` runs, lowered (traced, not compiled) for a padded
        batch of ``batch`` rows of the model's input shape; ``.compile()`` it for XLA's
        ``memory_analysis()`` / ``cost_analysis()``. The compiled program is the one a call
        padded to ``batch`` rows then runs (compiled once)."""
        rep, shard = parallel.replicated(self._mesh), parallel.batch_sharding(self._mesh)
        args = [batching.structs(self.model.variables, rep), batching.structs(self.stats, rep)]
        x = jax.ShapeDtypeStruct((batch, *self.input_shape), np.float32, sharding=shard)
        if self.detector.stream:
            mask = jax.ShapeDtypeStruct((batch,), np.bool_)
            args += [batching.structs(self._initial_state(), rep), x, mask]
        else:
            args.append(x)
        return self._program().lower(*args, batching.structs(self.point.traced))

    def _device_arrays(self):
        if self._placed is None:
            rep = parallel.replicated(self._mesh)
            self._placed = (
                jax.device_put(self.model.variables, rep),
                jax.device_put(self.stats, rep),
            )
        return self._placed

    @property
    def point(self) -> HParamPoint:
        """:attr:`hparams` resolved into their stage groups; resolved again only when
        :attr:`hparams` was changed."""
        try:
            same = dict(self._point) == self.hparams
        except ValueError:  # an array value (ambiguous ==): resolve it, which names the error
            same = False
        if not same:
            self._point = self.detector.point(self.hparams)
        return self._point

    @property
    def score_hparams(self) -> dict[str, Any]:
        """The ``role="score"`` hyperparameters."""
        return dict(self.point.score)

    @property
    def feature_dim(self) -> int:
        """D of the model's penultimate feature."""
        return model_feature_dim(self.model)

    def reset_stream(self) -> None:
        """Stream detectors: forget the samples seen so far (start a new stream)."""
        self.state = None

    # ------------------------------------------------------------------ thresholds

    def calibrate(
        self, data, *, data_dir: str | None = None, used_by_fit: bool = False,
        name: str = "calibration",
    ) -> None:
        """Scores held-out ID ``data`` (any input of :func:`jaxood.data.inputs.open_input`)
        and stores the scores the thresholds are computed from. A stream detector's state
        is reset afterwards. ``name`` names ``data`` in error messages."""
        src = inputs_lib.open_input(
            data, self.model.preprocess, self.input_shape, data_dir=data_dir, name=name
        )
        scores = self._run(src)["score"]
        self.reset_stream()
        bad = int(np.count_nonzero(~np.isfinite(scores)))
        if bad:
            raise ValueError(
                f"detector {self.name!r} gave {bad} NaN/Inf score(s) on the {len(scores)} "
                f"calibration inputs ({name}): check the detector's score function, its "
                "fitted statistics and the model's outputs on these inputs"
            )
        self.calibration = np.sort(scores)
        self.calibration_info = {"n": int(len(scores)), "used_by_fit": bool(used_by_fit)}

    def threshold(
        self,
        tpr: float | None = 0.95,
        *,
        fpr: float | None = None,
        ood=None,
        confidence: float | None = None,
    ) -> float:
        """Sets (and returns) the threshold; inputs with ``score < threshold`` are OOD.

        Args:
          tpr: fraction of ID inputs to keep, from the stored ID calibration scores.
          fpr: instead, the fraction of the held-out OOD set ``ood`` to let through. Without
            ``confidence`` a point estimate for OOD inputs like ``ood`` (fresh ones pass at
            about this rate, above it about half the time), never a bound.
          ood: OOD scores ``[M]`` (or normalised images) for ``fpr``.
          confidence: a finite-sample guarantee — with this probability over the draw of
            the calibration set (``tpr``) or of ``ood`` (``fpr``), the true ID flag rate is
            at most ``1 - tpr`` (the true pass rate of that OOD distribution at most ``fpr``).
        """
        if fpr is not None:
            if ood is None:
                raise ValueError("threshold(fpr=...) needs `ood`: scores of held-out OOD data")
            ood = np.asarray(ood)
            if ood.ndim not in (1, 4):
                raise ValueError(
                    f"`ood` must be OOD scores [M] or normalised OOD images [M, H, W, C], got "
                    f"shape {ood.shape}"
                )
            ood_scores = ood if ood.ndim == 1 else self(ood)
            t, info = thresholds.at_fpr(ood_scores, fpr, calibration=self.calibration,
                                        confidence=confidence)
        elif self.calibration is None:
            raise ValueError("no ID calibration scores: call fitted.calibrate(id_val_data) first")
        else:
            if tpr is None:
                raise ValueError("give `tpr` (ID keep rate) or `fpr` with `ood`")
            if confidence is not None and self.calibration_info.get("used_by_fit"):
                warnings.warn(
                    "the calibration scores come from data the detector was also fitted on; "
                    "the confidence guarantee assumes held-out data (fit with calibration=...)",
                    stacklevel=2,
                )
            t, info = thresholds.at_tpr(self.calibration, tpr, confidence)
        self.threshold_value, self.threshold_info = t, info
        return t

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str, *, overwrite: bool = False) -> str:
        """Writes the detector to ``directory`` atomically (see :mod:`jaxood.fitted.io`)."""
        return io.save(self, directory, overwrite=overwrite)

    def export(self, path: str, **kwargs) -> str:
        """A ``jax.export`` artifact that scores with only ``jax`` installed (see
        :mod:`jaxood.fitted.export`)."""
        return export.export(self, path, **kwargs)


def bucket_size(n: int, batch_size: int, mesh) -> int:
    """Padded size of a call of ``n <= batch_size`` rows: the next power of two, at most
    ``batch_size``, rounded up to a multiple of the mesh's devices."""
    size = 1 << max(0, int(n) - 1).bit_length()
    return device_batch_size(min(size, int(batch_size)), mesh)


@functools.lru_cache(maxsize=256)
def _jitted(program):
    """``jax.jit`` of a :mod:`jaxood.scoring` program, one per program. Why jit a jitted
    function: scoring's programs are wrapped (tracer errors explained) so their ``.lower``
    is out of reach; the outer jit inlines the inner one (same computation) and gives one
    object whose ``.lower(...).compile()`` (the batch-size probe) and calls share their
    compiled programs."""
    return jax.jit(program)


def model_feature_dim(loaded: LoadedModel) -> int | None:
    """D of a model's penultimate feature: from its manifest, else by shape evaluation (no
    compute); ``None`` when neither the manifest nor an input shape tells it."""
    d = loaded.manifest.get("feature_dim") or loaded.model.feature_dim
    shape = loaded.manifest.get("input_shape") or loaded.model.input_shape
    if d is None and shape is not None:
        x = jax.ShapeDtypeStruct((1, *shape), np.float32)
        d = jax.eval_shape(loaded.model.features, loaded.variables, x).feature.shape[-1]
    return None if d is None else int(d)


def check_model_input(x, input_shape, allow_any_size: bool = False) -> np.ndarray:
    """Validates normalised images for a model taking ``input_shape = (H, W, C)``; returns
    float32 ``[N, H, W, C]`` (NumPy). Half-precision inputs are accepted and cast. The checks
    are :func:`jaxood.validate.images` (shared by every path into a model)."""
    x = validate.images(x, "x", input_shape=input_shape, allow_any_size=allow_any_size)
    return np.asarray(x, np.float32)
