"""Image loaders on tiny files written here in the real formats (IDX, CIFAR pickles), the
embedded digits, and the dequantisation / logit transform against known answers."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest

from flowbench.benchmarks import metrics
from flowbench.datasets import DatasetError
from flowbench.datasets.images import (IDX_FILES, ImageData, LogitDequantizer, cifar10, digits,
                             fashion_mnist, load_images, mnist, read_idx)

N_TRAIN, N_TEST = 5, 3


# ----------------------------------------------------------------------------- writers

def _idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding written out by hand from the format description, independently
    of the reader: 0, 0, dtype 0x08, ndim, big-endian int32 sizes, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _write(path, data: bytes, gz: bool):
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _mnist_files(directory, gz=(), seed=0) -> dict[str, np.ndarray]:
    """Four tiny IDX files (gzipped where named in `gz`); returns what was written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        _write(directory / name, _idx_bytes(a), name in gz)
    return arrays


def _cifar_batch(rows: int, label: int, rng) -> dict:
    return {b"batch_label": b"test", b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8),
            b"labels": [label] * rows, b"filenames": [b"x.png"] * rows}


def _cifar_files(directory, rows=2, seed=0) -> dict[str, dict]:
    """data_batch_1..5 (labels = batch number, to see the concatenation order) and
    test_batch, pickled with bytes keys as in the official archive."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    batches = {f"data_batch_{i}": _cifar_batch(rows, i, rng) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(rows + 1, 0, rng)
    for name, batch in batches.items():
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
    return batches


# ----------------------------------------------------------------------------- IDX

def test_idx_writer_matches_the_format_by_hand():
    # guards the helper the loader tests rely on: sizes big-endian, payload row-major
    assert _idx_bytes(np.array([7, 8, 9], np.uint8)) == \
        b"\x00\x00\x08\x01" + b"\x00\x00\x00\x03" + b"\x07\x08\x09"
    assert _idx_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3)) == \
        b"\x00\x00\x08\x02\x00\x00\x00\x02\x00\x00\x00\x03" + bytes(range(6))


def test_read_idx_parses_hand_written_files(tmp_path):
    (tmp_path / "a").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x03\x07\x08\x09")
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), [7, 8, 9])
    (tmp_path / "b").write_bytes(b"\x00\x00\x08\x02\x00\x00\x00\x02\x00\x00\x00\x03"
                                 + bytes(range(6)))
    b = read_idx(tmp_path / "b")
    assert b.dtype == np.uint8
    np.testing.assert_array_equal(b, [[0, 1, 2], [3, 4, 5]])
    b[0, 0] = 1  # writable: callers may normalise in place


@pytest.mark.parametrize("gz", [(), tuple(IDX_FILES), IDX_FILES[::2]],
                         ids=["plain", "gzipped", "mixed"])
@pytest.mark.parametrize("loader", [mnist, fashion_mnist])
def test_idx_loaders_round_trip(tmp_path, gz, loader):
    written = _mnist_files(tmp_path, gz=gz)
    assert sum(p.name.endswith(".gz") for p in tmp_path.iterdir()) == len(gz)
    train, test = loader(tmp_path)
    assert train.images.shape == (N_TRAIN, 28, 28, 1) and train.images.dtype == np.uint8
    assert test.images.shape == (N_TEST, 28, 28, 1)
    np.testing.assert_array_equal(train.images[..., 0], written["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(test.images[..., 0], written["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(train.labels, written["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(test.labels, written["t10k-labels-idx1-ubyte"])
    assert train.labels.dtype == np.int64


def test_idx_missing_files_are_all_named(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(
        _idx_bytes(np.zeros((1, 28, 28), np.uint8)))
    with pytest.raises(DatasetError) as err:
        mnist(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg
    for name in IDX_FILES[1:]:
        assert name in msg
    assert "train-images-idx3-ubyte" not in msg  # present, so not reported missing
    assert "lecun.com" in msg or "ossci" in msg  # where to get them


def test_idx_missing_directory_and_no_path(tmp_path):
    with pytest.raises(DatasetError, match="not an existing directory") as err:
        fashion_mnist(tmp_path / "nowhere")
    assert all(name in str(err.value) for name in IDX_FILES)
    assert "zalandoresearch" in str(err.value)
    with pytest.raises(DatasetError, match="path option"):
        mnist(None)
    with pytest.raises(DatasetError, match="path option"):
        load_images("cifar10")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_corrupt_magic_names_the_file(tmp_path, gz):
    _mnist_files(tmp_path)
    bad = bytearray(_idx_bytes(np.zeros((N_TRAIN,), np.uint8)))
    bad[0] = 0x1F  # not the two zero bytes
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    path = _write(tmp_path / "train-labels-idx1-ubyte", bytes(bad), gz)
    with pytest.raises(DatasetError, match="magic") as err:
        mnist(tmp_path)
    assert str(path) in str(err.value)


def test_idx_bad_dtype_truncation_and_broken_gzip_name_the_file(tmp_path):
    good = _idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    cases = {
        "dtype": (good[:2] + b"\x0d" + good[3:], "0x0d"),       # float32 code
        "short": (good[:-1], "truncated"),                       # one payload byte lost
        "long": (good + b"\x00", "truncated or corrupt"),       # trailing garbage
        "header": (good[:6], "header"),                          # cut inside the sizes
    }
    for name, (data, why) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DatasetError, match=why) as err:
            read_idx(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)
    gz_bytes = gzip.compress(good)
    (tmp_path / "cut.gz").write_bytes(gz_bytes[: len(gz_bytes) // 2])
    with pytest.raises(DatasetError) as err:
        read_idx(tmp_path / "cut.gz")
    assert "cut.gz" in str(err.value)


def test_idx_labels_must_match_images(tmp_path):
    _mnist_files(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(
        _idx_bytes(np.zeros(N_TEST + 1, np.uint8)))
    with pytest.raises(DatasetError, match="t10k-labels"):
        mnist(tmp_path)


# ----------------------------------------------------------------------------- CIFAR-10

def test_cifar_round_trip_from_parent_and_batch_directory(tmp_path):
    written = _cifar_files(tmp_path / "cifar-10-batches-py")
    for where in (tmp_path, tmp_path / "cifar-10-batches-py"):
        train, test = cifar10(where)
        assert train.images.shape == (10, 32, 32, 3) and test.images.shape == (3, 32, 32, 3)
        assert train.images.dtype == np.uint8 and train.images.flags.c_contiguous
        # batches concatenated in order 1..5
        np.testing.assert_array_equal(train.labels, np.repeat(np.arange(1, 6), 2))
        # channel-major rows: back to the flat layout and compare every byte
        flat = test.images.transpose(0, 3, 1, 2).reshape(3, 3072)
        np.testing.assert_array_equal(flat, written["test_batch"][b"data"])
        np.testing.assert_array_equal(
            train.images[4:6].transpose(0, 3, 1, 2).reshape(2, 3072),
            written["data_batch_3"][b"data"])


@pytest.mark.parametrize("channel,row,col", [(0, 0, 1), (1, 5, 30), (2, 31, 0)])
def test_cifar_channel_layout(tmp_path, channel, row, col):
    batches = _cifar_files(tmp_path)
    data = np.zeros((3, 3072), np.uint8)
    # R plane (1024 bytes, row-major 32x32), then G, then B: the CIFAR-10 description
    data[1, channel * 1024 + row * 32 + col] = 200
    batches["test_batch"][b"data"] = data
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batches["test_batch"], protocol=2))
    _, test = cifar10(tmp_path)
    assert test.images[1, row, col, channel] == 200
    assert int(test.images.sum()) == 200  # and nowhere else


def test_cifar_missing_files_are_all_named(tmp_path):
    _cifar_files(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    (tmp_path / "test_batch").unlink()
    with pytest.raises(DatasetError) as err:
        cifar10(tmp_path)
    msg = str(err.value)
    assert "data_batch_3" in msg and "test_batch" in msg and str(tmp_path) in msg
    assert "data_batch_1" not in msg and "cifar-10-python.tar.gz" in msg


def test_cifar_corrupt_batch_names_the_file(tmp_path):
    _cifar_files(tmp_path)
    raw = (tmp_path / "data_batch_2").read_bytes()
    (tmp_path / "data_batch_2").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="data_batch_2"):
        cifar10(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8),
                                                          b"labels": [0, 0]}))
    with pytest.raises(DatasetError, match=r"data_batch_2.*3072"):
        cifar10(tmp_path)


# ----------------------------------------------------------------------------- splits

def _rows(a: np.ndarray) -> list[bytes]:
    return sorted(r.tobytes() for r in a)


def test_digits_shape_levels_and_partition():
    full = digits()
    assert full.images.shape == (1797, 8, 8, 1) and full.images.dtype == np.uint8
    assert full.images.max() == 16 and set(np.unique(full.labels)) == set(range(10))
    data = load_images("digits", seed=0)
    assert isinstance(data, ImageData)
    assert (data.name, data.shape, data.levels, data.dim) == ("digits", (8, 8, 1), 17, 64)
    n_test = round(0.2 * 1797)
    n_val = round(0.1 * (1797 - n_test))
    assert (len(data.train), len(data.val), len(data.test)) == (1797 - n_test - n_val,
                                                                n_val, n_test)
    # together the splits are exactly the dataset (as a multiset: digits has duplicate
    # images, so a set comparison could hide a leak)
    together = np.concatenate([data.train, data.val, data.test])
    assert _rows(together) == _rows(full.images)


def test_digits_seeded_reproducibility_and_sizes():
    a, b = load_images("digits", seed=3), load_images("digits", seed=3)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, split), getattr(b, split))
    c = load_images("digits", seed=4)
    assert _rows(c.test) != _rows(a.test)
    small = load_images("digits", n_train=100, n_val=50, n_test=30, seed=3)
    assert (len(small.train), len(small.val), len(small.test)) == (100, 50, 30)
    assert set(_rows(small.test)) <= set(_rows(a.test))  # n_test subsamples the same test set
    bigger = load_images("digits", n_train=200, n_val=50, n_test=30, seed=3)
    assert set(_rows(small.train)) <= set(_rows(bigger.train))  # nested subsamples


def test_size_errors_name_the_available_count():
    with pytest.raises(DatasetError, match="only 1294"):
        load_images("digits", n_train=5000)
    with pytest.raises(DatasetError, match="only 359"):
        load_images("digits", n_test=360)
    with pytest.raises(DatasetError, match="n_val"):
        load_images("digits", n_val=True)
    with pytest.raises(DatasetError) as err:
        load_images("svhn")
    assert all(n in str(err.value) for n in ("digits", "mnist", "fashion-mnist", "cifar10"))


def test_file_dataset_official_split_and_validation(tmp_path):
    written = _mnist_files(tmp_path / "m", gz=IDX_FILES[:2])
    with pytest.raises(DatasetError, match=f"n_val=5000.*only {N_TRAIN}"):
        load_images("mnist", path=tmp_path / "m")  # default 5000 validation images
    data = load_images("mnist", path=tmp_path / "m", n_val=2, seed=1)
    assert (data.shape, data.levels, data.dim) == ((28, 28, 1), 256, 784)
    assert (len(data.train), len(data.val)) == (N_TRAIN - 2, 2)
    # the test split is the official one, untouched and in file order
    np.testing.assert_array_equal(data.test[..., 0], written["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(_rows(np.concatenate([data.train, data.val])[..., 0]),
                                  _rows(written["train-images-idx3-ubyte"]))
    again = load_images("mnist", path=tmp_path / "m", n_val=2, seed=1)
    np.testing.assert_array_equal(again.val, data.val)
    sub = load_images("mnist", path=tmp_path / "m", n_val=2, n_test=2, seed=1)
    assert len(sub.test) == 2 and set(_rows(sub.test)) <= set(_rows(data.test))
    with pytest.raises(DatasetError, match="only 3"):
        load_images("mnist", path=tmp_path / "m", n_val=2, n_train=4)


def test_cifar_through_load_images(tmp_path):
    _cifar_files(tmp_path, rows=2)
    data = load_images("cifar10", path=tmp_path, n_val=3, seed=0)
    assert (data.shape, data.levels, len(data.train), len(data.val), len(data.test)) == \
        ((32, 32, 3), 256, 7, 3, 3)


# ----------------------------------------------------------------------------- logit

def test_transform_known_values():
    # levels 2, alpha 0, midpoint: u = 1/4 and 3/4, y = -+log 3, dy/du = 1/(u(1-u)) = 16/3
    q = LogitDequantizer(2, alpha=0.0)
    y, lj = q.transform(np.array([[0, 1]], np.uint8))
    np.testing.assert_allclose(y, [[-np.log(3), np.log(3)]], rtol=1e-7)
    assert y.dtype == np.float32 and lj.dtype == np.float64
    np.testing.assert_allclose(lj, [2 * np.log(16 / 3)], rtol=1e-12)
    # at u = 1/2 every element has dy/du = (1 - 2 alpha) / (1/4)
    q = LogitDequantizer(256, alpha=0.05)
    u = np.full((2, 5), 0.5)
    np.testing.assert_allclose(q.log_jacobian(u), 5 * np.log(4 * 0.9), rtol=1e-12)
    np.testing.assert_allclose(q.forward(u), 0.0, atol=1e-15)


@pytest.mark.parametrize("alpha", [0.05, 1e-6])
def test_log_jacobian_matches_finite_differences(alpha):
    q = LogitDequantizer(256, alpha=alpha)
    u = np.random.default_rng(0).uniform(0.01, 0.99, (4, 7))
    h = 1e-6
    deriv = (q.forward(u + h) - q.forward(u - h)) / (2 * h)  # elementwise map: diagonal
    np.testing.assert_allclose(q.log_jacobian(u), np.log(np.abs(deriv)).sum(1), rtol=1e-7)


@pytest.mark.parametrize("alpha", [0.05, 1e-6, 0.0])
def test_round_trip_u_y_u(alpha):
    q = LogitDequantizer(17, alpha=alpha)
    u = np.random.default_rng(1).uniform(1e-4, 1 - 1e-4, (6, 9))
    np.testing.assert_allclose(q.inverse(q.forward(u)), u, rtol=0, atol=1e-12)
    ident = LogitDequantizer(17, logit=False)
    np.testing.assert_array_equal(ident.inverse(ident.forward(u)), u)
    assert np.all(ident.log_jacobian(u) == 0)


@pytest.mark.parametrize("levels,alpha,logit", [(256, 0.05, True), (17, 1e-6, True),
                                                (256, 0.05, False)])
def test_uniform_density_gives_log2_levels_bpd(levels, alpha, logit):
    # log p(y) = -log|dy/du| is exactly the density of y when u ~ U[0, 1]^D
    q = LogitDequantizer(levels, alpha=alpha, logit=logit, shape=(4, 4, 3))
    x = np.random.default_rng(2).integers(0, levels, (20, 4, 4, 3), dtype=np.uint8)
    y, lj = q.transform(x, np.random.default_rng(3))
    assert y.shape == (20, 48)
    out = _bpd(q, -lj, lj)
    assert out["bpd"] == pytest.approx(np.log2(levels), abs=1e-12)
    assert out["levels"] == levels
    # a density off by one nat per image moves the bpd by 1 / (D ln 2)
    shifted = _bpd(q, -lj - 1.0, lj)
    assert shifted["bpd"] - out["bpd"] == pytest.approx(1 / (48 * np.log(2)), rel=1e-9)


def _bpd(q, log_prob_y, log_jac):
    return metrics.bits_per_dim(log_prob_y, int(np.prod(q.shape)), levels=q.levels,
                                logit_alpha=q.alpha if q.logit else None,
                                log_jacobian=log_jac)


def test_bits_per_dim_needs_the_jacobian_with_logit():
    q = LogitDequantizer(256, shape=(2, 2, 1))
    with pytest.raises(ValueError, match="log_jacobian"):
        _bpd(q, np.zeros(3), None)


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_to_pixels_recovers_images(levels):
    q = LogitDequantizer(levels, alpha=0.05, shape=(3, 4, 2))
    x = np.random.default_rng(4).integers(0, levels, (50, 3, 4, 2), dtype=np.uint8)
    x[0].flat[:2] = (0, levels - 1)  # both ends of the range
    for noise in (None, np.random.default_rng(5), 6):
        back = q.to_pixels(q.transform(x, noise)[0])
        assert back.dtype == np.uint8 and back.shape == x.shape
        np.testing.assert_array_equal(back, x)
    # flow samples outside the data range are clipped to black / white, not wrapped
    far = np.array([[-1e3] * 12 + [1e3] * 12])
    assert q.to_pixels(far).min() == 0 and q.to_pixels(far).max() == levels - 1
    assert np.all(q.inverse(far) >= 0) and np.all(q.inverse(far) <= 1)


def test_flatten_order_is_c_order_over_h_w_c():
    q = LogitDequantizer(256, logit=False)
    x = np.zeros((1, 2, 3, 2), np.uint8)
    x[0, 1, 2, 0] = 255  # (h, w, c) = (1, 2, 0) -> flat index (1 * 3 + 2) * 2 + 0 = 10
    y, _ = q.transform(x)
    assert int(np.argmax(y[0])) == 10


def test_noise_is_uniform_in_the_bin_and_seeded():
    q = LogitDequantizer(17, shape=(8, 8, 1))
    x = np.random.default_rng(7).integers(0, 17, (400, 8, 8, 1), dtype=np.uint8)
    flat = x.reshape(400, -1)
    offset = q.dequantize(x, 8) * 17 - flat
    assert offset.min() >= 0 and offset.max() < 1
    assert abs(offset.mean() - 0.5) < 0.01  # 25600 uniform draws: sd of the mean 0.0018
    np.testing.assert_allclose(q.dequantize(x) * 17 - flat, 0.5, atol=1e-12)  # midpoint
    np.testing.assert_array_equal(q.transform(x, 9)[0], q.transform(x, 9)[0])
    rng = np.random.default_rng(9)
    assert not np.array_equal(q.transform(x, rng)[0], q.transform(x, rng)[0])  # fresh noise
    y, lj = q.transform(x, np.random.default_rng(10))
    np.testing.assert_allclose(lj, q.log_jacobian(q.dequantize(x, np.random.default_rng(10))))


def test_transform_rejects_what_is_not_pixels():
    q = LogitDequantizer(17)
    with pytest.raises(ValueError, match="integer"):
        q.transform(np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="0..16"):
        q.transform(np.full((2, 4), 17, np.uint8))
    with pytest.raises(TypeError, match="Generator"):
        q.transform(np.zeros((2, 4), np.uint8), noise=0.5)
    with pytest.raises(ValueError, match="levels"):
        LogitDequantizer(257)


def test_image_data_dequantizer_carries_levels_and_shape():
    data = load_images("digits", n_train=10, n_val=5, n_test=5)
    q = data.dequantizer(alpha=0.01)
    assert (q.levels, q.alpha, q.shape) == (17, 0.01, (8, 8, 1))
    y, lj = q.transform(data.test)
    np.testing.assert_array_equal(q.to_pixels(y), data.test)
