"""The benchmark runner: APS, OpenOOD tables, reports and plots, fitted detectors per run.

The feature pipeline it runs on (extraction, the feature cache, the per-run split store,
the compile-once scorer) is :mod:`jaxood.features`, shared with ``jaxood.fit`` and the
analyses.

* :mod:`jaxood.bench.runner` — ``run(BenchConfig(...))``, the Python API of ``jaxood bench``;
* :mod:`jaxood.bench.detector_run` — one detector on one run's data: fit, scores, APS;
* :mod:`jaxood.bench.deploy` — a run's tuned detector written as a fitted detector;
* :mod:`jaxood.bench.aps` — OpenOOD's automatic parameter search;
* :mod:`jaxood.bench.store` — the merged result store of a results folder;
* :mod:`jaxood.bench.report` / :mod:`jaxood.bench.plots` — the result record
  (``BenchResult``), MD/CSV/JSON and PNG outputs;
* :mod:`jaxood.bench.demo` — the demo model behind ``jaxood demo``.
"""
