"""Data sets read from files in torchvision's layouts: MNIST and Fashion-MNIST (idx files, found in
torchvision's ``raw`` folder, flat in ``dataset.root`` or in Debian's ``dataset-fashion-mnist``, and read by
torchvision's own classes) and CIFAR-10 (the python pickles of ``cifar-10-batches-py``). Where the files
are missing and ``dataset.download=true``, torchvision downloads them.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from afl.data import DATASET_LOADERS
from afl.data.datasets import ArrayData, DatasetSplits
from afl.errors import ConfigError

#: Where Debian's ``dataset-fashion-mnist`` package installs the four gzipped idx files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: The four idx files of MNIST and Fashion-MNIST, uncompressed names (torchvision's raw layout).
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


# --------------------------------------------------------------------------------------------- helpers


def _normalise_uint8(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Turn uint8 ``N×C×H×W`` images into float32 ``(x / 255 - mean) / std`` per channel (contiguous)."""
    x = images.to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(m).div_(s).contiguous()


def _check_labels(y: torch.Tensor, num_classes: int, where: str) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ConfigError(
            "dataset.root",
            f"labels in {where} must lie in 0..{num_classes - 1}, found {int(y.min())}..{int(y.max())}",
        )


def _download(dataset_class: Any, root: Path, what: str) -> None:
    """Let torchvision download a data set into ``root``; a failure is the user's ``dataset.download``."""
    try:
        dataset_class(str(root), train=True, download=True)
    except Exception as error:  # torchvision raises URLError, RuntimeError, OSError, ...
        raise ConfigError(
            "dataset.download", f"downloading {what} into {root} failed: {_one_line(error)}"
        ) from None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# ------------------------------------------------------------------------------ MNIST and Fashion-MNIST


def _find_idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _place_idx_files(raw: Path, sources: dict[str, Path]) -> None:
    """Copy (decompressing ``.gz``) the idx files into torchvision's ``raw`` folder.

    Each file is written under a temporary name and renamed, so a concurrent reader never sees half a file.
    """
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            "dataset.root", f"cannot create {raw} for the idx files: {_one_line(error)}"
        ) from None
    for name, source in sources.items():
        target = raw / name
        if source == target:
            continue
        partial = raw / f".{name}.{os.getpid()}.partial"
        try:
            opener = gzip.open if source.suffix == ".gz" else open
            with opener(source, "rb") as fin, open(partial, "wb") as fout:
                shutil.copyfileobj(fin, fout, length=1 << 20)
            os.replace(partial, target)
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            partial.unlink(missing_ok=True)
            raise ConfigError(
                "dataset.root", f"could not copy {source} to {target}: {_one_line(error)}"
            ) from None


def _locate_idx_files(root: Path, class_name: str, extra_dirs: tuple[Path, ...]) -> tuple[bool, list[Path]]:
    """Make sure ``<root>/<class_name>/raw`` holds the four uncompressed idx files.

    Looks in torchvision's layout first, then flat under ``root``, then in ``extra_dirs``; the first folder
    holding all four files (each plain or ``.gz``) is copied into the raw folder.

    Returns:
        Whether the files are now in place, and the folders searched (for the error message).
    """
    raw = root / class_name / "raw"
    searched = [raw, root, *extra_dirs]
    if all((raw / name).is_file() for name in IDX_FILES):
        return True, searched
    for folder in searched:
        found = {name: _find_idx_file(folder, name) for name in IDX_FILES}
        if all(path is not None for path in found.values()):
            _place_idx_files(raw, {name: path for name, path in found.items() if path is not None})
            return True, searched
    return False, searched


def _missing_message(what: str, looked_for: str, searched: list[Path], hint: str) -> str:
    places = ", ".join(str(Path(os.path.abspath(p))) for p in searched)
    return (
        f"{what} not found: looked for {looked_for} in {places}. "
        f"Set dataset.download=true on a machine with internet access, or point dataset.root at {hint}"
    )


def _load_idx_dataset(
    root: Path, download: bool, *, class_name: str, mean: float, std: float, extra_dirs: tuple[Path, ...] = ()
) -> tuple[ArrayData, ArrayData]:
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, class_name)
    present, searched = _locate_idx_files(root, class_name, extra_dirs)
    if not present:
        if not download:
            hint = "a folder holding these four files (plain or .gz)"
            if class_name == "FashionMNIST":
                hint += (
                    f", or install Debian's copy with `apt-get install dataset-fashion-mnist` "
                    f"(into {DEBIAN_FASHION_MNIST_DIR})"
                )
            raise ConfigError(
                "dataset.root",
                _missing_message(class_name, "the idx files " + ", ".join(IDX_FILES), searched, hint),
            )
        _download(dataset_class, root, class_name)

    raw = root / class_name / "raw"
    splits = []
    for train in (True, False):
        try:
            ds = dataset_class(str(root), train=train, download=False)
        except (RuntimeError, ValueError, TypeError, AssertionError, OSError) as error:
            raise ConfigError(
                "dataset.root", f"could not read the {class_name} idx files in {raw}: {_one_line(error)}"
            ) from None
        images, labels = ds.data, ds.targets
        where = f"{raw} ({'train' if train else 't10k'})"
        if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28) or len(images) != len(labels):
            raise ConfigError(
                "dataset.root",
                f"{where}: expected N×28×28 images and N labels, got images {tuple(images.shape)} "
                f"and {len(labels)} labels",
            )
        y = labels.to(torch.int64).contiguous()
        _check_labels(y, 10, where)
        splits.append(ArrayData(_normalise_uint8(images.unsqueeze(1), (mean,), (std,)), y))
    return splits[0], splits[1]


@DATASET_LOADERS.register("mnist")
def _load_mnist(root: Path, download: bool) -> DatasetSplits:
    train, test = _load_idx_dataset(root, download, class_name="MNIST", mean=MNIST_MEAN, std=MNIST_STD)
    return DatasetSplits(train, test, 10, "mnist", ((MNIST_MEAN,), (MNIST_STD,)))


@DATASET_LOADERS.register("fashion_mnist")
def _load_fashion_mnist(root: Path, download: bool) -> DatasetSplits:
    train, test = _load_idx_dataset(
        root,
        download,
        class_name="FashionMNIST",
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        extra_dirs=(DEBIAN_FASHION_MNIST_DIR,),
    )
    return DatasetSplits(train, test, 10, "fashion_mnist", ((FASHION_MNIST_MEAN,), (FASHION_MNIST_STD,)))


# ---------------------------------------------------------------------------------------------- CIFAR-10


CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


CIFAR10_FOLDER = "cifar-10-batches-py"


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file of the python version of CIFAR-10: a pickled dict whose ``data`` is ``N×3072`` uint8
    (per image the 1024 red values row by row, then green, then blue) and ``labels`` N ints. The keys
    are Python 2 ``str``: unpickled with ``encoding="latin1"`` as torchvision does."""
    with path.open("rb") as f:
        batch = pickle.load(f, encoding="latin1")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = batch["labels"]
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"expected N×3072 data and N labels, got {data.shape} and {len(labels)} labels")
    images = torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, 32, 32)))
    return images, torch.as_tensor(np.asarray(labels, dtype=np.int64))


@DATASET_LOADERS.register("cifar10")
def _load_cifar10(root: Path, download: bool) -> DatasetSplits:
    folder = root / CIFAR10_FOLDER
    if not all((folder / name).is_file() for name in CIFAR10_FILES):
        if not download:
            raise ConfigError(
                "dataset.root",
                _missing_message(
                    "CIFAR-10",
                    ", ".join(CIFAR10_FILES),
                    [folder],
                    "a folder holding cifar-10-batches-py/ (the extracted cifar-10-python.tar.gz)",
                ),
            )
        from torchvision.datasets import CIFAR10

        _download(CIFAR10, root, "CIFAR-10")
    splits = []
    for names, part in ((CIFAR10_FILES[:-1], "train"), (CIFAR10_FILES[-1:], "test")):
        try:
            batches = [_read_cifar_batch(folder / name) for name in names]
        except Exception as error:  # unpickling a bad file can raise almost anything
            raise ConfigError(
                "dataset.root", f"could not read the CIFAR-10 files in {folder}: {_one_line(error)}"
            ) from None
        y = torch.cat([b[1] for b in batches])
        _check_labels(y, 10, f"{folder} ({part})")
        images = torch.cat([b[0] for b in batches])
        splits.append(ArrayData(_normalise_uint8(images, CIFAR10_MEAN, CIFAR10_STD), y))
    return DatasetSplits(splits[0], splits[1], 10, "cifar10", (CIFAR10_MEAN, CIFAR10_STD))
