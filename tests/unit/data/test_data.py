"""Loading datasets from real files in their real formats (idx for MNIST, pickled batches for CIFAR-10)."""

from __future__ import annotations

import gzip
import pickle
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from afl.data import DATASET_LOADERS
from afl.data.builtin import DIGITS_MEAN, DIGITS_STD
from afl.data.datasets import load_dataset
from afl.data.torchvision_sets import DEBIAN_FASHION_MNIST_DIR, IDX_FILES
from afl.errors import ConfigError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


# ----------------------------------------------------------------------------------------- idx files


def idx_images(images: np.ndarray) -> bytes:
    """Encode uint8 N×H×W images as an idx3 file (big-endian header, magic 2051)."""
    n, h, w = images.shape
    return struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    """Encode uint8 labels as an idx1 file (big-endian header, magic 2049)."""
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def fake_mnist(n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Images that are 0 except pixel (0, 0) = 20 * i + offset and pixel (27, 27) = 255; label i mod 10."""
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = 20 * np.arange(n) + offset
    images[:, 27, 27] = 255
    return images, (np.arange(n) % 10).astype(np.uint8)


TRAIN = fake_mnist(12, offset=0)
TEST = fake_mnist(5, offset=7)


def write_mnist(folder: Path, *, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    contents = {
        "train-images-idx3-ubyte": idx_images(TRAIN[0]),
        "train-labels-idx1-ubyte": idx_labels(TRAIN[1]),
        "t10k-images-idx3-ubyte": idx_images(TEST[0]),
        "t10k-labels-idx1-ubyte": idx_labels(TEST[1]),
    }
    for name, data in contents.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


def assert_fake_mnist(splits, mean: float, std: float) -> None:
    assert splits.num_classes == 10
    for data, (_, labels), offset in ((splits.train, TRAIN, 0), (splits.test, TEST, 7)):
        n = len(labels)
        assert len(data) == n
        assert data.x.shape == (n, 1, 28, 28) and data.input_shape == (1, 28, 28)
        assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
        assert data.x.is_contiguous()
        assert data.y.tolist() == [i % 10 for i in range(n)]
        expected_corner = (torch.tensor([20.0 * i + offset for i in range(n)]) / 255 - mean) / std
        torch.testing.assert_close(data.x[:, 0, 0, 0], expected_corner, rtol=0, atol=1e-5)
        torch.testing.assert_close(
            data.x[:, 0, 27, 27], torch.full((n,), (1 - mean) / std), rtol=0, atol=1e-5
        )
        torch.testing.assert_close(data.x[:, 0, 14, 3], torch.full((n,), -mean / std), rtol=0, atol=1e-5)


def test_mnist_torchvision_layout(tmp_path: Path) -> None:
    write_mnist(tmp_path / "MNIST" / "raw", gz=False)
    splits = load_dataset("mnist", root=str(tmp_path))
    assert splits.name == "mnist"
    assert_fake_mnist(splits, MNIST_MEAN, MNIST_STD)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize(
    ("name", "folder", "mean", "std"),
    [("mnist", "MNIST", MNIST_MEAN, MNIST_STD), ("fashion_mnist", "FashionMNIST", FMNIST_MEAN, FMNIST_STD)],
)
def test_idx_flat_layout_is_copied_into_raw(
    tmp_path: Path, gz: bool, name: str, folder: str, mean: float, std: float
) -> None:
    write_mnist(tmp_path, gz=gz)
    splits = load_dataset(name, root=tmp_path)
    # Files under root win over Debian's full Fashion-MNIST: we got our 12 + 5 samples.
    assert_fake_mnist(splits, mean, std)
    raw = tmp_path / folder / "raw"
    assert (raw / "train-images-idx3-ubyte").read_bytes() == idx_images(TRAIN[0])
    assert (raw / "t10k-labels-idx1-ubyte").read_bytes() == idx_labels(TEST[1])
    assert sorted(p.name for p in raw.iterdir()) == sorted(IDX_FILES)  # no temporary files left behind
    # Second load reads the raw copies.
    for p in tmp_path.glob("*-ubyte*"):
        p.unlink()
    assert_fake_mnist(load_dataset(name, root=tmp_path), mean, std)


def test_mnist_missing_files(tmp_path: Path) -> None:
    # Only the training half: still not a dataset.
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(ConfigError) as info:
        load_dataset("mnist", root=tmp_path, download=False)
    assert info.value.key == "dataset.root"
    message = info.value.message
    assert str(tmp_path / "MNIST" / "raw") in message and f", {tmp_path}." in message
    assert "t10k-images-idx3-ubyte" in message and "dataset.download=true" in message
    assert "\n" not in str(info.value)
    assert not (tmp_path / "MNIST" / "raw").exists()  # nothing copied from an incomplete set


def test_mnist_corrupt_file(tmp_path: Path) -> None:
    write_mnist(tmp_path / "MNIST" / "raw", gz=False)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"not an idx file at all")
    with pytest.raises(ConfigError) as info:
        load_dataset("mnist", root=tmp_path)
    assert info.value.key == "dataset.root"
    assert "MNIST" in info.value.message


def _network_reachable() -> bool:
    try:
        with socket.create_connection(("ossci-datasets.s3.amazonaws.com", 443), timeout=3):
            return True
    except OSError:
        return False


def test_download_offline_is_a_config_error(tmp_path: Path) -> None:
    if _network_reachable():
        pytest.skip("the network works here, so a download would not fail")
    with pytest.raises(ConfigError) as info:
        load_dataset("mnist", root=tmp_path, download=True)
    assert info.value.key == "dataset.download"
    assert "MNIST" in info.value.message and "\n" not in info.value.message


def test_fashion_mnist_from_debian_package(tmp_path: Path) -> None:
    if not all((DEBIAN_FASHION_MNIST_DIR / f"{name}.gz").is_file() for name in IDX_FILES):
        pytest.skip("Debian's dataset-fashion-mnist is not installed: apt-get install dataset-fashion-mnist")
    splits = load_dataset("fashion_mnist", root=tmp_path)
    assert (len(splits.train), len(splits.test), splits.num_classes) == (60000, 10000, 10)
    assert splits.train.x.shape == (60000, 1, 28, 28) and splits.test.x.shape == (10000, 1, 28, 28)
    assert splits.train.x.dtype == torch.float32 and splits.train.y.dtype == torch.int64
    assert torch.bincount(splits.train.y).tolist() == [6000] * 10
    assert torch.bincount(splits.test.y).tolist() == [1000] * 10
    # The hard-coded constants are the training set's mean and std.
    assert abs(splits.train.x.mean().item()) < 0.01
    assert abs(splits.train.x.std().item() - 1) < 0.01
    assert all((tmp_path / "FashionMNIST" / "raw" / name).is_file() for name in IDX_FILES)


# ------------------------------------------------------------------------------------------- CIFAR-10


def cifar_batch(n: int, first: int) -> dict:
    """Image i (global index first + i): R plane = 10 * i, G = 100, B = 200 + i; pixel (0, 1) of R = 255."""
    data = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    for k in range(n):
        i = first + k
        data[k, 0] = 10 * i
        data[k, 1] = 100
        data[k, 2] = 200 + i
        data[k, 0, 0, 1] = 255
    # The real files store each image as 3072 bytes: the 1024 red values row by row, then green, then
    # blue. torchvision unpickles with encoding="latin1", which turns the original Python 2 str keys into
    # str, so the keys here are str too (b"data" is what encoding="bytes" would show).
    return {"data": data.reshape(n, 3072), "labels": [(i * 3) % 10 for i in range(first, first + n)]}


def write_cifar(root: Path, skip: str | None = None) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    files = {f"data_batch_{b}": cifar_batch(2, 2 * (b - 1)) for b in range(1, 6)}
    files["test_batch"] = cifar_batch(3, 10)
    files["batches.meta"] = {
        "label_names": [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]
    }
    for name, content in files.items():
        if name != skip:
            (folder / name).write_bytes(pickle.dumps(content, protocol=2))


def test_cifar10_real_format(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    splits = load_dataset("cifar10", root=tmp_path)
    assert (len(splits.train), len(splits.test), splits.num_classes) == (10, 3, 10)
    for data, first in ((splits.train, 0), (splits.test, 10)):
        n = len(data)
        assert data.x.shape == (n, 3, 32, 32) and data.input_shape == (3, 32, 32)
        assert data.x.dtype == torch.float32 and data.x.is_contiguous()
        idx = torch.arange(first, first + n, dtype=torch.float32)
        assert data.y.tolist() == [(i * 3) % 10 for i in range(first, first + n)]
        torch.testing.assert_close(data.x[:, 0, 5, 7], (10 * idx / 255 - CIFAR_MEAN[0]) / CIFAR_STD[0])
        torch.testing.assert_close(
            data.x[:, 1, 31, 0], torch.full((n,), (100 / 255 - CIFAR_MEAN[1]) / CIFAR_STD[1])
        )
        torch.testing.assert_close(data.x[:, 2, 0, 0], ((200 + idx) / 255 - CIFAR_MEAN[2]) / CIFAR_STD[2])
        # Row-major inside a plane: (row 0, column 1) is the bright pixel, (row 1, column 0) is not.
        torch.testing.assert_close(data.x[:, 0, 0, 1], torch.full((n,), (1 - CIFAR_MEAN[0]) / CIFAR_STD[0]))
        torch.testing.assert_close(data.x[:, 0, 1, 0], (10 * idx / 255 - CIFAR_MEAN[0]) / CIFAR_STD[0])


def test_cifar10_missing_file(tmp_path: Path) -> None:
    write_cifar(tmp_path, skip="data_batch_3")
    with pytest.raises(ConfigError) as info:
        load_dataset("cifar10", root=tmp_path)
    assert info.value.key == "dataset.root"
    assert str(tmp_path / "cifar-10-batches-py") in info.value.message
    assert "data_batch_3" in info.value.message and "dataset.download=true" in info.value.message


# ----------------------------------------------------------------------------------- digits, synthetic


def test_digits_split_is_fixed(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    a = load_dataset("digits", root=tmp_path)
    b = load_dataset("digits", root=tmp_path)
    assert (len(a.train), len(a.test), a.num_classes) == (1500, 297, 10)
    assert a.train.x.shape == (1500, 1, 8, 8) and a.test.input_shape == (1, 8, 8)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    # Undoing the normalisation gives back sklearn's integer pixel values 0..16, all images accounted for.
    pixels = torch.cat([a.train.x, a.test.x]).double() * DIGITS_STD + DIGITS_MEAN
    raw = pixels * 16
    assert torch.allclose(raw, raw.round(), atol=1e-3) and raw.min() > -1e-3 and raw.max() < 16 + 1e-3
    reference = load_digits()
    assert abs(raw.sum().item() - reference.images.sum()) < 1
    labels = torch.cat([a.train.y, a.test.y])
    assert torch.bincount(labels).tolist() == np.bincount(reference.target).tolist()
    assert set(a.test.y.tolist()) == set(range(10))
    # The constants really are the whole set's mean and std.
    assert abs(pixels.mean().item() - DIGITS_MEAN) < 1e-4 and abs(pixels.std().item() - DIGITS_STD) < 1e-3


def nearest_mean_accuracy(splits) -> float:
    train_x = splits.train.x.flatten(1)
    means = torch.stack([train_x[splits.train.y == c].mean(0) for c in range(splits.num_classes)])
    predicted = torch.cdist(splits.test.x.flatten(1), means).argmin(1)
    return (predicted == splits.test.y).double().mean().item()


def test_synthetic_is_learnable_and_seeded(tmp_path: Path) -> None:
    splits = load_dataset("synthetic", root=tmp_path)
    assert (len(splits.train), len(splits.test), splits.num_classes) == (2000, 500, 10)
    assert splits.train.x.shape == (2000, 1, 8, 8) and splits.train.x.dtype == torch.float32
    assert torch.bincount(splits.train.y).tolist() == [200] * 10
    assert nearest_mean_accuracy(splits) > 0.8
    # Hopelessly noisy data is not learnable: the accuracy above is not an artefact of the classifier.
    noisy = load_dataset("synthetic", root=tmp_path, synthetic={"noise": 100.0})
    assert nearest_mean_accuracy(noisy) < 0.3

    again = load_dataset("synthetic", root=tmp_path, synthetic={"seed": 0})
    other = load_dataset("synthetic", root=tmp_path, synthetic={"seed": 1})
    assert torch.equal(splits.train.x, again.train.x) and torch.equal(splits.test.y, again.test.y)
    assert not torch.equal(splits.train.x, other.train.x)


def test_synthetic_options(tmp_path: Path) -> None:
    options = {"train_size": 30, "test_size": 7, "num_classes": 4, "image_size": 5, "channels": 3}
    splits = load_dataset("synthetic", root=tmp_path, synthetic=options)
    assert splits.train.x.shape == (30, 3, 5, 5) and splits.test.x.shape == (7, 3, 5, 5)
    assert splits.num_classes == 4 and int(splits.train.y.max()) == 3
    with pytest.raises(ConfigError) as info:
        load_dataset("synthetic", root=tmp_path, synthetic={"sizee": 3})
    assert info.value.key == "dataset.synthetic.sizee"
    with pytest.raises(ConfigError) as info:
        load_dataset("synthetic", root=tmp_path, synthetic={"num_classes": 1})
    assert info.value.key == "dataset.synthetic.num_classes"


# -------------------------------------------------------------------------------------- subsets, names


def test_subsets_are_fixed_and_balanced(tmp_path: Path) -> None:
    full = load_dataset("digits", root=tmp_path)
    small = load_dataset("digits", root=tmp_path, train_subset=200, test_subset=50)
    assert (len(small.train), len(small.test)) == (200, 50)
    keep = np.sort(np.random.default_rng(0).permutation(1500)[:200])
    assert torch.equal(small.train.x, full.train.x[keep]) and torch.equal(small.train.y, full.train.y[keep])
    again = load_dataset("digits", root=tmp_path, train_subset=200)
    assert torch.equal(again.train.x, small.train.x) and len(again.test) == 297
    counts = torch.bincount(small.train.y, minlength=10)
    assert counts.min() >= 10 and counts.max() <= 30  # about 20 of each class
    assert len(load_dataset("digits", root=tmp_path, train_subset=1500).train) == 1500


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"train_subset": 0}, "dataset.train_subset"),
        ({"train_subset": -5}, "dataset.train_subset"),
        ({"train_subset": 1501}, "dataset.train_subset"),
        ({"train_subset": 2.5}, "dataset.train_subset"),
        ({"test_subset": 298}, "dataset.test_subset"),
    ],
)
def test_bad_subsets(tmp_path: Path, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset("digits", root=tmp_path, **kwargs)
    assert info.value.key == key


def test_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset("imagenet", root=tmp_path)
    assert info.value.key == "dataset.name"
    for name in ("mnist", "fashion_mnist", "cifar10", "digits", "synthetic"):
        assert name in info.value.message and name in DATASET_LOADERS


def test_cifar10_truncated_or_foreign_file_is_a_clear_error(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:100])  # truncated
    with pytest.raises(
        ConfigError, match=r"dataset.root: could not read the CIFAR-10 files in .*(Unpickling|EOF)Error"
    ):
        load_dataset("cifar10", root=tmp_path)
    batch.write_bytes(pickle.dumps({"data": np.zeros((2, 100), dtype=np.uint8), "labels": [0, 1]}))
    with pytest.raises(ConfigError, match=r"expected N×3072 data and N labels, got \(2, 100\)"):
        load_dataset("cifar10", root=tmp_path)


def test_dataset_root_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    """The idx files are found, but torchvision's raw folder cannot be made under dataset.root (here: a
    file in the way; root may write anywhere, so no permission bits): a ConfigError, never a traceback."""
    from afl.data.torchvision_sets import _place_idx_files

    found = tmp_path / "found"
    found.mkdir()
    write_mnist(found, gz=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"dataset.root: cannot create .*a-file/FashionMNIST/raw"):
        _place_idx_files(blocker / "FashionMNIST" / "raw", {n: found / n for n in IDX_FILES})


# ------------------------------------------------------------------------------- dataset.normalize=half
def test_half_normalization_is_the_released_codes_on_every_pixel_data_set(tmp_path: Path) -> None:
    """``(p - 0.5) / 0.5`` on the real-format files: MNIST's idx and CIFAR-10's pickles, and digits."""
    write_mnist(tmp_path / "MNIST" / "raw", gz=False)
    assert_fake_mnist(load_dataset("mnist", root=tmp_path, normalize="half"), 0.5, 0.5)
    write_cifar(tmp_path)
    half, own = (load_dataset("cifar10", root=tmp_path, normalize=n) for n in ("half", "mean_std"))
    assert half.pixel_stats == own.pixel_stats == (CIFAR_MEAN, CIFAR_STD)
    idx = torch.arange(len(half.train), dtype=torch.float32)
    torch.testing.assert_close(half.train.x[:, 2, 0, 0], ((200 + idx) / 255 - 0.5) / 0.5)
    torch.testing.assert_close(half.train.x[:, 1, 31, 0], torch.full((len(idx),), (100 / 255 - 0.5) / 0.5))
    assert torch.equal(half.train.y, own.train.y)
    from sklearn.datasets import load_digits

    digits = load_dataset("digits", root=tmp_path, normalize="half")
    pixels = torch.from_numpy(load_digits().images / 16.0).float()
    assert float(digits.train.x.min()) == pytest.approx(-1.0, abs=1e-5)
    assert float(digits.train.x.max()) == pytest.approx(1.0, abs=1e-5)
    # every normalised image is one of sklearn's, pixel for pixel
    first = digits.train.x[0, 0]
    match = ((pixels * 2 - 1) - first).abs().amax(dim=(1, 2)).min()
    assert float(match) < 1e-5


def test_half_normalization_needs_pixels(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="dataset.normalize: half needs images of pixels in .0, 1.; synthetic"
    ):
        load_dataset("synthetic", root=tmp_path, normalize="half")
