"""ro.data: registry, the shipped mnist-mini, IDX/CIFAR parsing, verification, errors, downloads.

No test touches the internet. Downloads are exercised against a local HTTP server
on 127.0.0.1 serving tiny files whose checksums are patched into the registry.
Tests on the full datasets run only when $ROBUSTOPT_DATA points at them.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import os
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pooch
import pytest
import torch

from robustopt import data
from robustopt._registry import Registry

MNIST_NAMES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh verification cache for every test."""
    monkeypatch.setattr(data.download, "_VERIFIED", set())


def use(monkeypatch: pytest.MonkeyPatch, ds: data.DatasetInfo) -> None:
    """Stand ``ds`` in for the registered dataset of its name, for one test."""
    patched: Registry[data.DatasetInfo] = Registry("dataset")
    for name, entry in data.registry.DATASETS.items():
        patched.register(name, ds if name == ds.name else entry)
    monkeypatch.setattr(data.registry, "DATASETS", patched)


def _full_root() -> Path | None:
    env = os.environ.get("ROBUSTOPT_DATA", "")
    return Path(env) if env else None


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("the network must not be used here")


# --- helpers: tiny files in the official formats -------------------------------------------


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding: 0, 0, type code, ndim, big-endian uint32 dims, big-endian data."""
    codes = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
    big = arr.astype(arr.dtype.newbyteorder(">")) if arr.dtype.itemsize > 1 else arr
    header = bytes([0, 0, codes[big.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + big.tobytes()


def write_idx(path: Path, arr: np.ndarray, compress: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = idx_bytes(arr)
    path.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_mnist(src: Path, bases: tuple[str, ...] = (), n_train: int = 6, n_test: int = 4):
    """Write a tiny MNIST (random pixels) in src; return (patched DatasetInfo, arrays by split)."""
    rng = np.random.default_rng(0)
    arrays, files = {}, []
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        arrays[split] = (x, y)
        for name, arr, kind in zip(MNIST_NAMES[split], (x, y), ("images", "labels")):
            p = write_idx(src / name, arr)
            files.append(data.FileInfo(name, split, kind, p.stat().st_size, sha256(p), None,
                                       tuple(b + name for b in bases)))
    info = dataclasses.replace(data.info("mnist"), files=tuple(files), train_size=n_train, test_size=n_test)
    return info, arrays


def cifar_bytes(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, size=n, dtype=np.uint8)
    records = np.concatenate([y[:, None], x.reshape(n, -1)], axis=1)
    return records.tobytes(), x, y


def tiny_cifar(src: Path, url: str, n: int = 3, bad_member: str | None = None):
    """A tiny cifar-10-binary.tar.gz in src (6 batches of n records); return (patched info, arrays)."""
    members, files, arrays = {}, [], {}
    for i, f in enumerate(data.info("cifar10").files):
        blob, x, y = cifar_bytes(n, seed=i)
        arrays[f.path] = (x, y)
        files.append(dataclasses.replace(f, size=len(blob), sha256=hashlib.sha256(blob).hexdigest(), md5=None))
        members[f.path] = b"garbage" if f.path.endswith(bad_member or "\0") else blob
    archive = src / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, blob in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(blob)
            tar.addfile(ti, io.BytesIO(blob))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    arch = dataclasses.replace(data.info("cifar10").archive, md5=md5, urls=(url,))
    info = dataclasses.replace(data.info("cifar10"), files=tuple(files), archive=arch, train_size=5 * n, test_size=n)
    return info, arrays


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A local HTTP server for tmp_path/www; yields its base URL."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", www
    httpd.shutdown()
    httpd.server_close()


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# --- registry and arguments ------------------------------------------------------------


def test_registry_names_and_constants() -> None:
    assert data.names() == ["mnist-mini", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"]
    mnist, cifar, fashion = data.info("mnist"), data.info("cifar10"), data.info("fashion-mnist")
    assert (mnist.mean, mnist.std, mnist.shape, mnist.num_classes) == ((0.1307,), (0.3081,), (1, 28, 28), 10)
    assert (fashion.mean, fashion.std) == ((0.2860,), (0.3530,))
    assert cifar.mean == (0.4914, 0.4822, 0.4465) and cifar.std == (0.2470, 0.2435, 0.2616)
    assert cifar.shape == (3, 32, 32) and len(cifar.classes) == 10
    assert data.info("mnist-mini").mean == mnist.mean and data.info("mnist-mini").shipped
    assert [f.path for f in cifar.split_files("test")] == ["cifar-10-batches-bin/test_batch.bin"]
    assert len(cifar.split_files("train")) == 5
    assert {f.path for f in fashion.files} == {n for names in MNIST_NAMES.values() for n in names}
    assert all(len(f.sha256) == 64 and f.urls for f in (*mnist.files, *fashion.files))
    with pytest.raises(dataclasses.FrozenInstanceError):
        mnist.mean = (0.5,)  # type: ignore[misc]


def test_name_aliases() -> None:
    assert data.info("CIFAR-10").name == "cifar10"
    assert data.info("fashion_mnist").name == "fashion-mnist"
    assert data.info(" MNIST ").name == "mnist"


def test_unknown_name_lists_names_and_suggests() -> None:
    with pytest.raises(ValueError, match=r"Did you mean 'mnist'\?.*mnist-mini, mnist, fashion-mnist, cifar10"):
        data.load("mnits")
    with pytest.raises(ValueError, match="Known datasets"):
        data.info("imagenet")
    with pytest.raises(TypeError, match="string"):
        data.info(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("split", ["val", "Train", "", None])
def test_unknown_split_lists_splits(split: object) -> None:
    with pytest.raises(ValueError, match="'train', 'test'"):
        data.load("mnist-mini", split=split)  # type: ignore[arg-type]


def test_root_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    assert data.default_root() == Path(pooch.os_cache("robustopt")).absolute()
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env"))
    assert data.default_root() == tmp_path / "env"
    assert data.default_root(tmp_path / "arg") == tmp_path / "arg"  # the argument wins
    assert data.default_root(str(tmp_path)) == tmp_path
    with pytest.raises(TypeError, match="root must be a path"):
        data.default_root(3)  # type: ignore[arg-type]


def test_status(tmp_path: Path) -> None:
    assert data.status("mnist-mini", tmp_path) == "shipped"
    assert data.status("mnist", tmp_path) == "missing"
    for names in MNIST_NAMES.values():
        for name in names[:1]:
            (tmp_path / "mnist").mkdir(exist_ok=True)
            (tmp_path / "mnist" / name).write_bytes(b"")
    assert data.status("mnist", tmp_path) == "missing"  # labels still missing
    for names in MNIST_NAMES.values():
        for name in names:
            (tmp_path / "mnist" / name).write_bytes(b"")
    assert data.status("mnist", tmp_path) == "damaged"  # there, but not the official files


def test_status_checks_sizes_and_checksums(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info, _ = tiny_mnist(tmp_path / "mnist")
    use(monkeypatch, info)
    assert data.status("mnist", tmp_path) == "present"  # the official sizes and checksums
    images = tmp_path / "mnist" / MNIST_NAMES["test"][0]
    official = images.read_bytes()
    images.write_bytes(bytes(len(official)))  # the right size, other bytes
    assert data.status("mnist", tmp_path) == "damaged"
    monkeypatch.setattr(data.download, "HASH_LIMIT", 0)  # too large to hash in a listing: the sizes are checked
    assert data.status("mnist", tmp_path) == "present (not verified)"
    images.write_bytes(official[:-1])
    assert data.status("mnist", tmp_path) == "damaged"


# --- mnist-mini (shipped) -------------------------------------------------------------


@pytest.mark.parametrize("split, n", [("train", 5000), ("test", 1000)])
def test_mini_shapes_dtype_range_labels(split: str, n: int) -> None:
    x, y = data.load("mnist-mini", split)
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.shape == (n,) and y.dtype == torch.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert torch.equal(x * 255, (x * 255).round())  # exactly k/255: the uint8 pixels unchanged
    assert 0.10 < x.mean().item() < 0.16  # MNIST: mostly background
    counts = torch.bincount(y, minlength=10)
    assert counts.sum() == n and len(counts) == 10
    assert (counts > 0.06 * n).all() and (counts < 0.14 * n).all()  # every digit, roughly balanced


def test_mini_is_the_first_official_examples() -> None:
    _, y_train = data.load("mnist-mini", "train")
    _, y_test = data.load("mnist-mini", "test")
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(y_test).tolist() == [85, 126, 116, 107, 110, 87, 87, 99, 89, 94]


def test_mini_deterministic_and_independent_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pooch, "retrieve", _no_network)
    x1, y1 = data.load("mnist-mini", "test")
    x1.zero_()  # must not leak into the next call
    x2, y2 = data.load("mnist-mini", "test", root=tmp_path, download=False)  # root is ignored
    x3, y3 = data.load("mnist-mini", "test")
    assert torch.equal(x2, x3) and torch.equal(y1, y2) and torch.equal(y2, y3) and x2.max() == 1.0
    assert data.fetch("mnist-mini").joinpath("mnist-mini.npz").is_file()


# --- parsers --------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize(
    "arr",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([5, 0, 4, 1, 9], dtype=np.uint8),
        np.array([[-7, 2**30], [3, 0]], dtype=np.int32),
        np.array([1.5, -2.25], dtype=np.float32),
    ],
)
def test_read_idx_round_trip(tmp_path: Path, arr: np.ndarray, compress: bool) -> None:
    out = data.read_idx(write_idx(tmp_path / "a.idx.gz", arr, compress))
    assert out.shape == arr.shape and out.dtype == arr.dtype.newbyteorder("=")
    np.testing.assert_array_equal(out, arr)
    out[...] = 0  # writable


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "bad magic"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated header"),
        (b"GARBAGE-GARBAGE-GARBAGE", "bad magic"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05" + bytes(4), "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02" + bytes(3), "trailing bytes"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01" + bytes(1), "bad magic"),  # unknown type code
        (gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02" + bytes(2))[:-12], "not a valid IDX"),  # cut gzip
        (b"\x1f\x8b" + b"not really gzip", "not a valid IDX"),
    ],
)
def test_read_idx_rejects_broken_files(tmp_path: Path, blob: bytes, message: str) -> None:
    path = tmp_path / "broken-idx1-ubyte.gz"
    path.write_bytes(blob)
    with pytest.raises(ValueError, match=message) as err:
        data.read_idx(path)
    assert str(path) in str(err.value) and "Delete it" in str(err.value)


def test_read_cifar_batch_layout(tmp_path: Path) -> None:
    blob, x, y = cifar_bytes(4, seed=1)
    path = tmp_path / "test_batch.bin"
    path.write_bytes(blob)
    images, labels = data.read_cifar_batch(path)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
    # record layout: label byte, then the R plane (1024 bytes, row-major), then G, then B
    raw = np.frombuffer(blob, np.uint8)
    assert images[0, 0, 0, 1] == raw[2] and images[0, 1, 0, 0] == raw[1 + 1024] and images[-1, 2, 31, 31] == raw[-1]
    path.write_bytes(blob[:-1])
    with pytest.raises(ValueError, match="3073"):
        data.read_cifar_batch(path)
    path.write_bytes(bytes([10]) + bytes(3072))
    with pytest.raises(ValueError, match="label 10"):
        data.read_cifar_batch(path)


# --- missing and corrupt files ------------------------------------------------------------


def test_missing_files_download_false_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pooch, "retrieve", _no_network)
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load("mnist", "test", root=tmp_path, download=False)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for name in MNIST_NAMES["test"]:
        assert str(tmp_path / "mnist" / name) in msg
    assert "train-images" not in msg  # only the files of the requested split
    assert "ROBUSTOPT_DATA" in msg and "download=False" in msg
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz" in msg
    assert not (tmp_path / "mnist").exists()  # nothing created


def test_missing_cifar_says_which_archive_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pooch, "retrieve", _no_network)
    with pytest.raises(FileNotFoundError) as err:
        data.load("cifar10", "test", root=tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "cifar10" / "cifar-10-batches-bin" / "test_batch.bin") in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in msg and "ROBUSTOPT_DATA" in msg


def test_env_var_root_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "fashion-mnist")):
        data.load("fashion-mnist", download=False)


def test_corrupt_file_says_delete_and_refetch(tmp_path: Path) -> None:
    for name in MNIST_NAMES["test"]:
        (tmp_path / "mnist").mkdir(exist_ok=True)
        (tmp_path / "mnist" / name).write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(data.DatasetCorruptError) as err:
        data.load("mnist", "test", root=tmp_path, download=False)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert str(tmp_path / "mnist") in msg and "Delete it" in msg and "robustopt data fetch mnist" in msg
    assert "bytes" in msg  # size check first: a truncated or wrong file is named as such


def test_valid_idx_with_unknown_hash_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A well-formed file that is not the official one: verification is against known checksums only.
    info, _ = tiny_mnist(tmp_path / "mnist")
    official = {f.path: f.sha256 for f in data.info("mnist").files}
    files = tuple(dataclasses.replace(f, sha256=official[f.path]) for f in info.files)  # right size, wrong bytes
    use(monkeypatch, dataclasses.replace(info, files=files))
    with pytest.raises(data.DatasetCorruptError, match="its sha256 is [0-9a-f]{64}, the official file's is 8d422c7b"):
        data.load("mnist", "test", root=tmp_path, download=False)


def test_load_tiny_dataset_and_verify_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info, arrays = tiny_mnist(tmp_path / "mnist")
    use(monkeypatch, info)
    calls = []
    real = data.download._sha256
    monkeypatch.setattr(data.download, "_sha256", lambda p: calls.append(p) or real(p))
    for split in ("train", "test"):
        x, y = data.load("mnist", split, root=tmp_path, download=False)
        xs, ys = arrays[split]
        assert x.shape == (len(xs), 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x, torch.from_numpy(xs).float().div(255).unsqueeze(1))
        assert y.tolist() == ys.tolist()
    assert len(calls) == 4
    data.load("mnist", "test", root=tmp_path, download=False)
    assert len(calls) == 4  # verified once per process
    # Replacing a file (new size/mtime) triggers a new check, which fails.
    write_idx(tmp_path / "mnist" / MNIST_NAMES["test"][1], np.zeros(5, np.uint8))
    with pytest.raises(data.DatasetCorruptError, match="Delete it"):
        data.load("mnist", "test", root=tmp_path, download=False)


def test_wrong_count_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info, _ = tiny_mnist(tmp_path / "mnist")
    use(monkeypatch, dataclasses.replace(info, test_size=5))
    with pytest.raises(data.DatasetCorruptError, match=r"expected \(5,\)"):
        data.load("mnist", "test", root=tmp_path, download=False)


# --- Fashion-MNIST from Debian's folder -----------------------------------------------------


def test_debian_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    info, arrays = tiny_mnist(debian)
    info = dataclasses.replace(info, name="fashion-mnist", folder="fashion-mnist", fallback_dirs=(str(debian),))
    use(monkeypatch, info)
    monkeypatch.setattr(pooch, "retrieve", _no_network)
    root = tmp_path / "root"
    assert data.status("fashion-mnist", root) == "present"
    x, y = data.load("fashion-mnist", "test", root=root, download=False)
    assert y.tolist() == arrays["test"][1].tolist()
    assert data.fetch("fashion-mnist", root) == debian
    assert not root.exists()  # nothing copied
    # Files under the root take precedence.
    (root / "fashion-mnist").mkdir(parents=True)
    for names in MNIST_NAMES.values():
        for name in names:
            (root / "fashion-mnist" / name).write_bytes((debian / name).read_bytes())
    assert data.fetch("fashion-mnist", root) == root / "fashion-mnist"


def test_debian_folder_with_other_names_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debian = tmp_path / "debian"
    debian.mkdir()
    (debian / "train-images.idx3-ubyte").write_bytes(b"")
    info = dataclasses.replace(data.info("fashion-mnist"), fallback_dirs=(str(debian),))
    use(monkeypatch, info)
    assert data.status("fashion-mnist", tmp_path) == "missing"
    with pytest.raises(FileNotFoundError, match="Also looked in"):
        data.load("fashion-mnist", root=tmp_path, download=False)


def test_debian_repack_hashes_are_accepted() -> None:
    # Debian's copies differ from the official files only in the gzip header (24 or 23 bytes of file name).
    for f in data.info("fashion-mnist").files:
        (size, _), = f.also_accept
        assert f.size - size == len(Path(f.path).stem) + 1


# --- downloads against a local server -------------------------------------------------------


def test_download_uses_mirror_and_verifies(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    url, www = server
    info, arrays = tiny_mnist(www / "good", bases=(url + "missing/", url + "good/"))  # first mirror: 404
    use(monkeypatch, info)
    root = tmp_path / "root"
    x, y = data.load("mnist", "test", root=root)
    assert y.tolist() == arrays["test"][1].tolist()
    assert tree(root) == ["mnist", *(f"mnist/{n}" for n in sorted(MNIST_NAMES["test"]))]  # no temp files
    assert data.status("mnist", root) == "missing"  # train split not fetched yet
    assert data.fetch("mnist", root) == root / "mnist"
    assert data.status("mnist", root) == "present"


def test_failed_download_leaves_nothing(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    url, www = server
    info, _ = tiny_mnist(www / "good", bases=(url + "missing/", url + "bad/"))
    for names in MNIST_NAMES.values():  # the "bad" mirror serves truncated files
        for name in names:
            (www / "bad").mkdir(exist_ok=True)
            (www / "bad" / name).write_bytes((www / "good" / name).read_bytes()[:-5])
    use(monkeypatch, info)
    root = tmp_path / "root"
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load("mnist", "train", root=root)
    msg = str(err.value)
    assert isinstance(err.value, OSError)
    assert "Download failed" in msg and "404" in msg and "hash" in msg.lower()
    assert str(root / "mnist" / "train-images-idx3-ubyte.gz") in msg and "ROBUSTOPT_DATA" in msg
    assert not root.exists()  # no partial or temporary file, not even the folders made for it


def test_cifar_archive_download_and_unpack(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    url, www = server
    info, arrays = tiny_cifar(www, url + "cifar-10-binary.tar.gz")
    use(monkeypatch, info)
    root = tmp_path / "root"
    x, y = data.load("cifar10", "test", root=root)
    xs, ys = arrays["cifar-10-batches-bin/test_batch.bin"]
    assert x.shape == (3, 3, 32, 32) and torch.equal(x, torch.from_numpy(xs).float() / 255)
    assert y.tolist() == ys.tolist()
    assert tree(root) == ["cifar10", "cifar10/cifar-10-batches-bin", "cifar10/cifar-10-batches-bin/test_batch.bin"]
    x, y = data.load("cifar10", "train", root=root)
    expected = np.concatenate([arrays[f.path][1] for f in info.split_files("train")])
    assert x.shape == (15, 3, 32, 32) and y.tolist() == expected.tolist()
    assert len(tree(root)) == 2 + 6  # the six .bin files; archive and temporary folder removed


def test_cifar_bad_archive_leaves_nothing(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    url, www = server
    info, _ = tiny_cifar(www, url + "cifar-10-binary.tar.gz", bad_member="test_batch.bin")
    use(monkeypatch, info)
    root = tmp_path / "root"
    with pytest.raises(data.DatasetNotFoundError, match="not the official file .*nothing was kept") as err:
        data.load("cifar10", "test", root=root)
    assert str(root / "cifar10" / "cifar-10-batches-bin" / "test_batch.bin") in str(err.value)
    assert not root.exists()  # no archive, no temporary folder, no .bin


# --- the full datasets (only when $ROBUSTOPT_DATA holds them) ------------------------------


def _have(name: str) -> bool:
    root = _full_root()
    return root is not None and data.status(name, root) == "present"


needs_mnist = pytest.mark.skipif(not _have("mnist"), reason="set ROBUSTOPT_DATA to a root with mnist/")
needs_cifar = pytest.mark.skipif(not _have("cifar10"), reason="set ROBUSTOPT_DATA to a root with cifar10/")


@needs_mnist
def test_full_mnist() -> None:
    x, y = data.load("mnist", "train", download=False)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert abs(x.mean().item() - 0.1307) < 1e-4 and abs(x.std().item() - 0.3081) < 1e-4
    x_test, y_test = data.load("mnist", "test", download=False)
    assert x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # mnist-mini is the first 5000 / 1000 examples of the official files
    mx, my = data.load("mnist-mini", "train")
    assert torch.equal(mx, x[:5000]) and torch.equal(my, y[:5000])
    mx, my = data.load("mnist-mini", "test")
    assert torch.equal(mx, x_test[:1000]) and torch.equal(my, y_test[:1000])


@needs_cifar
def test_full_cifar10_test() -> None:
    x, y = data.load("cifar10", "test", download=False)
    assert x.shape == (10000, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert torch.bincount(y).tolist() == [1000] * 10


@needs_cifar
@pytest.mark.slow
def test_full_cifar10_train() -> None:
    x, y = data.load("cifar10", "train", download=False)
    assert x.shape == (50000, 3, 32, 32) and y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    mean = x.mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor(data.info("cifar10").mean), atol=1e-4)
