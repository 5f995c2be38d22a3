"""CIFAR-100 (binary) and SVHN (MATLAB) official files: parsing (robustopt.data.files), and loading them through
the checksummed registry."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pooch
import pytest
import torch

from robustopt import data
from robustopt._registry import Registry
from robustopt.data import files


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data.download, "_VERIFIED", set())
    monkeypatch.setattr(pooch, "retrieve", _no_network)


def _no_network(*args, **kwargs):
    raise ConnectionError("no network in the tests")


def cifar100_file(path: Path, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n records of the CIFAR-100 binary format: coarse label, fine label, 3072 pixel bytes."""
    g = np.random.default_rng(seed)
    images = g.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    fine = g.integers(0, 100, n, dtype=np.uint8)
    records = np.concatenate([(fine // 5)[:, None], fine[:, None], images.reshape(n, -1)], axis=1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    records.tofile(path)
    return images, fine


def _element(kind: int, payload: bytes) -> bytes:
    return struct.pack("<II", kind, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def _matrix(name: str, array: np.ndarray, mx_class: int, stored: str, mi_type: int) -> bytes:
    """One compressed matrix element, as MATLAB writes it (values stored column-major)."""
    body = (_element(6, struct.pack("<II", mx_class, 0)) + _element(5, np.array(array.shape, "<i4").tobytes())
            + _element(1, name.encode()) + _element(mi_type, array.astype(stored).tobytes(order="F")))
    return _element(15, zlib.compress(_element(14, body)))


def svhn_file(path: Path, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A MAT-file level 5 with X (32x32x3xN uint8) and y (Nx1 double stored as uint8, 1..10), as SVHN's."""
    g = np.random.default_rng(seed)
    x = g.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = g.integers(1, 11, (n, 1)).astype(np.float64)
    header = b"MATLAB 5.0 MAT-file, Platform: GLNXA64".ljust(116) + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + _matrix("X", x, 9, "u1", 2) + _matrix("y", y, 6, "u1", 2))
    return x, y


def test_cifar100_records_give_images_and_fine_labels(tmp_path):
    images, fine = cifar100_file(tmp_path / "test.bin", 5)
    x, y = files.read_cifar100_batch(tmp_path / "test.bin")
    assert np.array_equal(x, images) and np.array_equal(y, fine)


def test_cifar100_truncated_or_bad_labels_are_refused(tmp_path):
    cifar100_file(tmp_path / "a.bin", 2)
    raw = (tmp_path / "a.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="not a positive multiple of the 3074-byte record"):
        files.read_cifar100_batch(tmp_path / "cut.bin")
    (tmp_path / "lab.bin").write_bytes(bytes([0, 100]) + raw[2:])
    with pytest.raises(ValueError, match="fine, < 100"):
        files.read_cifar100_batch(tmp_path / "lab.bin")


def test_svhn_mat_gives_nchw_images_and_digit_zero_for_ten(tmp_path):
    x, y = svhn_file(tmp_path / "test_32x32.mat", 7)
    images, labels = files.read_svhn_mat(tmp_path / "test_32x32.mat")
    assert images.shape == (7, 3, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images[4, 1], x[:, :, 1, 4])  # image 4, green plane: row-major rows, columns
    assert labels.tolist() == [int(v) % 10 for v in y[:, 0]]


@pytest.mark.parametrize("blob, message", [
    (b"", "MAT-file level 5 header"),
    (b"MATLAB 5.0".ljust(124) + struct.pack("<H", 0x0100) + b"MI", "little-endian"),
])
def test_svhn_other_files_are_refused(tmp_path, blob, message):
    (tmp_path / "x.mat").write_bytes(blob)
    with pytest.raises(ValueError, match=message):
        files.read_svhn_mat(tmp_path / "x.mat")


def test_svhn_broken_compression_and_missing_matrix(tmp_path):
    svhn_file(tmp_path / "ok.mat", 2)
    raw = (tmp_path / "ok.mat").read_bytes()
    (tmp_path / "z.mat").write_bytes(raw[:140] + b"\xff" * 40 + raw[180:])
    with pytest.raises(ValueError, match="not a readable MAT-file"):
        files.read_svhn_mat(tmp_path / "z.mat")
    first = 128 + 8 + struct.unpack("<I", raw[132:136])[0]
    (tmp_path / "only_y.mat").write_bytes(raw[:128] + raw[first + (-first % 8):])
    with pytest.raises(ValueError, match="holds no matrix X"):
        files.read_svhn_mat(tmp_path / "only_y.mat")


def _fixture_registry(monkeypatch, name: str, paths: dict[str, Path], n: int) -> None:
    """The registry entry of ``name`` with the fixture files' sizes and md5 (the loader's own checksum check)."""
    info = data.info(name)
    fixture_files = tuple(dataclasses.replace(f, size=paths[f.split].stat().st_size,
                                              md5=hashlib.md5(paths[f.split].read_bytes()).hexdigest())
                          for f in info.files if f.split in paths)
    patched: Registry[data.DatasetInfo] = Registry("dataset")
    for key, entry in data.registry.DATASETS.items():
        patched.register(key, dataclasses.replace(info, files=fixture_files, test_size=n) if key == name else entry)
    monkeypatch.setattr(data.registry, "DATASETS", patched)


@pytest.mark.parametrize("name, make, rel", [
    ("cifar100", cifar100_file, "cifar-100-binary/test.bin"),
    ("svhn", svhn_file, "test_32x32.mat"),
])
def test_load_checks_the_checksum_then_parses(tmp_path, monkeypatch, name, make, rel):
    path = tmp_path / name / rel
    make(path, 6)
    _fixture_registry(monkeypatch, name, {"test": path}, 6)
    x, y = data.load(name, "test", root=tmp_path, download=False)
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64 and len(y) == 6
    raw = path.read_bytes()
    path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # same size, one bit off
    monkeypatch.setattr(data.download, "_VERIFIED", set())
    with pytest.raises(data.DatasetCorruptError, match=f"{rel}.*md5 .*robustopt data fetch {name}"):
        data.load(name, "test", root=tmp_path, download=False)


@pytest.mark.parametrize("name, where", [
    ("cifar100", r"cifar-100-binary\.tar\.gz .*md5 03b5dce01913d631647c71ecec9e9cb8.*cifar-100-binary/test\.bin"),
    ("svhn", r"svhn/test_32x32\.mat .*housenumbers/test_32x32\.mat"),
])
def test_missing_files_say_where_to_put_them(tmp_path, name, where):
    with pytest.raises(data.DatasetNotFoundError, match=f"(?s){where}"):
        data.load(name, "test", root=tmp_path, download=False)


def test_registry_entries_of_cifar100_and_svhn():
    cifar, svhn = data.info("CIFAR-100"), data.info("svhn")
    assert cifar.num_classes == len(cifar.classes) == 100 and cifar.classes[:2] == ("apple", "aquarium_fish")
    assert svhn.classes == tuple("0123456789") and (svhn.train_size, svhn.test_size) == (73257, 26032)
    assert all(f.md5 and f.size for f in (*cifar.files, *svhn.files))
