"""The schema: every key a user may set, with its type (values live in ``configs/``), and the keys a resumed
run may change."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class SyntheticConfig:
    """Options of the ``synthetic`` data set; ``null`` keeps the data set's own default (its loader
    checks the ranges, for callers of :func:`afl.data.datasets.load_dataset` too)."""

    train_size: int | None = None
    test_size: int | None = None
    num_classes: int | None = None
    image_size: int | None = None
    channels: int | None = None
    noise: float | None = None
    seed: int | None = None


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = MISSING
    download: bool = MISSING
    train_subset: int | None = None
    test_subset: int | None = None
    val_fraction: float = MISSING
    normalize: str = MISSING
    options: dict[str, Any] = field(default_factory=dict)  # the data set loader's own options
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class PartitionConfig:
    scheme: str = MISSING
    num_clients: int = MISSING
    alpha: float = MISSING
    min_samples: int = MISSING
    shards_per_client: int = MISSING


@dataclass
class ClientConfig:
    local_epochs: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    optimizer: str = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    timeout_s: float | None = None
    callbacks: list[Any] = field(default_factory=list)  # names or {name: ..., options}: afl.client.callbacks
    prox_mu: float = MISSING
    optimizer_reset: str = MISSING


@dataclass
class FaultsConfig:
    rate: float = MISSING
    kinds: list[str] = field(default_factory=list)
    slow_factor: float = MISSING


@dataclass
class FederationConfig:
    mode: str = MISSING
    concurrency: int = MISSING
    max_updates: int = MISSING
    eval_every: int = MISSING
    executor: str = MISSING
    workers: int = MISSING
    torch_threads: int = MISSING
    sampling: dict[str, Any] = field(default_factory=dict)  # name, and the policy's own options


@dataclass
class TrainerConfig:
    """Lightning's device settings of client training and evaluation (:mod:`afl.client.device`)."""

    accelerator: str = MISSING
    devices: Any = MISSING  # 1 | auto | [k]
    precision: str = MISSING
    deterministic: Any = MISSING  # true | false | warn
    compile: str = MISSING  # none | torch.compile's mode for the client's training step


@dataclass
class ServerConfig:
    aggregator: dict[str, Any] = field(default_factory=dict)
    lr_schedule: dict[str, Any] = field(default_factory=dict)
    max_delta_norm: float | None = None


@dataclass
class DelayConfig:
    time_per_sample: float = MISSING
    speed: dict[str, Any] = field(default_factory=dict)
    comm: dict[str, Any] = field(default_factory=dict)
    max_staleness: int | None = None
    staleness_policy: str = MISSING


@dataclass
class WandbConfig:
    mode: str = MISSING
    project: str = MISSING
    entity: str | None = None
    group: str | None = None  # None: the experiment (afl-compare and afl-sweep give each their own)
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    progress: bool = MISSING
    target_accuracy: float | None = None
    final_window: int = MISSING  # evaluations averaged for the headline accuracy


@dataclass
class TheoryConfig:
    enabled: bool = MISSING
    samples_per_client: int = MISSING
    max_clients: int | None = None


@dataclass
class CheckpointConfig:
    every: int | None = None  # client updates between checkpoints; None: by wall time (every_s); 0: never
    every_s: float = MISSING


@dataclass
class RayConfig:
    """Read only with ``federation.executor=ray`` (:mod:`afl.sim.ray_executor`)."""

    address: str | None = None
    num_cpus: float = MISSING
    num_gpus: float = MISSING
    max_retries: int = MISSING


@dataclass
class CohortConfig:
    """Read only with ``federation.executor=cohort`` (:mod:`afl.client.cohort`)."""

    max_clients: int | None = None


@dataclass
class CompareConfig:
    """Per arm, the overrides a preset records for it (:func:`afl.arms.rule_overrides`): the step sizes
    selected on validation data for a built-in arm, or the whole definition of an arm of the preset's own.
    Applied to every run of that arm, single runs and comparisons alike."""

    arms: dict[str, list[str]] = field(default_factory=dict)  # arm -> its selected overrides


@dataclass
class Config:
    """The schema: every key a user may set, with its type. Values live in ``configs/``."""

    experiment: str = MISSING
    arm: str = MISSING  # the rule (afl.arms): its overrides, then the preset's selected step sizes
    seed: int = MISSING
    output_dir: str | None = None
    resume: str | None = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: dict[str, Any] = field(default_factory=dict)  # name, and the model's own options
    plugins: list[str] = field(default_factory=list)  # modules to import first (afl.plugins)
    client: ClientConfig = field(default_factory=ClientConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    delay: DelayConfig = field(default_factory=DelayConfig)
    availability: dict[str, Any] = field(default_factory=dict)  # name, and the model's own options
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    theory: TheoryConfig = field(default_factory=TheoryConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    cohort: CohortConfig = field(default_factory=CohortConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)


#: Keys that may differ between the run that wrote a checkpoint and the run that resumes it: they change
#: how or where the run is computed, or how it is reported (``logging.*``), not what it computes. Its
#: models and evaluations are identical, except equal to float rounding where the arithmetic changes:
#: ``trainer.accelerator`` (GPU or CPU), ``trainer.compile``, ``cohort.max_clients``, and
#: ``federation.executor`` to or from ``cohort`` (the in-flight jobs train again in other cohorts;
#: docs/cohort.md).
RESUMABLE_KEYS = (
    "resume",
    "output_dir",
    "federation.workers",
    "federation.executor",  # (to or from cohort: floats differ in the last bits)
    "trainer.accelerator",  # a run started on a GPU may go on on a CPU (floats differ in the last bits)
    "trainer.devices",
    "trainer.compile",  # compiled or not: floats differ in the last bits
    "logging.progress",
    "logging.wandb.mode",
    "logging.wandb.group",
    "logging.final_window",
    "checkpoint.every",
    "checkpoint.every_s",
    "ray.address",
    "ray.num_cpus",
    "ray.num_gpus",
    "ray.max_retries",
    "cohort.max_clients",  # (cohorts of other sizes: floats differ in the last bits)
)
