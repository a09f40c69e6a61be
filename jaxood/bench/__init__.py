"""The benchmark runner: cached feature extraction, APS, OpenOOD tables, reports and plots.

* :mod:`jaxood.bench.runner` — ``run(BenchConfig(...))``, the Python API of ``jaxood bench``;
* :mod:`jaxood.bench.extract` / :mod:`jaxood.bench.cache` — sharded, padded + masked,
  resumable extraction into an on-disk cache;
* :mod:`jaxood.bench.aps` — OpenOOD's automatic parameter search and the compile-once scorer;
* :mod:`jaxood.bench.report` / :mod:`jaxood.bench.plots` — MD/CSV/JSON and PNG outputs;
* :mod:`jaxood.bench.demo` — the demo model behind ``jaxood demo``.
"""
