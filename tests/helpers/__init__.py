"""What several test modules share: running the commands and fresh interpreters (:mod:`helpers.processes`),
loops built for tests (:mod:`helpers.loops`), comparing two runs' outputs (:mod:`helpers.runs`) and small
models (:mod:`helpers.models`). ``tests/`` is on ``sys.path`` (``pythonpath`` in pyproject.toml)."""
