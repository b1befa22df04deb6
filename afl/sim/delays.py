"""Delay models of the simulated clock (docs/design.md).

A job's duration is decided at dispatch: ``samples_trained * time_per_sample / speed[c]`` of compute,
plus a communication delay drawn per job. Speeds are drawn once per client. Both are small components
registered by short name: add a distribution by registering a class with a ``sample(rng) -> float``
method in :data:`SPEEDS` or :data:`COMM_DELAYS`. A component that depends on the client (a trace file)
overrides :meth:`Distribution.draw` instead.

Trace files (``delay.speed.name=trace`` and/or ``delay.comm.name=trace``, option ``path``) are CSV with a
header naming ``client`` and one or both of ``speed`` and ``comm``; ``#`` lines and blank lines are
skipped::

    client,speed,comm
    0,1.0,0.25
    0,1.0,0.40
    1,0.3,1.10
    1,,0.90

A client's ``speed`` (its compute speed factor, > 0) may repeat on its rows but must agree, and an empty
cell gives none; each non-empty ``comm`` cell is the communication time (seconds, >= 0) of one recorded
job. The run's clients 0..C-1 must all be there: each with a speed for ``delay.speed``, each with at least
one time for ``delay.comm``. A job's communication time is one of its client's recorded times, picked
uniformly from the job's own random stream ``(seed, "comm", client, dispatch index)``: reproducible, and
the same whatever order jobs run in.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from afl.errors import ConfigError
from afl.registry import Registry, require
from afl.rng import derive_rng

SPEEDS: Registry[Distribution] = Registry("speed distribution")
COMM_DELAYS: Registry[Distribution] = Registry("communication delay")


class Distribution:
    """A one-dimensional distribution: ``sample(rng)`` returns one draw; :meth:`draw`, the value for one
    client or job, is what the delay model asks. A subclass overrides one of the two: ``sample`` (a
    parametric distribution: ``draw`` samples it) or ``draw`` (a value per client or job: a trace, a
    user's schedule). Not an abstract class for that reason: neither method alone is required."""

    def sample(self, rng: np.random.Generator) -> float:
        raise NotImplementedError(f"{type(self).__name__} overrides neither sample nor draw")

    def draw(self, rng: np.random.Generator, client_id: int, dispatch_index: int = 0) -> float:
        """The value for one client (speeds) or one of its jobs (communication delays); by default a
        draw that does not depend on who asks."""
        return self.sample(rng)

    def check_clients(self, num_clients: int) -> None:
        """Raise :class:`ConfigError` if the component cannot serve clients ``0..num_clients-1``."""


@SPEEDS.register("constant")
@COMM_DELAYS.register("constant")
@dataclass(frozen=True)
class Constant(Distribution):
    """Always ``value`` (speed 1 = every client equally fast; delay 0 = no communication delay)."""

    value: float = 1.0

    def __post_init__(self) -> None:
        require(self.value >= 0, "value", f"must be >= 0, got {self.value}")

    def sample(self, rng: np.random.Generator) -> float:
        return self.value


@SPEEDS.register("uniform")
@dataclass(frozen=True)
class UniformSpeed(Distribution):
    """Speed factor uniform in ``[low, high]``."""

    low: float = 0.2
    high: float = 1.0

    def __post_init__(self) -> None:
        require(0 < self.low <= self.high, "low", f"need 0 < low <= high, got {self.low}, {self.high}")

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))


@SPEEDS.register("lognormal")
@dataclass(frozen=True)
class LogNormalSpeed(Distribution):
    """Speed factor ``exp(N(0, sigma²))``: median 1, a long tail of stragglers and of fast clients."""

    sigma: float = 1.0

    def __post_init__(self) -> None:
        require(self.sigma >= 0, "sigma", f"must be >= 0, got {self.sigma}")

    def sample(self, rng: np.random.Generator) -> float:
        return float(np.exp(rng.normal(0.0, self.sigma)))


@COMM_DELAYS.register("uniform")
@dataclass(frozen=True)
class UniformDelay(Distribution):
    """Communication delay uniform in ``[0, max]``, as in the paper."""

    max: float = 1.0

    def __post_init__(self) -> None:
        require(self.max >= 0, "max", f"must be >= 0, got {self.max}")

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(0.0, self.max))


@COMM_DELAYS.register("exponential")
@dataclass(frozen=True)
class ExponentialDelay(Distribution):
    """Unbounded communication delay, exponential with the given mean."""

    mean: float = 1.0

    def __post_init__(self) -> None:
        require(self.mean > 0, "mean", f"must be > 0, got {self.mean}")

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.exponential(self.mean))


@COMM_DELAYS.register("pareto")
@dataclass(frozen=True)
class ParetoDelay(Distribution):
    """Heavy-tailed communication delay: Pareto (type I), at least ``scale``, ``P(X > x) = (scale/x)^shape``.

    The mean is ``shape·scale/(shape − 1)`` for ``shape > 1`` (infinite otherwise) and the variance is
    finite only for ``shape > 2``: a few jobs take far longer than the rest.

    Example:
        >>> delay = ParetoDelay(shape=2.0, scale=0.5)
        >>> draws = [delay.sample(derive_rng(0, "doc", j)) for j in range(1000)]
        >>> min(draws) >= 0.5, max(draws) > 5.0  # P(one draw > 5) = (0.5/5)² = 1%
        (True, True)
    """

    shape: float = 2.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        require(self.shape > 0, "shape", f"must be > 0, got {self.shape}")
        require(self.scale > 0, "scale", f"must be > 0, got {self.scale}")

    def sample(self, rng: np.random.Generator) -> float:
        return float(self.scale * (1.0 + rng.pareto(self.shape)))  # numpy's pareto is type II (Lomax)


TRACE_COLUMNS = ("client", "speed", "comm")


@dataclass
class Trace:
    """A parsed trace file (format in this module's docstring).

    Attributes:
        path: the file.
        speeds: per client, its speed factor and the line that gave it.
        comm: per client, its recorded communication times, in file order.
        first_line: per client, the line where it first appears.
    """

    path: str
    speeds: dict[int, tuple[float, int]] = field(default_factory=dict)
    comm: dict[int, list[float]] = field(default_factory=dict)
    first_line: dict[int, int] = field(default_factory=dict)

    def check_clients(self, num_clients: int, column: str) -> None:
        """Every client ``0..num_clients-1`` has a ``column`` value, and no other client appears."""
        extra = [c for c in self.first_line if c >= num_clients]
        if extra:
            c = min(extra, key=self.first_line.__getitem__)
            raise ConfigError(
                "path",
                f"{self.path}, line {self.first_line[c]}: client {c} is not one of the run's "
                f"{num_clients} clients (0-{num_clients - 1}, partition.num_clients)",
            )
        have = self.speeds if column == "speed" else self.comm
        missing = [c for c in range(num_clients) if c not in have]
        if missing:
            raise ConfigError(
                "path",
                f"{self.path}: no {column} for client {missing[0]} ({len(missing)} of the run's "
                f"{num_clients} clients have none)",
            )


def read_trace(path: str) -> Trace:
    """Parse a trace CSV; a malformed file is a :class:`ConfigError` on ``path`` naming the file and line.

    Example:
        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory()
        >>> path = Path(folder.name) / "trace.csv"
        >>> _ = path.write_text("client,speed,comm\\n0,1.5,0.2\\n0,,0.4\\n1,0.5,\\n")
        >>> trace = read_trace(str(path))
        >>> trace.speeds, trace.comm
        ({0: (1.5, 2), 1: (0.5, 4)}, {0: [0.2, 0.4]})
        >>> _ = path.write_text(path.read_text() + "1,0.7,\\n")
        >>> read_trace(str(path))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        afl.errors.ConfigError: path: ...trace.csv, line 5: client 1 has speed 0.7 here but 0.5 on line 4
        >>> folder.cleanup()
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("path", f"cannot read the trace file {path}: {err}") from None
    trace = Trace(path)
    header: list[str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}, line {number}"
        cells = [c.strip() for c in next(csv.reader([line]))]
        if header is None:
            header = _trace_header(cells, line, where)
        else:
            _add_trace_row(trace, header, cells, number, where)
    if header is None:
        raise ConfigError("path", f"{path}: no header line (client and speed and/or comm)")
    return trace


def _trace_header(cells: list[str], line: str, where: str) -> list[str]:
    """The trace's column names from its header ``line``: client and speed and/or comm, each once."""
    if any(c not in TRACE_COLUMNS for c in cells) or "client" not in cells or len(set(cells)) < 2:
        raise ConfigError(
            "path", f"{where}: the header must name client and speed and/or comm (got {line!r})"
        )
    if len(set(cells)) != len(cells):
        raise ConfigError("path", f"{where}: a column is named twice in the header {line!r}")
    return cells


def _add_trace_row(trace: Trace, header: list[str], cells: list[str], number: int, where: str) -> None:
    """Add the data line ``number`` (its ``cells``, under ``header``) to ``trace``: a client's first line,
    its speed (the same on every line that gives one) and its next communication time."""
    if len(cells) != len(header):
        raise ConfigError(
            "path", f"{where}: expected {len(header)} cells ({','.join(header)}), got {len(cells)}"
        )
    row = dict(zip(header, cells))
    if not row["client"].isdigit():  # digits only: a non-negative integer
        raise ConfigError("path", f"{where}: client must be an integer >= 0, got {row['client']!r}")
    client = int(row["client"])
    trace.first_line.setdefault(client, number)
    speed = _number(row.get("speed", ""), "speed", where, strict=True)
    if speed is not None:
        given = trace.speeds.setdefault(client, (speed, number))
        if given[0] != speed:
            raise ConfigError(
                "path",
                f"{where}: client {client} has speed {speed} here but {given[0]} on line {given[1]}",
            )
    comm = _number(row.get("comm", ""), "comm", where, strict=False)
    if comm is not None:
        trace.comm.setdefault(client, []).append(comm)


def _number(cell: str, column: str, where: str, strict: bool) -> float | None:
    """A cell's value: None if empty, else a finite number > 0 (``strict``) or >= 0."""
    if cell == "":
        return None
    bound = "> 0" if strict else ">= 0"
    try:
        value = float(cell)
    except ValueError:
        raise ConfigError("path", f"{where}: {column} must be a number {bound}, got {cell!r}") from None
    if not math.isfinite(value) or value < 0 or (strict and value == 0):
        raise ConfigError("path", f"{where}: {column} must be a finite number {bound}, got {cell!r}")
    return value


@dataclass(frozen=True)
class _TraceColumn(Distribution):
    """A distribution read from one column (:attr:`column`) of a trace file (format above)."""

    column: ClassVar[str]
    path: str = ""
    trace: Trace = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        require(bool(self.path), "path", f"give the trace file: delay.{self.column}.path=FILE.csv")
        object.__setattr__(self, "trace", read_trace(self.path))  # frozen: set once, here

    def check_clients(self, num_clients: int) -> None:
        self.trace.check_clients(num_clients, self.column)


@SPEEDS.register("trace")
@dataclass(frozen=True)
class TraceSpeed(_TraceColumn):
    """Each client's speed factor from the ``speed`` column of a trace file (format above)."""

    column: ClassVar[str] = "speed"

    def draw(self, rng: np.random.Generator, client_id: int, dispatch_index: int = 0) -> float:
        return self.trace.speeds[client_id][0]


@COMM_DELAYS.register("trace")
@dataclass(frozen=True)
class TraceComm(_TraceColumn):
    """Each job's communication time: one of its client's recorded times (``comm`` column of a trace
    file, format above), picked uniformly from the job's own random stream."""

    column: ClassVar[str] = "comm"

    def draw(self, rng: np.random.Generator, client_id: int, dispatch_index: int = 0) -> float:
        times: list[float] = self.trace.comm[client_id]
        return times[int(rng.integers(len(times)))]


class DelayModel:
    """Durations of client jobs in simulated seconds.

    Nothing is kept per client: a client's speed is drawn again from its own stream when needed (about
    15 µs), so a run of 100,000 clients holds no table of speeds.

    Args:
        speed: per-client speed distribution (``delay.speed``), drawn once per client from
            ``(seed, "speed", client)``.
        comm: per-job communication delay (``delay.comm``), drawn from
            ``(seed, "comm", client, dispatch_index)``.
        time_per_sample: simulated seconds to train on one sample at speed 1.
        num_clients: C.
        seed: the run's master seed.

    Raises:
        ConfigError: a component cannot serve clients ``0..C-1`` (a trace file without them), named by its
            config key (``delay.speed.path``).
    """

    def __init__(
        self, *, speed: Distribution, comm: Distribution, time_per_sample: float, num_clients: int, seed: int
    ) -> None:
        for key, part in (("delay.speed", speed), ("delay.comm", comm)):
            try:
                part.check_clients(num_clients)
            except ConfigError as err:
                raise ConfigError(f"{key}.{err.key}", err.message) from None
        self.time_per_sample = time_per_sample
        self.speed_distribution = speed
        self.comm = comm
        self.num_clients = num_clients
        self.seed = seed

    def speed(self, client_id: int) -> float:
        """The speed factor of a client: the same on every call."""
        return max(self.speed_distribution.draw(derive_rng(self.seed, "speed", client_id), client_id), 1e-12)

    @property
    def speeds(self) -> list[float]:
        """Every client's speed factor, ``[speed(0), ..., speed(C-1)]``."""
        return [self.speed(c) for c in range(self.num_clients)]

    def duration(self, client_id: int, samples_trained: int, dispatch_index: int) -> float:
        compute = samples_trained * self.time_per_sample / self.speed(client_id)
        rng = derive_rng(self.seed, "comm", client_id, dispatch_index)
        return compute + self.comm.draw(rng, client_id, dispatch_index)
