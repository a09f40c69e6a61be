"""The feature pipeline beneath the benchmark runner, fitted detectors and the analyses.

* :mod:`jaxood.features.extract` — sharded, padded + masked, resumable extraction of
  per-sample arrays (a model's features, a detector's extract);
* :mod:`jaxood.features.cache` — the on-disk feature cache those passes write;
* :mod:`jaxood.features.store` — :class:`~jaxood.features.store.DataStore`, one model's
  splits of one benchmark, extracted lazily through the cache, and
  :func:`~jaxood.features.store.fit_inputs`, the ``Inputs`` of a detector's fit;
* :mod:`jaxood.features.scorer` — :func:`~jaxood.features.scorer.to_inputs` and the
  compile-once :class:`~jaxood.features.scorer.Scorer` of cached arrays;
* :mod:`jaxood.features.model` — binding a model, and its one identity
  (:func:`~jaxood.features.model.model_identity`);
* :mod:`jaxood.features.timing` — wall time per stage of the passes.

Layer 3 (see ``docs/architecture.md``): it imports ``scoring``, ``detectors``, ``data``,
``models`` and below; ``fitted``, ``bench``, ``analyses`` and ``cli`` import it.
"""
