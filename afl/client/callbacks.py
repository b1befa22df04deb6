"""The Lightning callbacks of client Trainers, from the config: ``client.callbacks`` and ``client.prox_mu``.

``client.callbacks`` lists callbacks of the :mod:`callbacks` package by short name, each entry a name or
a mapping ``{name: ..., option: value}``::

    client:
      callbacks: [gradient_norm, {name: delay_aware_lr, alpha: 0.1}]
      prox_mu: 0.01   # FedProx: the same as listing {name: proximal, mu: 0.01}

Each name is a :class:`CallbackSpec` in :data:`CLIENT_CALLBACKS`: its options are checked by name and type
when the config is, their values once when the run builds it, and every client job gets fresh callbacks
from :meth:`CallbackSpec.make` (so jobs training in parallel threads never share one). What a callback
measured comes back with the job's result (:meth:`CallbackSpec.report`) and lands in ``updates.csv``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import lightning as L
from afl_callbacks import DelayAwareLR, GradientNormMonitor, ParameterDrift, ProximalTerm
from afl_callbacks.drift import parameter_distance
from omegaconf import DictConfig, OmegaConf

from afl.errors import ConfigError
from afl.registry import Registry, require
from afl.server.lr_schedules import DECAYS

if TYPE_CHECKING:
    import torch

    from afl.messages import ClientJob


class CallbackSpec(ABC):
    """A configured client callback: builds a fresh Lightning callback for each client job."""

    #: Whether cohort training (``federation.executor=cohort``, where no per-job Trainer runs) can give
    #: what it reports: :meth:`cohort_report`. A config with one that cannot is refused.
    in_cohort: ClassVar[bool] = False

    def cohort_report(
        self, job: ClientJob, state: dict[str, torch.Tensor], parameters: Sequence[str]
    ) -> dict[str, float]:
        """What :meth:`report` would give for ``job``, from the model the job trained (``state``; its
        trainable entries are ``parameters``)."""
        raise NotImplementedError

    @abstractmethod
    def make(self, job: ClientJob) -> L.Callback:
        """A new callback for ``job``'s Trainer."""

    def report(self, callback: Any) -> dict[str, float]:
        """What ``callback`` measured during its job, as ``updates.csv`` columns (none by default)."""
        return {}

    def _check(self, build: Callable[[], L.Callback]) -> None:
        """Build one callback now, so that its own argument checks name the config option at fault.

        The callbacks raise ``ValueError`` with a message that starts with the argument's name.
        """
        try:
            build()
        except ValueError as err:
            option, _, rest = str(err).partition(" ")
            if option not in {f.name for f in fields(self)}:  # type: ignore[arg-type]
                raise ConfigError("name", str(err)) from None
            raise ConfigError(option, rest) from None


#: Client callbacks by name (``client.callbacks``).
CLIENT_CALLBACKS: Registry[CallbackSpec] = Registry("client callback")


@CLIENT_CALLBACKS.register("gradient_norm")
@dataclass(frozen=True)
class GradientNorm(CallbackSpec):
    """:class:`afl_callbacks.GradientNormMonitor`; reports ``grad_sq_norm``, the mean of ``‖∇L‖²`` over the
    job's epochs (each epoch's mean over its steps; every epoch has the same steps).

    Example:
        >>> spec = CLIENT_CALLBACKS.build({"name": "gradient_norm"}, key="client.callbacks[0]")
        >>> type(spec.make(job=None)).__name__
        'GradientNormMonitor'
    """

    norm_type: float = 2.0

    def __post_init__(self) -> None:
        self._check(lambda: self.make(None))

    def make(self, job: ClientJob | None) -> GradientNormMonitor:
        return GradientNormMonitor(norm_type=self.norm_type, log=False)

    def report(self, callback: GradientNormMonitor) -> dict[str, float]:
        history = callback.history
        return {"grad_sq_norm": sum(history) / len(history)} if history else {}


@CLIENT_CALLBACKS.register("parameter_drift")
@dataclass(frozen=True)
class Drift(CallbackSpec):
    """:class:`afl_callbacks.ParameterDrift`; reports ``client_drift``, ``‖θ − θ_dispatched‖₂`` over the
    trainable parameters at the end of the job (the norm of the client's delta)."""

    def make(self, job: ClientJob | None) -> ParameterDrift:
        return ParameterDrift(log=False)

    in_cohort: ClassVar[bool] = True

    def report(self, callback: ParameterDrift) -> dict[str, float]:
        history = callback.history
        return {"client_drift": history[-1]} if history else {}

    def cohort_report(
        self, job: ClientJob, state: dict[str, torch.Tensor], parameters: Sequence[str]
    ) -> dict[str, float]:
        start = {k: job.state[k].to(state[k].device) for k in parameters}
        return {"client_drift": parameter_distance({k: state[k] for k in parameters}, start)}


@CLIENT_CALLBACKS.register("delay_aware_lr")
@dataclass(frozen=True)
class DelayAware(CallbackSpec):
    """:class:`afl_callbacks.DelayAwareLR` in the client: trains at ``γ / (1 + α τ)``, γ the job's LR from the
    server and τ the staleness of this client's previous update (0 before its first), divided also by
    ``sqrt(r + 1)`` (r the round at dispatch) with ``decay: sqrt``. With ``server.lr_schedule.name=constant``
    this is the paper's rate set at dispatch (as ``paper`` with ``delay_at: dispatch`` computes it on the
    server); reports ``effective_lr``, the rate the job trained at.
    """

    alpha: float = 0.1
    decay: str = "sqrt"

    def __post_init__(self) -> None:
        require(self.decay in DECAYS, "decay", f"got {self.decay!r}; allowed: {', '.join(DECAYS)}")
        self._check(lambda: DelayAwareLR(1.0, self.alpha, delay_fn=lambda trainer, pl_module: 0))

    def make(self, job: ClientJob) -> DelayAwareLR:
        delay, round = job.previous_staleness, job.round
        return DelayAwareLR(
            base_lr=job.lr,
            alpha=self.alpha,
            delay_fn=lambda trainer, pl_module: delay,
            round_fn=(lambda trainer, pl_module: round) if self.decay == "sqrt" else None,
            interval="fit",  # τ and r are fixed for the whole job
        )

    def report(self, callback: DelayAwareLR) -> dict[str, float]:
        return {} if callback.last_lr is None else {"effective_lr": callback.last_lr}


@CLIENT_CALLBACKS.register("proximal")
@dataclass(frozen=True)
class Proximal(CallbackSpec):
    """:class:`afl_callbacks.ProximalTerm`: FedProx's ``μ/2 ‖θ − θ_dispatched‖²`` added to the local loss
    (``client.prox_mu`` is the short way to ask for it)."""

    mu: float = 0.01

    def __post_init__(self) -> None:
        self._check(lambda: self.make(None))

    def make(self, job: ClientJob | None) -> ProximalTerm:
        return ProximalTerm(mu=self.mu)


class Checked(NamedTuple):
    """One client callback the config asks for, checked but not built."""

    key: str  # its config key: client.callbacks[i], or client.prox_mu
    name: str  # its name in CLIENT_CALLBACKS
    cls: type[CallbackSpec]
    options: dict[str, Any]


def check_client_callbacks(cfg: DictConfig) -> list[Checked]:
    """Check what ``client.callbacks`` and ``client.prox_mu`` ask for, building nothing: each entry, the
    proximal term of ``client.prox_mu`` last.

    Raises:
        ConfigError: an unknown name or option (the key names the list entry, e.g.
            ``client.callbacks[1].alpha``), a name listed twice, μ given twice, or ``delay_aware_lr`` with
            a server LR schedule other than ``constant`` (the delay factor would apply twice).
    """
    entries = OmegaConf.to_container(cfg.client.callbacks, resolve=True)
    assert isinstance(entries, list)
    checked: list[Checked] = []
    where: dict[str, str] = {}
    for i, entry in enumerate(entries):
        key = f"client.callbacks[{i}]"
        node = {"name": entry} if isinstance(entry, str) else entry
        options = CLIENT_CALLBACKS.check(node, key)
        name = node["name"]
        if name in where:
            raise ConfigError(f"{key}.name", f"{name} is already listed as {where[name]}; list it once")
        where[name] = key
        checked.append(Checked(key, name, CLIENT_CALLBACKS.get(name), options))  # type: ignore[arg-type]
    if cfg.client.prox_mu > 0:
        if "proximal" in where:
            raise ConfigError(
                "client.prox_mu", f"{where['proximal']} already adds a proximal term: give μ in one place"
            )
        checked.append(Checked("client.prox_mu", "proximal", Proximal, {"mu": cfg.client.prox_mu}))
    schedule = cfg.server.lr_schedule.get("name")
    if "delay_aware_lr" in where and schedule != "constant":
        raise ConfigError(
            f"{where['delay_aware_lr']}.name",
            f"delay_aware_lr divides the client's LR by (1 + α τ) and server.lr_schedule.name={schedule} "
            "applies a delay factor too: set server.lr_schedule.name=constant with it",
        )
    return checked


def build_client_callbacks(cfg: DictConfig) -> list[CallbackSpec]:
    """The client callbacks ``client.callbacks`` and ``client.prox_mu`` ask for (checked by
    :func:`check_client_callbacks`, then each built: its own checks of its values run here).

    Example:
        >>> from afl.config import load_config
        >>> cfg = load_config(["client.callbacks=[gradient_norm]", "client.prox_mu=0.1"])
        >>> build_client_callbacks(cfg)
        [GradientNorm(norm_type=2.0), Proximal(mu=0.1)]
    """
    specs = []
    for entry in check_client_callbacks(cfg):
        try:
            specs.append(entry.cls(**entry.options))
        except ConfigError as err:
            where = entry.key if entry.key == "client.prox_mu" else f"{entry.key}.{err.key}"
            raise ConfigError(where, err.message) from None
    return specs
