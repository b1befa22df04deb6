"""What several test modules share: the overrides of small runs (:mod:`helpers.configs`), running the
commands and fresh interpreters (:mod:`helpers.processes`), loops built for tests (:mod:`helpers.loops`),
two runs' outputs compared (:mod:`helpers.runs`), small models (:mod:`helpers.models`), a plug-in module
(:mod:`helpers.plugins`), offline W&B runs read back (:mod:`helpers.wandb_offline`) and a run that kills
itself (``crash_driver.py``). ``tests/`` is on ``sys.path`` (``pythonpath`` in pyproject.toml)."""

from pathlib import Path

#: The repository's root folder, and the crash driver (a run that kills itself at a chosen point).
ROOT = Path(__file__).resolve().parents[2]
CRASH_DRIVER = Path(__file__).resolve().parent / "crash_driver.py"
