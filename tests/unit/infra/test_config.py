"""Config composition and the bad-input contract: one clear line naming the key, exit 2, nothing written."""

from __future__ import annotations

import functools
import subprocess
import sys
from dataclasses import fields, is_dataclass

import pytest
import torch
from helpers import ROOT
from helpers.configs import QUIET
from omegaconf import OmegaConf

from afl.config import Config, experiments, load_config

sys.path.insert(0, str(ROOT / "scripts"))
import train  # noqa: E402  (scripts/train.py)


def _schema_keys(cls: type, prefix: str = "") -> set[str]:
    keys = set()
    for f in fields(cls):
        default = f.default_factory() if callable(f.default_factory) else None  # type: ignore[misc]
        if is_dataclass(default):
            keys |= _schema_keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.add(f"{prefix}{f.name}")
    return keys


def test_defaults_give_every_schema_key_a_value() -> None:
    cfg = load_config([])
    assert OmegaConf.missing_keys(cfg) == set()
    for key in _schema_keys(Config):
        OmegaConf.select(cfg, key, throw_on_missing=True)
    assert cfg.server.aggregator.name == "afl" and cfg.federation.mode == "async"


@pytest.mark.parametrize(
    "name",
    ["demo", "fmnist", "fmnist_readings", "paper_mnist", "paper_cifar10", "authors_mnist", "authors_fmnist"],
)
def test_presets_exist_and_validate(name: str) -> None:
    assert name in experiments()
    cfg = load_config([f"experiment={name}"])
    assert cfg.experiment == name


def test_paper_presets_hold_the_papers_settings() -> None:
    for name, dataset, model in (("paper_mnist", "mnist", "cnn"), ("paper_cifar10", "cifar10", "resnet20")):
        cfg = load_config([f"experiment={name}"])
        assert (cfg.dataset.name, cfg.model.name) == (dataset, model)
        assert (cfg.partition.num_clients, cfg.federation.concurrency, cfg.client.local_epochs) == (10, 5, 10)
        assert (cfg.client.lr, cfg.client.optimizer, cfg.partition.alpha) == (1e-3, "adam", 0.5)
        assert cfg.partition.scheme == "dirichlet" and cfg.server.lr_schedule.name == "paper"


def test_overrides_from_the_readme_compose() -> None:
    cfg = load_config(["experiment=fmnist", "server.aggregator.name=fedbuff", "federation.concurrency=8"])
    assert cfg.dataset.name == "fashion_mnist"
    assert cfg.server.aggregator.name == "fedbuff"
    assert cfg.federation.concurrency == 8
    cfg = load_config(
        [
            "server.aggregator.name=fedasync",
            "server.aggregator.alpha=0.9",
            "server.aggregator.staleness.name=hinge",
            "server.aggregator.staleness.b=3",
        ]
    )
    assert OmegaConf.to_container(cfg.server.aggregator) == {
        "name": "fedasync",
        "alpha": 0.9,
        "staleness": {"name": "hinge", "b": 3},
    }


def test_picking_another_component_drops_the_old_ones_options() -> None:
    # defaults: delay.speed = lognormal with sigma; uniform has no sigma, and that is not an error
    cfg = load_config(["delay.speed.name=uniform", "delay.speed.low=0.5"])
    assert OmegaConf.to_container(cfg.delay.speed) == {"name": "uniform", "low": 0.5}
    cfg = load_config(["delay.comm.name=exponential"])
    assert OmegaConf.to_container(cfg.delay.comm) == {"name": "exponential"}


BAD_INPUT = [
    (["federation.concurency=3"], "federation.concurency", "unknown key"),
    (["federation.concurrency=abc"], "federation.concurrency", "wrong type"),
    (["client.lr=fast"], "client.lr", "wrong type"),
    (["federation.concurrency=11"], "federation.concurrency", "cannot exceed partition.num_clients=10"),
    (["client.lr=-0.01"], "client.lr", "must be > 0"),
    (["partition.alpha=0"], "partition.alpha", "must be > 0"),
    (["partition.alpha=-1"], "partition.alpha", "must be > 0"),
    (
        ["server.aggregator.name=fedprox"],
        "server.aggregator.name",
        "allowed: afl, ca2fl, dc, fadas, fedasync, fedavg, fedbuff",
    ),
    (["server.aggregator.buffer_sise=3"], "server.aggregator.buffer_sise", "options: buffer_size"),
    (["server.lr_schedule.name=cosine"], "server.lr_schedule.name", "allowed: constant, paper"),
    (["delay.speed.name=gamma"], "delay.speed.name", "allowed: constant, lognormal, trace, uniform"),
    (["federation.mode=semi"], "federation.mode", "allowed: async, sync"),
    (["arm=afl", "federation.mode=sync"], "federation.mode", "arm afl runs federation.mode=async, not sync"),
    (
        ["federation.mode=sync", "server.aggregator.name=fedavg", "server.aggregator.buffer_size=2"],
        "server.aggregator.buffer_size",
        "whole barrier rounds of J = federation.concurrency clients",
    ),
    (
        ["arm=sync", "server.aggregator.name=afl"],
        "server.aggregator.name",
        "arm sync runs server.aggregator.name=fedavg, not afl: leave out arm= to run the arm of afl",
    ),
    (
        ["arm=afl", "server.lr_schedule.name=constant", "federation.mode=async", "arm=nope"],
        "arm",
        "unknown arm 'nope'; allowed: afl, afl-noweight",
    ),
    (["arm="], "arm", "is empty: give an arm's name"),
    (["server.lr_schedule.delay_at=both"], "server.lr_schedule.delay_at", "allowed: arrival, dispatch"),
    (["server.lr_schedule.decay=cosine"], "server.lr_schedule.decay", "allowed: sqrt, none"),
    (["dataset.val_fraction=1.0"], "dataset.val_fraction", "must be in [0, 1)"),
    (["client.optimizer_reset=step"], "client.optimizer_reset", "got 'step'; allowed: job, epoch"),
    (["dataset.normalize=zscore"], "dataset.normalize", "got 'zscore'; allowed: mean_std, half"),
    (["server.lr_schedule.decay_over=job"], "server.lr_schedule.decay_over", "allowed: round, local_epoch"),
    (["server.aggregator.server_lr_decay=cos"], "server.aggregator.server_lr_decay", "allowed: sqrt, none"),
    (["server.aggregator.buffer_size=0"], "server.aggregator.buffer_size", "must be >= 1, got 0"),
    (["client.lr=nan"], "client.lr", "must be a finite number, got nan"),
    (
        ["experiment=../defaults"],
        "experiment",
        "unknown experiment '../defaults'; available: authors_cifar10, authors_fmnist, authors_mnist, demo",
    ),
    (["partition.min_samples=0"], "partition.min_samples", "must be >= 1, got 0"),
    (["faults.rate=1.5"], "faults.rate", "must be in [0, 1], got 1.5"),
    (["seed=-1"], "seed", "must be >= 0, got -1"),
    (["federation.eval_every=0"], "federation.eval_every", "must be >= 1, got 0"),
    (["client.batch_size=0"], "client.batch_size", "must be >= 1, got 0"),
    (["federation.workers=0"], "federation.workers", "must be >= 1, got 0"),
    (
        ["delay.speed.name=uniform", "delay.speed.low=2.0", "delay.speed.high=1.0"],
        "delay.speed.low",
        "need 0 < low <= high",
    ),
    (["dataset.name=synthetic", "dataset.synthetic.train_size=0"], "dataset.synthetic.train_size", ">= 1"),
    (["faults.kinds=[boom]"], "faults.kinds", "give one or more of raise, nonfinite, slow"),
    (["faults.slow_factor=0.5"], "faults.slow_factor", "must be >= 1"),
    (["client.timeout_s=0"], "client.timeout_s", "must be > 0"),
    (["server.max_delta_norm=-1"], "server.max_delta_norm", "must be > 0"),
    (["dataset.synthetic.sizee=3"], "dataset.synthetic.sizee", "unknown key"),
    (["dataset.synthetic.noise=abc"], "dataset.synthetic.noise", "wrong type"),
    (["client.lr=1e400"], "client.lr", "must be a finite number, got inf"),
    (["delay.time_per_sample=nan"], "delay.time_per_sample", "must be a finite number"),
    (["delay.comm.max=1e400"], "delay.comm.max", "expected a finite number, got inf"),
    (["server.lr_schedule.alpha=nan"], "server.lr_schedule.alpha", "expected a finite number, got 'nan'"),
    (["dataset.name=imagenet"], "dataset.name", "allowed:"),
    (
        ["experiment=nope"],
        "experiment",
        "available: authors_cifar10, authors_fmnist, authors_mnist, demo, fmnist",
    ),
    (["federation.concurrency"], "federation.concurrency", "expected key=value"),
    (["logging.wandb.mode=cloud"], "logging.wandb.mode", "offline, online, disabled"),
    (["federation.executor=rays"], "federation.executor", "allowed: cohort, ray, serial, thread"),
    (["ray.num_cpus=0"], "ray.num_cpus", "must be > 0, got 0"),
    (["ray.max_retries=-1"], "ray.max_retries", "must be >= 0, got -1"),
    (["ray.num_gpus=-0.5"], "ray.num_gpus", "must be >= 0, got -0.5"),
    (
        ["federation.executor=ray", "ray.num_gpus=0.2", "trainer.accelerator=cpu"],
        "ray.num_gpus",
        "0.2 GPUs reserved for actors that train on the CPU",
    ),
    (["federation.executor=ray", "trainer.accelerator=gpu"], "ray.num_gpus", "Ray hides the GPUs"),
    (
        ["server.aggregator.name=ca2fl", "server.aggregator.max_cache_mib=0.01"],
        "server.aggregator.max_cache_mib",
        "ca2fl caches one delta per client: 10 clients need 1 MiB, more than 0.01",
    ),
    (
        ["federation.sampling.name=greedy"],
        "federation.sampling.name",
        "allowed: adaptive, round_robin, uniform",
    ),
    (
        ["federation.sampling.name=adaptive", "federation.sampling.epsilon=2"],
        "federation.sampling.epsilon",
        "[0, 1]",
    ),
    (["trainer.accelerator=tpu"], "trainer.accelerator", "allowed: auto, cpu, gpu, cuda, mps"),
    (["trainer.precision=16-true"], "trainer.precision", "allowed: 32-true, bf16-mixed, 16-mixed"),
    (["trainer.precision=32"], "trainer.precision", "allowed: 32-true"),
    (["trainer.devices=2"], "trainer.devices", "got 2; a client trains on one device: 1, auto or [k]"),
    (["trainer.devices=[0,1]"], "trainer.devices", "got [0, 1]; a client trains on one device"),
    (["trainer.devices=true"], "trainer.devices", "got True"),
    (["trainer.deterministic=maybe"], "trainer.deterministic", "got 'maybe'; allowed: true, false, warn"),
    (["trainer.deterministic=1"], "trainer.deterministic", "got 1"),
    (
        ["trainer.accelerator=cpu", "trainer.precision=16-mixed"],
        "trainer.precision",
        "16-mixed (float16 AMP) does not run on the CPU: use bf16-mixed or 32-true",
    ),
    (["trainer.accelerator=cpu", "trainer.devices=[0]"], "trainer.devices", "[0] picks a CUDA device"),
    (["ray.adress=auto"], "ray.adress", "unknown key"),
]


@pytest.mark.parametrize(("argv", "key", "text"), BAD_INPUT, ids=[a[0] for a, _, _ in BAD_INPUT])
def test_bad_input_exits_2_naming_the_key(argv, key, text, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = train.main([*argv, f"output_dir={out}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {key}: ")
    assert text in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_asked_for_where_there_is_none_exits_2_in_one_line(accelerator, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = train.main([f"trainer.accelerator={accelerator}", f"output_dir={out}", *QUIET])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(
        f"error: trainer.accelerator: {accelerator} asked for, but torch {torch.__version__}"
    )
    assert err.endswith("sees no CUDA GPU: use trainer.accelerator=cpu (or auto)")
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_ray_without_the_extra_is_a_config_error_saying_how_to_install_it(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` finds when Ray is not installed
    out = tmp_path / "out"
    assert train.main(["federation.executor=ray", f"output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert err == 'error: federation.executor: ray needs the optional extra: pip install -e ".[ray]"\n'
    assert not out.exists()


def test_missing_dataset_offline_names_the_key_and_where_it_looked(tmp_path, capsys) -> None:
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    out = tmp_path / "out"
    code = train.main(
        ["dataset.name=mnist", f"dataset.root={empty}", f"output_dir={out}", "logging.wandb.mode=disabled"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: dataset.root: ")
    assert str(empty) in err and "dataset.download=true" in err
    assert not out.exists()


def test_output_dir_is_never_overwritten(tmp_path, capsys) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    code = train.main([f"output_dir={out}", "logging.wandb.mode=disabled"])
    assert code == 2
    assert "error: output_dir: " in capsys.readouterr().err
    assert (out / "summary.json").read_text() == "{}"


def test_the_script_exits_2_without_a_traceback(tmp_path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            "partition.alpha=0",
            f"output_dir={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: partition.alpha: must be > 0, got 0.0"
    assert not (tmp_path / "out").exists()


def test_show_config_prints_the_resolved_config(capsys) -> None:
    assert train.main(["experiment=fmnist", "client.lr=0.01", "--show-config"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.client.lr == 0.01 and printed.dataset.name == "fashion_mnist"


def test_output_dir_under_a_file_exits_2(tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = train.main(
        [f"output_dir={blocker / 'run'}", "logging.wandb.mode=disabled", "federation.max_updates=2"]
    )
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: output_dir: {blocker} is a file, not a folder: choose another output_dir"
    )
    assert blocker.read_text() == "not a folder"


def test_auto_named_run_folders_are_claimed_atomically(tmp_path, monkeypatch) -> None:
    """Two runs of the same experiment, arm and seed started in the same second get two folders, named
    after the arm."""
    from afl.experiments.outputs import claim_output_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("time.strftime", lambda fmt: "20990101-000000")
    cfg = load_config(["experiment=demo"])
    first, second = claim_output_dir(cfg), claim_output_dir(cfg)
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name == first.name + "-2" and first.name == f"{cfg.arm}-seed0-20990101-000000"


def test_the_checks_build_nothing_and_a_run_builds_its_components_once(tiny, monkeypatch) -> None:
    """``load_config`` checks names, options and types against the components' signatures without
    constructing one; a run constructs each component once (its own value checks run then)."""
    from afl.experiments.run import run
    from afl.server.aggregators import AFL, AGGREGATORS
    from afl.server.staleness import STALENESS, Inverse

    built: list[str] = []

    class Counted(AFL):
        @functools.wraps(AFL.__init__)  # the options the checks read: AFL's
        def __init__(self, *args, **options) -> None:
            built.append("aggregator")
            super().__init__(*args, **options)

    class CountedInverse(Inverse):
        @functools.wraps(Inverse.__init__)
        def __init__(self, *args, **options) -> None:
            built.append("staleness")
            super().__init__(*args, **options)

    monkeypatch.setitem(AGGREGATORS._classes, "afl", Counted)
    monkeypatch.setitem(STALENESS._classes, "inverse", CountedInverse)
    cfg = tiny("arm=afl", "federation.max_updates=4", "server.aggregator.staleness.name=inverse")
    assert built == []
    result = run(cfg)
    assert built == ["staleness", "aggregator"]
    assert result.summary["client_updates"] == 4


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("delay.comm.max=-1", "delay.comm.max"),
        ("server.aggregator.staleness={name: inverse, a: -1}", "server.aggregator.staleness.a"),
        ("client.callbacks=[{name: gradient_norm, norm_type: 0}]", "client.callbacks[0].norm_type"),
    ],
)
def test_a_bad_option_value_passes_the_checks_and_is_refused_when_built(override, key, capsys) -> None:
    """A value only the component's constructor can judge: the config's checks let it through (they build
    nothing), building the components refuses it by its key, and afl-train answers in one line."""
    from afl.errors import ConfigError
    from afl.experiments.components import build_components

    cfg = load_config(["arm=afl", override])
    with pytest.raises(ConfigError) as err:
        build_components(cfg)
    assert err.value.key == key
    assert train.main(["arm=afl", override, "--show-config"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {key}: ")
