"""ro.data.register_dataset: one call adds a dataset that loading, `robustopt data`, evaluation and reports know."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pooch
import pytest
import torch
from click.testing import CliRunner

from robustopt import data
from robustopt._registry import Registry
from robustopt.cli import main
from robustopt.evaluation import Evaluation
from robustopt.evaluation.report import madry_reference

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> Registry[data.DatasetInfo]:
    """A copy of the dataset registry and its aliases for one test: what the test registers is gone afterwards."""
    copy: Registry[data.DatasetInfo] = Registry("dataset")
    for name, entry in data.registry.DATASETS.items():
        copy.register(name, entry)
    monkeypatch.setattr(data.registry, "DATASETS", copy)
    monkeypatch.setattr(data.registry, "_ALIASES", dict(data.registry._ALIASES))
    monkeypatch.setattr(data.download, "_VERIFIED", set())
    monkeypatch.setattr(pooch, "retrieve", _no_network)
    return copy


def _no_network(*args: object, **kwargs: object) -> None:
    raise ConnectionError("no network in the tests")


def write_idx(path: Path, arr: np.ndarray) -> Path:
    """A gzip IDX file of uint8 ``arr``: 0, 0, type 0x08, ndim, big-endian dims, the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.tobytes(), mtime=0))
    return path


def _file(path: Path, split: str, kind: str, folder: Path) -> data.FileInfo:
    blob = path.read_bytes()
    return data.FileInfo(str(path.relative_to(folder)), split, kind, len(blob), hashlib.sha256(blob).hexdigest(), None,
                         (f"https://example.invalid/{path.name}",))


def _tiny_idx(folder: Path, n: dict[str, int]) -> tuple[tuple[data.FileInfo, ...], dict[str, tuple]]:
    """IDX files of 4x4 grayscale images, 3 classes, in ``folder``: their FileInfo and arrays by split."""
    rng = np.random.default_rng(0)
    files, arrays = [], {}
    for split, count in n.items():
        x = rng.integers(0, 256, (count, 4, 4), dtype=np.uint8)
        y = rng.integers(0, 3, count, dtype=np.uint8)
        arrays[split] = (x, y)
        files.append(_file(write_idx(folder / f"{split}-images.gz", x), split, "images", folder))
        files.append(_file(write_idx(folder / f"{split}-labels.gz", y), split, "labels", folder))
    return tuple(files), arrays


def _register_tiny(root: Path, **options: object) -> tuple[data.DatasetInfo, dict[str, tuple]]:
    files, arrays = _tiny_idx(root / "tiny", {"train": 5, "test": 3})
    ds = data.register_dataset("tiny", reader=data.idx_reader, shape=(1, 4, 4), classes=("a", "b", "c"),
                               mean=(0.5,), std=(0.25,), files=files, train_size=5, test_size=3, **options)
    return ds, arrays


def test_one_call_makes_a_dataset_loadable_listed_and_fetchable(tmp_path: Path) -> None:
    ds, arrays = _register_tiny(tmp_path, aliases=("tiny-idx",))
    assert ds.folder == "tiny" and ds.num_classes == 3 and not ds.shipped and ds.madry_table == ""
    assert data.names()[-1] == "tiny" and data.info("TINY_IDX") is ds
    for split, (xs, ys) in arrays.items():
        x, y = data.load("tiny", split, root=tmp_path, download=False)
        assert x.shape == (len(xs), 1, 4, 4) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x, torch.from_numpy(xs).float().div(255).unsqueeze(1)) and y.tolist() == ys.tolist()
    assert data.status("tiny", tmp_path) == "present" and data.fetch("tiny", tmp_path) == tmp_path / "tiny"
    listing = CliRunner().invoke(main, ["data", "list", "--root", str(tmp_path)])
    assert listing.exit_code == 0 and f"tiny            present in {tmp_path / 'tiny'}" in listing.output
    missing = CliRunner().invoke(main, ["data", "fetch", "tiny", "--root", str(tmp_path / "empty")])
    assert missing.exit_code != 0 and "https://example.invalid/train-images.gz" in missing.output


def test_each_file_reads_a_new_format_in_registry_order(tmp_path: Path) -> None:
    def read_records(path: Path) -> tuple[np.ndarray, np.ndarray]:
        """A made-up format: records of one label byte and 2x2 pixel bytes."""
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size % 5:
            raise ValueError(f"{path}: {raw.size} bytes is not a multiple of the 5-byte record")
        records = raw.reshape(-1, 5)
        return records[:, 1:].reshape(-1, 1, 2, 2), records[:, 0].copy()

    folder = tmp_path / "recs"
    folder.mkdir()
    blobs = {"b.rec": bytes([1, 9, 9, 9, 9]), "a.rec": bytes([0, 1, 2, 3, 4, 1, 5, 6, 7, 8]), "t.rec": bytes(5)}
    for name, blob in blobs.items():
        (folder / name).write_bytes(blob)
    files = [_file(folder / n, "test" if n == "t.rec" else "train", "batch", folder) for n in blobs]
    data.register_dataset("recs", reader=data.each_file(read_records), shape=(1, 2, 2), classes=("0", "1"),
                          mean=(0.5,), std=(0.5,), files=files, train_size=3, test_size=1)
    x, y = data.load("recs", "train", root=tmp_path, download=False)
    assert y.tolist() == [1, 0, 1] and (x[0] * 255).round().flatten().tolist() == [9] * 4  # b.rec first
    (folder / "t.rec").write_bytes(bytes(4))  # not the registered size: refused before it is parsed
    with pytest.raises(data.DatasetCorruptError, match=r"t\.rec is not the official file of 'recs'.*data fetch recs"):
        data.load("recs", "test", root=tmp_path, download=False)


def test_a_parse_error_names_the_file_and_the_fetch_command(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x.rec").write_bytes(b"not records")
    f = _file(folder / "x.rec", "test", "batch", folder)

    def parse(path: Path) -> tuple[np.ndarray, np.ndarray]:
        raise ValueError(f"{path} is not a record file")

    data.register_dataset("bad", reader=data.each_file(parse), shape=(1, 2, 2), classes=("0", "1"), mean=(0.5,),
                          std=(0.5,), files=[f], train_size=0, test_size=1)
    with pytest.raises(data.DatasetCorruptError, match=r"x\.rec is not the official file of 'bad': .*not a record "
                                                       r"file\. Delete it .*robustopt data fetch bad"):
        data.load("bad", "test", root=tmp_path, download=False)


def _kwargs(**change: object) -> dict:
    f = data.FileInfo("t.bin", "test", "batch", 1, "0" * 64)
    base = dict(reader=data.idx_reader, shape=(1, 2, 2), classes=("0", "1"), mean=(0.5,), std=(0.5,), files=(f,),
                train_size=0, test_size=1)
    return {**base, **change}


@pytest.mark.parametrize("name, change, error, message", [
    ("mnist", {}, ValueError, "'mnist' is already taken"),
    ("new", {"reader": "idx"}, TypeError, "must be callable"),
    ("new", {"files": ()}, ValueError, "either files=.* or asset="),
    ("new", {"asset": "assets/x.npz"}, ValueError, "not both"),
    ("new", {"shape": (2, 2)}, ValueError, r"shape must be \(C, H, W\)"),
    ("new", {"mean": (0.5, 0.5)}, ValueError, "one value per channel"),
    ("new", {"classes": ("only",)}, ValueError, "at least two classes"),
    ("new", {"files": (data.FileInfo("a.bin", "val", "batch", 1, "0" * 64),)}, ValueError, "no split"),
    ("new", {"aliases": ("cifar-10",)}, ValueError, r"aliases \['cifar-10'\] are taken"),
    ("new", {"aliases": ("svhn",)}, ValueError, "are taken"),
    ("new", {"madry_table": "imagenet"}, ValueError, "madry_table must be one of"),
])
def test_bad_registrations_are_refused(name: str, change: dict, error: type, message: str) -> None:
    before = data.names()
    with pytest.raises(error, match=message):
        data.register_dataset(name, **_kwargs(**change))
    assert data.names() == before


def test_the_paper_table_comes_from_the_registered_field(tmp_path: Path) -> None:
    ev = Evaluation.from_json(REPO / "bench/results/full-mnist/A/eval-madry.json")  # madry suite, L-inf 0.3
    assert madry_reference(ev, "mnist-mini") is not None and madry_reference(ev, "fashion-mnist") is None
    _register_tiny(tmp_path, madry_table="mnist")
    assert madry_reference(ev, "tiny") is not None
    assert madry_reference(ev, "folder:/nowhere") is None and madry_reference(ev, "unknown") is None
    assert madry_reference(ev, None) is None
    assert {n: data.info(n).madry_table for n in data.names()} == {
        "mnist-mini": "mnist", "mnist": "mnist", "fashion-mnist": "", "cifar10": "cifar10", "cifar100": "", "svhn": "",
        "tiny": "mnist"}


def test_a_shipped_dataset_reads_its_package_asset() -> None:
    mini = data.info("mnist-mini")
    assert mini.shipped and mini.asset == "assets/mnist-mini.npz" and mini.folder == "" and mini.files == ()
    x, y = mini.reader(mini, "test", {})
    assert x.shape == (1000, 28, 28) and x.dtype == np.uint8 and y[:3].tolist() == [7, 2, 1]
