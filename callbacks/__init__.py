"""Lightning callbacks that work in any Lightning project (they only use the public Callback hooks and
import nothing from ``afl``). Import them as ``afl_callbacks`` (the folder ``callbacks/``, installed under
a name no other project uses).

* :class:`GradientNormMonitor`: the squared norm of the (accumulated) mini-batch gradient of the loss at
  each optimizer step, averaged per epoch.
* :class:`ParameterDrift`: how far a fit moves the parameters, ``‖θ_now - θ_start‖₂`` (client drift).
* :class:`DelayAwareLR`: the paper's learning rate ``γ0 / (1 + α τ)`` (optionally ``/ sqrt(r + 1)``), for
  a Trainer that can say its delay τ.
* :class:`ProximalTerm`: FedProx's ``μ/2 ‖θ − θ_start‖²`` added to the training loss.

Each validates its arguments in ``__init__`` (a ``ValueError`` whose message starts with the argument's
name), keeps only counters in ``state_dict`` and bounds what it keeps in memory. Its checkpoint state key
is made of its settings, so two of a kind fit in one Trainer when their settings differ.
"""

import warnings

from .delay_lr import DelayAwareLR, delay_aware_lr
from .drift import ParameterDrift
from .grad_norm import GradientNormMonitor
from .proximal import ProximalTerm

if __name__ == "callbacks":  # the folder imported by its old name, from a checkout
    warnings.warn(
        "`import callbacks` is deprecated and will stop working in the next release: the name collides "
        "with any project's own callbacks.py and with a PyPI package; use `import afl_callbacks`",
        FutureWarning,
        stacklevel=2,
    )

__all__ = ["DelayAwareLR", "GradientNormMonitor", "ParameterDrift", "ProximalTerm", "delay_aware_lr"]
