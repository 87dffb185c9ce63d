"""Image datasets for flows, and the dequantisation / logit transform they are modelled in.

    data = load_images("digits", seed=0)          # embedded, needs no files
    data = load_images("mnist", path="~/data/mnist", n_val=5000)
    data.train, data.val, data.test               # uint8 (n, H, W, C), channels last
    deq = data.dequantizer(alpha=0.05)
    y, log_jac = deq.transform(data.train, np.random.default_rng(0))   # float32 (n, D)
    benchmarks.metrics.bits_per_dim(flow_log_prob_of_y, data.dim, levels=data.levels,
                                    logit_alpha=0.05, log_jacobian=log_jac)

Only "digits" (scikit-learn's 8x8 digits) ships with the code. MNIST, Fashion-MNIST and
CIFAR-10 are read from local files in their official formats, parsed here with numpy, so
no framework or downloader is needed and nothing is fetched behind the user's back.

Images stay uint8 until `LogitDequantizer` turns them into the continuous vectors a flow
sees; the bits/dim of a flow trained on those vectors is only comparable with the
literature if the same dequantisation, logit and Jacobian bookkeeping is used, which is
why that code lives next to the loaders; the final number is
`benchmarks.metrics.bits_per_dim` (datasets never import benchmarks: the metric imports
this module's `logit_log_jacobian`).
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

# The package __init__ defines DatasetError before anything imports this submodule (and
# does not import it itself), so this cannot see a half-initialised package.
from . import DatasetError

IMAGE_NAMES = ("digits", "mnist", "fashion-mnist", "cifar10")

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)

_SOURCES = {
    "mnist": "https://yann.lecun.com/exdb/mnist/ (mirror: "
             "https://ossci-datasets.s3.amazonaws.com/mnist/)",
    "fashion-mnist": "https://github.com/zalandoresearch/fashion-mnist (folder data/fashion)",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (the 'CIFAR-10 "
               "python version'; extract it)",
}


class LabelledImages(NamedTuple):
    """uint8 images (N, H, W, C) with their int64 class labels (N,)."""
    images: np.ndarray
    labels: np.ndarray


# ----------------------------------------------------------------------------- digits

def digits() -> LabelledImages:
    """scikit-learn's 1797 8x8 digits: values 0..16 (17 levels), one channel.

    The embedded default: it ships with scikit-learn, so tests and quick runs need no
    downloads."""
    from sklearn.datasets import load_digits  # lazy: scikit-learn is slow to import

    bunch = load_digits()
    values = bunch.images
    # The images come as float64; a non-integer or out-of-range value would mean a
    # different scikit-learn file and a wrong `levels`, so fail rather than round.
    if not (np.array_equal(values, np.round(values)) and values.min() >= 0
            and values.max() <= 16):
        raise DatasetError("sklearn load_digits returned values outside the integers 0..16")
    images = values.astype(np.uint8)[..., None]
    return LabelledImages(images, bunch.target.astype(np.int64))


# ----------------------------------------------------------------------------- IDX (MNIST)

def _read_bytes(file: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in .gz; a broken gzip stream is a
    corrupt file, reported with its name."""
    try:
        if file.suffix == ".gz":
            with gzip.open(file, "rb") as f:
                return f.read()
        return file.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DatasetError(f"cannot read {file}: {exc}") from None


def read_idx(file: str | Path) -> np.ndarray:
    """A uint8 IDX file (the MNIST format) as an array of the shape its header states.

    Header: two zero bytes, the dtype code (0x08 = uint8, the only one MNIST uses), the
    number of dimensions, then one big-endian int32 size per dimension. The payload must
    hold exactly prod(sizes) bytes: a truncated download otherwise reshapes into garbage
    or fails far from the cause."""
    file = Path(file)
    raw = _read_bytes(file)
    if len(raw) < 4:
        raise DatasetError(f"{file}: truncated IDX file ({len(raw)} bytes, no header)")
    if raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{file}: not an IDX file (magic number {raw[:4].hex()} does not "
                           "start with two zero bytes)")
    if raw[2] != 0x08:
        raise DatasetError(f"{file}: IDX dtype code 0x{raw[2]:02x} is not 0x08 (uint8)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DatasetError(f"{file}: truncated or invalid IDX header ({ndim} dims, "
                           f"{len(raw)} bytes)")
    sizes = tuple(int(s) for s in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(sizes, dtype=np.int64))
    if min(sizes) < 0 or len(raw) - header != expected:
        raise DatasetError(f"{file}: header says sizes {sizes} ({expected} bytes of data) "
                           f"but the file holds {len(raw) - header}: truncated or corrupt")
    # Copy: frombuffer over bytes is read-only, and callers may normalise in place.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(sizes).copy()


def _directory(name: str, path) -> Path:
    """The directory option, required for the file datasets (they are not embedded)."""
    if path is None:
        raise DatasetError(f"dataset {name!r} is read from local files: pass the path option "
                           f"(the directory holding them); get them from {_SOURCES[name]}")
    return Path(path).expanduser()


def _missing_error(name: str, directory: Path, missing: list[str]) -> DatasetError:
    where = directory if directory.is_dir() else f"{directory} (not an existing directory)"
    return DatasetError(f"{name}: missing in {where}: {', '.join(missing)}; "
                        f"get them from {_SOURCES[name]}")


def _find_idx(name: str, directory: Path) -> dict[str, Path]:
    """Each expected IDX file, plain or gzipped (the plain one wins if both exist, since
    it is what a user who unpacked the archives meant)."""
    found, missing = {}, []
    for base in IDX_FILES:
        for candidate in (directory / base, directory / f"{base}.gz"):
            if candidate.is_file():
                found[base] = candidate
                break
        else:
            missing.append(f"{base}[.gz]")
    if missing:
        raise _missing_error(name, directory, missing)
    return found


def _idx_split(files: dict[str, Path], prefix: str) -> LabelledImages:
    images_file, labels_file = files[f"{prefix}-images-idx3-ubyte"], \
        files[f"{prefix}-labels-idx1-ubyte"]
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetError(f"{images_file}: expected images of shape (N, 28, 28), "
                           f"got {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DatasetError(f"{labels_file}: {labels.shape} labels for {images.shape[0]} "
                           f"images in {images_file.name}")
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{labels_file}: label {int(labels.max())} outside 0..9")
    return LabelledImages(images[..., None], labels.astype(np.int64))


def _idx_dataset(name: str, path) -> tuple[LabelledImages, LabelledImages]:
    files = _find_idx(name, _directory(name, path))
    return _idx_split(files, "train"), _idx_split(files, "t10k")


def mnist(path) -> tuple[LabelledImages, LabelledImages]:
    """(train, test) of MNIST from the four IDX files in `path`, gzipped or not:
    28x28x1 uint8, 256 levels, the official 60000/10000 split."""
    return _idx_dataset("mnist", path)


def fashion_mnist(path) -> tuple[LabelledImages, LabelledImages]:
    """(train, test) of Fashion-MNIST: same file names and format as MNIST."""
    return _idx_dataset("fashion-mnist", path)


# ----------------------------------------------------------------------------- CIFAR-10

def _cifar_directory(path) -> Path:
    """Either the extracted `cifar-10-batches-py` or the folder it was extracted into."""
    directory = _directory("cifar10", path)
    inner = directory / CIFAR_DIR
    return inner if inner.is_dir() else directory


def _cifar_batch(file: Path) -> LabelledImages:
    """One pickled batch: rows of 3072 bytes, channel-major (1024 R, then G, then B, each
    32x32 row-major), turned channels-last.

    Pickle is the official format; like any pickle it can run code, so only load files
    from the official archive."""
    try:
        with open(file, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError,
            AttributeError, ImportError, IndexError) as exc:
        raise DatasetError(f"cannot read CIFAR-10 batch {file}: {exc!r}") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{file}: expected a pickled dict, got {type(batch).__name__}")
    # Keys are bytes in the official (Python 2) pickles, str if someone re-pickled them.
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DatasetError(f"{file}: no data/labels keys (has {sorted(map(str, batch))})")
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{file}: data must be uint8 of shape (N, 3072), got "
                           f"{data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{file}: {labels.shape} labels for {data.shape[0]} images")
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return LabelledImages(images, labels)


def cifar10(path) -> tuple[LabelledImages, LabelledImages]:
    """(train, test) of CIFAR-10 from the python-version pickles: 32x32x3 uint8, 256
    levels, the official 50000/10000 split (data_batch_1..5 concatenated in order)."""
    directory = _cifar_directory(path)
    missing = [f for f in CIFAR_FILES if not (directory / f).is_file()]
    if missing:
        raise _missing_error("cifar10", directory, missing)
    batches = [_cifar_batch(directory / f) for f in CIFAR_FILES[:-1]]
    train = LabelledImages(np.concatenate([b.images for b in batches]),
                           np.concatenate([b.labels for b in batches]))
    return train, _cifar_batch(directory / "test_batch")


# ----------------------------------------------------------------------------- splits

@dataclass
class ImageData:
    """Train / validation / test images of one dataset, uint8 (n, H, W, C).

    `levels` is the number of pixel values (17 for digits, 256 otherwise): the
    dequantisation and the bits/dim depend on it."""
    name: str
    shape: tuple[int, int, int]
    levels: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def dim(self) -> int:
        h, w, c = self.shape
        return h * w * c

    def dequantizer(self, alpha: float = 0.05, logit: bool = True) -> LogitDequantizer:
        """The transform to the flow's continuous space, with this dataset's levels and
        shape filled in."""
        return LogitDequantizer(self.levels, alpha=alpha, logit=logit, shape=self.shape)


_LEVELS = {"digits": 17, "mnist": 256, "fashion-mnist": 256, "cifar10": 256}
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_VAL_FRACTION = 0.1
_FILE_VAL = 5000


def _size(name: str, value, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DatasetError(f"{name} must be None or an int >= {minimum}, got {value!r}")
    return int(value)


def _take(name: str, n: int | None, available: int, dataset: str) -> int:
    if n is None:
        return available
    if n > available:
        raise DatasetError(f"{dataset}: {name}={n} but only {available} images are available "
                           f"for that split")
    return n


def _digits_pools(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits has no official split: a seeded permutation, the last 20% held out as the
    test pool. A separate stream from the train/val split, so the test images do not
    change when n_val does."""
    images = digits().images
    perm = np.random.default_rng([seed, 1]).permutation(images.shape[0])
    n_test = int(round(_DIGITS_TEST_FRACTION * images.shape[0]))
    cut = images.shape[0] - n_test
    return images[np.sort(perm[:cut])], images[np.sort(perm[cut:])]


def _pools(name: str, path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train pool, test pool) images: the official split for the file datasets."""
    if name == "digits":
        return _digits_pools(seed)
    loader = {"mnist": mnist, "fashion-mnist": fashion_mnist, "cifar10": cifar10}[name]
    train, test = loader(path)
    return train.images, test.images


def load_images(name: str, path=None, n_train: int | None = None, n_val: int | None = None,
                n_test: int | None = None, seed: int = 0) -> ImageData:
    """Images split into train / val / test.

    The validation set is the last `n_val` images of a seeded permutation of the training
    pool (default: 10% of it for digits, 5000 for the file datasets); the train set is the
    rest, and `n_train` takes a seeded subset of it (nested: a smaller n_train is a subset
    of a larger one at the same seed). The test set is the official test split, or for
    digits the last 20% of a seeded permutation; `n_test` takes a seeded subset. All
    index sets are sorted, so images keep their file order within a split.
    """
    if not isinstance(name, str) or name not in _LEVELS:
        raise DatasetError(f"unknown image dataset {name!r}; known: {', '.join(IMAGE_NAMES)}")
    n_train, n_val = _size("n_train", n_train, 1), _size("n_val", n_val, 0)
    n_test, seed = _size("n_test", n_test, 1), _size("seed", seed, 0)
    pool, test_pool = _pools(name, path, seed)
    if n_val is None:
        n_val = (int(round(_DIGITS_VAL_FRACTION * pool.shape[0])) if name == "digits"
                 else _FILE_VAL)
    if n_val >= pool.shape[0]:
        raise DatasetError(f"{name}: n_val={n_val} leaves no training images: only "
                           f"{pool.shape[0]} are available in the training split")
    rng = np.random.default_rng([seed, 2])
    perm = rng.permutation(pool.shape[0])
    n_fit = pool.shape[0] - n_val
    n_train = _take("n_train", n_train, n_fit, name)
    test_perm = rng.permutation(test_pool.shape[0])
    n_test = _take("n_test", n_test, test_pool.shape[0], name)
    return ImageData(
        name=name, shape=tuple(int(s) for s in pool.shape[1:]), levels=_LEVELS[name],
        train=pool[np.sort(perm[:n_train])], val=pool[np.sort(perm[n_fit:])],
        test=test_pool[np.sort(test_perm[:n_test])])


# ----------------------------------------------------------------------------- logit

def _sigmoid(y: np.ndarray) -> np.ndarray:
    # exp(-log(1 + exp(-y))) neither overflows nor loses the tiny values near alpha ~ 1e-6
    return np.exp(-np.logaddexp(0.0, -y))


def logit_log_jacobian(u, alpha: float) -> np.ndarray:
    """Per-row log|det dy/du| of RealNVP's y = logit(alpha + (1 - 2 alpha) u), u in [0, 1].

    The value to pass as `log_jacobian` to `bits_per_dim` when the flow models y."""
    u = np.asarray(u, np.float64)
    if u.ndim != 2 or u.shape[0] < 1:
        raise ValueError(f"u must have shape (n, D) with n >= 1, got {u.shape}")
    alpha = float(alpha)
    if not 0.0 <= alpha < 0.5:
        raise ValueError(f"logit alpha must be in [0, 0.5), got {alpha}")
    if u.min() < 0.0 or u.max() > 1.0:
        raise ValueError(f"u must lie in [0, 1] (dequantised data scaled by 1/levels), "
                         f"got range [{u.min()}, {u.max()}]")
    s = alpha + (1.0 - 2.0 * alpha) * u
    if alpha == 0.0 and (s.min() == 0.0 or s.max() == 1.0):
        raise ValueError("u touches 0 or 1 with alpha=0: logit is infinite there")
    # dy/du = (1 - 2 alpha) / (s (1 - s)), elementwise; the map is diagonal.
    return np.sum(np.log1p(-2.0 * alpha) - np.log(s) - np.log1p(-s), axis=1)


class LogitDequantizer:
    """Uniform dequantisation and RealNVP's logit transform, in numpy float64.

        u = (x + U) / levels,  U ~ Uniform[0, 1)^D        (u in [0, 1]^D)
        y = logit(alpha + (1 - 2 alpha) u)                (with logit=True; else y = u)

    The flow models y; `transform` returns y (float32, what the flow consumes) and the
    per-row log|det dy/du| that `bits_per_dim` needs to turn log p(y) back into log p(u).

    alpha keeps y finite at u = 0 and 1. Default 0.05, the value RealNVP (Dinh et al. 2017)
    used; the MAF paper (Papamakarios et al. 2017), which uses this same symmetric form,
    took 1e-6 for MNIST and 0.05 for CIFAR-10. Results are only comparable at the same
    alpha, so it is a parameter and is passed to the metric.

    `shape` (H, W, C) is needed only to turn vectors back into images (`to_pixels`) and to
    know D in `bits_per_dim`; `ImageData.dequantizer()` fills it in.
    """

    def __init__(self, levels: int, alpha: float = 0.05, logit: bool = True,
                 shape: tuple[int, int, int] | None = None):
        if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) \
                or not 2 <= levels <= 256:
            raise ValueError(f"levels must be an int in [2, 256] (uint8 pixels), got {levels!r}")
        alpha = float(alpha)
        if logit and not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.levels, self.alpha, self.logit = int(levels), alpha, bool(logit)
        self.shape = None if shape is None else tuple(int(s) for s in shape)

    def __repr__(self) -> str:
        return (f"LogitDequantizer(levels={self.levels}, alpha={self.alpha}, "
                f"logit={self.logit}, shape={self.shape})")

    # -- the elementwise maps, exposed for tests and for flows that want u directly

    def dequantize(self, x, noise=None) -> np.ndarray:
        """u = (x + U) / levels as float64 (n, D). `noise`: a numpy Generator (fresh noise
        each call, the training setting), an int seed, or None for the midpoint U = 0.5,
        so evaluation on a fixed test set is reproducible without carrying a seed."""
        x = self._pixels(x)
        if noise is None:
            offset = 0.5
        elif isinstance(noise, np.random.Generator):
            offset = noise.random(x.shape)
        elif isinstance(noise, (int, np.integer)) and not isinstance(noise, bool):
            offset = np.random.default_rng(int(noise)).random(x.shape)
        else:
            raise TypeError(f"noise must be a numpy Generator, an int seed or None, "
                            f"got {type(noise).__name__}")
        return (x + offset) / self.levels

    def forward(self, u) -> np.ndarray:
        """y = logit(alpha + (1 - 2 alpha) u), float64, elementwise (identity without logit)."""
        u = np.asarray(u, dtype=np.float64)
        if not self.logit:
            return u.copy()
        s = self.alpha + (1.0 - 2.0 * self.alpha) * u
        return np.log(s) - np.log1p(-s)

    def log_jacobian(self, u) -> np.ndarray:
        """Per-row log|det dy/du| for u of shape (n, D): the metric's own formula, so the
        bits/dim cannot disagree with the transform's bookkeeping."""
        u = np.asarray(u, dtype=np.float64)
        if not self.logit:
            return np.zeros(u.shape[0])
        return logit_log_jacobian(u, self.alpha)

    def inverse(self, y) -> np.ndarray:
        """u from y, float64, clipped to [0, 1]: flow samples can land where
        sigmoid(y) < alpha, i.e. below u = 0, and those are black pixels, not errors."""
        y = np.asarray(y, dtype=np.float64)
        u = (_sigmoid(y) - self.alpha) / (1.0 - 2.0 * self.alpha) if self.logit else y
        return np.clip(u, 0.0, 1.0)

    # -- what a training loop and a sample grid use

    def transform(self, x, noise=None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (n, H, W, C) (or (n, D)) -> (y float32 (n, D), log|det dy/du| float64
        (n,)). Images are flattened in C order over (H, W, C). See `dequantize` for
        `noise`."""
        u = self.dequantize(x, noise)
        return self.forward(u).astype(np.float32), self.log_jacobian(u)

    def to_pixels(self, y, shape: tuple[int, int, int] | None = None) -> np.ndarray:
        """uint8 images (n, H, W, C) from flow vectors y (n, D): floor(u * levels), clipped.

        Exact for the midpoint noise. With random noise, rounding y to float32 can move u
        across a bin edge when U was very near 0 or 1: a pixel off by one, about one pixel
        in a million (measured), irrelevant for drawing samples."""
        shape = self._shape(shape)
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != int(np.prod(shape)):
            raise ValueError(f"y must have shape (n, {int(np.prod(shape))}) for images of "
                             f"shape {shape}, got {y.shape}")
        if np.isnan(y).any():
            raise ValueError(f"y contains NaN ({int(np.isnan(y).sum())} entries): no pixel "
                             "value to draw")
        pixels = np.clip(np.floor(self.inverse(y) * self.levels), 0, self.levels - 1)
        return pixels.astype(np.uint8).reshape((y.shape[0],) + shape)

    # -- checks

    def _shape(self, shape) -> tuple[int, ...]:
        shape = self.shape if shape is None else tuple(int(s) for s in shape)
        if shape is None:
            raise ValueError("image shape unknown: pass shape=(H, W, C) here or to the "
                             "constructor (ImageData.dequantizer() does)")
        return shape

    def _pixels(self, x) -> np.ndarray:
        """(n, D) float64 from integer pixels, rejecting values the levels cannot hold:
        a float image in [0, 1] passed by mistake would otherwise give nonsense silently."""
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"x must hold integer pixel values (uint8), got dtype {x.dtype}")
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"x must have a leading row axis and at least one row, "
                             f"got shape {x.shape}")
        if x.size and (x.min() < 0 or x.max() >= self.levels):
            raise ValueError(f"pixel values must lie in 0..{self.levels - 1}, got range "
                             f"[{x.min()}, {x.max()}]")
        return x.reshape(x.shape[0], -1).astype(np.float64)
