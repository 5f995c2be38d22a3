"""Regenerate src/robustopt/assets/mnist-mini.npz, the real MNIST subset shipped in the package.

The subset is the FIRST 5000 images of the official MNIST training file and the
FIRST 1000 images of the official test file, in file order (no shuffling, no
class balancing): anyone can re-derive it from the official files, and the test
part is the usual "first 1000 test points" of robustness evaluations. Pixels and
labels are stored unchanged as uint8, under the keys x_train (5000, 28, 28),
y_train (5000,), x_test (1000, 28, 28), y_test (1000,).

The output is a compressed .npz, the format of np.savez_compressed (read it with
np.load), written with fixed zip timestamps so that re-running the script
reproduces the file byte for byte.

    python bench/make_mnist_mini.py --root /path/to/data   # reads ROOT/mnist/*.gz (checksum-verified)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from robustopt import data

OUT = Path(__file__).resolve().parents[1] / "src" / "robustopt" / "assets" / "mnist-mini.npz"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def build(root: str | os.PathLike[str] | None, n_train: int = 5000, n_test: int = 1000) -> dict[str, np.ndarray]:
    """The subset's arrays, read from the verified official MNIST files under ``root``.

    Args:
        root: data root holding ``mnist/`` (default: $ROBUSTOPT_DATA, else the user cache).
        n_train: number of leading training images to keep.
        n_test: number of leading test images to keep.

    Returns:
        The four uint8 arrays keyed x_train, y_train, x_test, y_test.
    """
    folder = data.fetch("mnist", root)  # verifies the sha256 of the four official files
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = (data.read_idx(folder / name) for name in FILES[split])
        arrays[f"x_{split}"] = np.ascontiguousarray(images[:n], dtype=np.uint8)
        arrays[f"y_{split}"] = np.ascontiguousarray(labels[:n], dtype=np.uint8)
    return arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` like np.savez_compressed, but with fixed timestamps (reproducible bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, arr, allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".npz.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="data root holding mnist/ (default: $ROBUSTOPT_DATA or cache)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output file (default: {OUT})")
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=1000)
    args = parser.parse_args()

    arrays = build(args.root, args.n_train, args.n_test)
    write_npz(args.out, arrays)
    for split in ("train", "test"):
        counts = np.bincount(arrays[f"y_{split}"], minlength=10).tolist()
        print(f"{split}: {len(arrays[f'y_{split}'])} images, label counts {counts}")
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, sha256 {digest})")


if __name__ == "__main__":
    main()
