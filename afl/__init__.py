"""afl: asynchronous federated learning with non-convex objectives and non-IID data, on PyTorch Lightning.

Entry points: :func:`afl.config.load_config` and :func:`afl.experiments.run.run`; see the README.
"""

__version__ = "0.1.0"
