"""Lightning callbacks that work in any Lightning project (they only use the public Callback hooks).

* :class:`GradientNormMonitor`: the squared gradient norm ``‖∇L‖²`` per optimisation step, averaged per
  epoch (the quantity the paper's Theorem 1 bounds).
* :class:`ParameterDrift`: how far a fit moves the parameters, ``‖θ_now - θ_start‖₂`` (client drift).
"""

from callbacks.drift import ParameterDrift
from callbacks.grad_norm import GradientNormMonitor

__all__ = ["GradientNormMonitor", "ParameterDrift"]
