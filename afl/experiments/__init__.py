"""Experiments: one run (:mod:`~afl.experiments.run`, built by :mod:`~afl.experiments.build` and
:mod:`~afl.experiments.components`, writing :mod:`~afl.experiments.outputs`), comparisons of arms over seeds
(:mod:`~afl.experiments.compare`), sweeps (:mod:`~afl.experiments.sweep`), and what they measure and draw
(:mod:`~afl.experiments.records`, :mod:`~afl.experiments.metrics`, :mod:`~afl.experiments.evaluation`,
:mod:`~afl.experiments.plots`)."""
