"""Lightning callbacks that work in any Lightning project (they only use the public Callback hooks and
import nothing from ``afl``).

* :class:`GradientNormMonitor`: the squared gradient norm ``‖∇L‖²`` per optimisation step, averaged per
  epoch (the quantity the paper's Theorem 1 bounds).
* :class:`ParameterDrift`: how far a fit moves the parameters, ``‖θ_now - θ_start‖₂`` (client drift).
* :class:`DelayAwareLR`: the paper's learning rate ``γ0 / (1 + α τ)`` (optionally ``/ sqrt(r + 1)``), for
  a Trainer that can say its delay τ.
* :class:`ProximalTerm`: FedProx's ``μ/2 ‖θ − θ_start‖²`` added to the training loss.

Each validates its arguments in ``__init__`` (a ``ValueError`` whose message starts with the argument's
name), keeps only counters in ``state_dict`` and bounds what it keeps in memory. Its checkpoint state key
is made of its settings, so two of a kind fit in one Trainer when their settings differ.
"""

from callbacks.delay_lr import DelayAwareLR, delay_aware_lr
from callbacks.drift import ParameterDrift
from callbacks.grad_norm import GradientNormMonitor
from callbacks.proximal import ProximalTerm

__all__ = ["DelayAwareLR", "GradientNormMonitor", "ParameterDrift", "ProximalTerm", "delay_aware_lr"]
