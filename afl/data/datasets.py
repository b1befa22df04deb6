"""Image classification datasets, loaded whole into memory as normalised tensors.

Every dataset is returned as a :class:`DatasetSplits` holding two :class:`ArrayData` (train and test) with
``x`` float32 ``N×C×H×W`` normalised by fixed per-dataset constants and ``y`` int64 labels. Nothing is
computed from the data at run time, so the same files always give the same tensors.

Adding a dataset is one loader function registered in :data:`DATASET_LOADERS`.

torchvision and scikit-learn are imported inside the loaders that need them: importing torchvision costs
seconds, which the synthetic dataset and configuration errors should not pay.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from afl.errors import ConfigError
from afl.registry import Registry

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
# Mean and std of all 1797 images of sklearn's digits after scaling to [0, 1] (x / 16), computed once with
# ``x = load_digits().images / 16; x.mean(), x.std()`` -> 0.305260..., 0.376049... and hard-coded here.
DIGITS_MEAN, DIGITS_STD = 0.30526, 0.37605
DIGITS_TEST_SIZE = 297

SYNTHETIC_DEFAULTS: dict[str, int | float] = {
    "train_size": 2000,
    "test_size": 500,
    "num_classes": 10,
    "image_size": 8,
    "channels": 1,
    "noise": 1.0,
    "seed": 0,
}


@dataclass(frozen=True, eq=False)
class ArrayData:
    """A labelled set of images held in memory.

    Attributes:
        x: float32 images, ``N×C×H×W``, normalised, contiguous.
        y: int64 labels, ``N``.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.float32 or self.x.dim() != 4:
            raise ValueError(f"x must be float32 N×C×H×W, got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.dtype != torch.int64 or self.y.dim() != 1:
            raise ValueError(f"y must be int64 of shape N, got {self.y.dtype} {tuple(self.y.shape)}")
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape ``(C, H, W)`` of one image."""
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, indices: np.ndarray | torch.Tensor) -> ArrayData:
        """Return the samples at ``indices`` (a copy, contiguous)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ArrayData(self.x[idx].contiguous(), self.y[idx].contiguous())


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """The train and test sets of one dataset.

    Attributes:
        train: training samples.
        test: test samples.
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        name: the registry name the data was loaded under.
    """

    train: ArrayData
    test: ArrayData
    num_classes: int
    name: str


#: A loader gets the data root, the download flag and the ``synthetic`` options (empty for other datasets).
Loader = Callable[[Path, bool, Mapping[str, Any]], DatasetSplits]

#: Loaders by data set name: register a :data:`Loader` with ``@DATASET_LOADERS.register("name")``.
DATASET_LOADERS: Registry[DatasetSplits] = Registry("dataset")


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str],
    download: bool = False,
    train_subset: int | None = None,
    test_subset: int | None = None,
    synthetic: Mapping[str, Any] | None = None,
) -> DatasetSplits:
    """Load a dataset by registry name.

    Args:
        name: one of :data:`DATASET_LOADERS` (``mnist``, ``fashion_mnist``, ``cifar10``, ``digits``,
            ``synthetic``).
        root: folder holding (or receiving) the data files. Relative paths are relative to the working
            directory.
        download: let torchvision download files that are not found locally.
        train_subset: keep only this many training samples (a fixed subset, see :func:`fixed_subset`).
        test_subset: keep only this many test samples.
        synthetic: options of the ``synthetic`` dataset (keys of :data:`SYNTHETIC_DEFAULTS`); ignored by
            the other datasets.

    Returns:
        The train and test sets.

    Raises:
        ConfigError: unknown name, data files missing or unreadable, failed download, bad subset size, bad
            synthetic option.
    """
    loader = DATASET_LOADERS.get(name, "dataset.name")
    splits = loader(Path(root).expanduser(), bool(download), synthetic or {})
    train = fixed_subset(splits.train, train_subset, "dataset.train_subset")
    test = fixed_subset(splits.test, test_subset, "dataset.test_subset")
    return DatasetSplits(train=train, test=test, num_classes=splits.num_classes, name=name)


def fixed_subset(data: ArrayData, size: int | None, key: str) -> ArrayData:
    """Keep ``size`` samples: the first ``size`` of a permutation drawn from ``default_rng(0)``.

    The subset does not depend on any run seed, and being a uniform random draw it keeps the class balance
    roughly. The kept samples stay in their original order.

    Args:
        data: the full set.
        size: how many samples to keep; ``None`` keeps everything.
        key: config key named in errors.

    Returns:
        The subset (``data`` itself when ``size`` is ``None``).

    Raises:
        ConfigError: ``size`` is not an integer in ``1 .. len(data)``.
    """
    if size is None:
        return data
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ConfigError(key, f"must be an integer or null, got {size!r}")
    if not 1 <= size <= len(data):
        raise ConfigError(key, f"must be between 1 and {len(data)} (the size of the set), got {size}")
    keep = np.sort(np.random.default_rng(0).permutation(len(data))[:size])
    return data.subset(keep)


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
    raw.mkdir(parents=True, exist_ok=True)
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
def _load_mnist(root: Path, download: bool, options: Mapping[str, Any]) -> DatasetSplits:
    train, test = _load_idx_dataset(root, download, class_name="MNIST", mean=MNIST_MEAN, std=MNIST_STD)
    return DatasetSplits(train, test, 10, "mnist")


@DATASET_LOADERS.register("fashion_mnist")
def _load_fashion_mnist(root: Path, download: bool, options: Mapping[str, Any]) -> DatasetSplits:
    train, test = _load_idx_dataset(
        root,
        download,
        class_name="FashionMNIST",
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        extra_dirs=(DEBIAN_FASHION_MNIST_DIR,),
    )
    return DatasetSplits(train, test, 10, "fashion_mnist")


# ---------------------------------------------------------------------------------------------- CIFAR-10


@cache
def _cifar10_class() -> Any:
    """torchvision's CIFAR10, checking only that its files exist.

    torchvision's ``_check_integrity`` (and ``_load_meta``) compare each file's md5 with the official
    release. That rejects any other correctly formatted batch files (such as the small ones the tests
    write) and hashes 170 MB on every load, while a truncated or foreign file fails loudly when unpickled
    anyway. Reading stays torchvision's own ``__init__``. Built lazily so that importing this module does
    not import torchvision.
    """
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    class ExistenceCheckedCIFAR10(CIFAR10):
        meta = {**CIFAR10.meta, "md5": None}  # _load_meta: check_integrity(path, None) only tests existence

        def _check_integrity(self) -> bool:
            folder = os.path.join(self.root, self.base_folder)
            return all(
                check_integrity(os.path.join(folder, name)) for name, _ in self.train_list + self.test_list
            )

    return ExistenceCheckedCIFAR10


CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


@DATASET_LOADERS.register("cifar10")
def _load_cifar10(root: Path, download: bool, options: Mapping[str, Any]) -> DatasetSplits:
    dataset_class = _cifar10_class()
    folder = root / dataset_class.base_folder
    needed = (*CIFAR10_FILES, "batches.meta")
    if not all((folder / name).is_file() for name in needed):
        if not download:
            raise ConfigError(
                "dataset.root",
                _missing_message(
                    "CIFAR-10",
                    ", ".join(needed),
                    [folder],
                    "a folder holding cifar-10-batches-py/ (the extracted cifar-10-python.tar.gz)",
                ),
            )
        _download(dataset_class, root, "CIFAR-10")

    splits = []
    for train in (True, False):
        try:
            ds = dataset_class(str(root), train=train, download=False)
        except Exception as error:  # unpickling a bad file can raise almost anything
            raise ConfigError(
                "dataset.root", f"could not read the CIFAR-10 files in {folder}: {_one_line(error)}"
            ) from None
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)  # torchvision gives NHWC
        y = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))
        _check_labels(y, 10, f"{folder} ({'train' if train else 'test'})")
        splits.append(ArrayData(_normalise_uint8(images, CIFAR10_MEAN, CIFAR10_STD), y))
    return DatasetSplits(splits[0], splits[1], 10, "cifar10")


# ------------------------------------------------------------------------------------------------ digits


@DATASET_LOADERS.register("digits")
def _load_digits(root: Path, download: bool, options: Mapping[str, Any]) -> DatasetSplits:
    """sklearn's bundled 8×8 digits: 1797 images, a fixed 1500 / 297 train/test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(((bunch.images / 16.0 - DIGITS_MEAN) / DIGITS_STD).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    data = ArrayData(x.contiguous(), y)
    order = np.random.default_rng(0).permutation(len(data))  # fixed split, independent of any run seed
    train = data.subset(np.sort(order[:-DIGITS_TEST_SIZE]))
    test = data.subset(np.sort(order[-DIGITS_TEST_SIZE:]))
    return DatasetSplits(train, test, 10, "digits")


# --------------------------------------------------------------------------------------------- synthetic


def _synthetic_options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(SYNTHETIC_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"dataset.synthetic.{unknown[0]}", f"unknown option; allowed: {', '.join(SYNTHETIC_DEFAULTS)}"
        )
    merged: dict[str, Any] = {**SYNTHETIC_DEFAULTS, **options}
    minimum = {"train_size": 1, "test_size": 1, "num_classes": 2, "image_size": 1, "channels": 1, "seed": 0}
    for key, low in minimum.items():
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"dataset.synthetic.{key}", f"must be an integer >= {low}, got {value!r}")
    noise = merged["noise"]
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < float("inf"):
        raise ConfigError("dataset.synthetic.noise", f"must be a finite number >= 0, got {noise!r}")
    return merged


@DATASET_LOADERS.register("synthetic")
def _load_synthetic(root: Path, download: bool, options: Mapping[str, Any]) -> DatasetSplits:
    """Class-conditional Gaussian images: ``template[class] + noise * N(0, 1)`` per pixel.

    Templates are standard normal images drawn from ``default_rng(seed)``; labels are balanced (``i mod
    num_classes``, shuffled). Two templates differ by about ``sqrt(2 * C * H * W)`` in Euclidean distance, so
    with the defaults a nearest-class-mean (linear) classifier is almost perfect; raise ``noise`` to make it
    harder.
    """
    opts = _synthetic_options(options)
    rng = np.random.default_rng(opts["seed"])
    c, s, k = opts["channels"], opts["image_size"], opts["num_classes"]
    templates = rng.standard_normal((k, c, s, s)).astype(np.float32)

    def draw(n: int) -> ArrayData:
        labels = rng.permutation(np.arange(n) % k)
        x = templates[labels] + np.float32(opts["noise"]) * rng.standard_normal(
            (n, c, s, s), dtype=np.float32
        )
        return ArrayData(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(labels.astype(np.int64)))

    train = draw(opts["train_size"])
    test = draw(opts["test_size"])
    return DatasetSplits(train, test, k, "synthetic")
