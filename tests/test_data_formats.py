"""Your own data: ImageFolder trees and .npz arrays, read item by item, and evaluated batch by batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from own_data import CLASSES, image_folder, npz_file
from torch.utils.data import DataLoader

import robustopt as ro
from robustopt.data import formats

pytest.importorskip("PIL")


def test_folder_items_are_the_pixels_in_class_order(tmp_path):
    from PIL import Image

    root = image_folder(tmp_path / "imgs")
    ds = ro.data.load(f"folder:{root}")
    assert len(ds) == 12 and ds.classes == list(CLASSES) and ds.shape == (3, 8, 8)
    assert ds.targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    x, label = ds[4]
    pixels = np.array(Image.open(root / "bee" / "1.png"))
    assert label == 1 and ds.path(4) == str(root / "bee" / "1.png")
    assert torch.equal(x, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    info = ro.data.info(f"folder:{root}")
    assert info.num_classes == 4 and info.test_size == 12 and info.shape == (3, 8, 8) and not info.shipped


def test_image_size_resizes_the_short_side_and_crops_the_center(tmp_path):
    from PIL import Image

    (tmp_path / "a").mkdir()
    wide = np.zeros((8, 16, 3), dtype=np.uint8)
    wide[:, 6:10] = 255  # a white band in the middle columns survives the center crop
    Image.fromarray(wide).save(tmp_path / "a" / "w.png")
    x, _ = ro.data.load(f"folder:{tmp_path}", image_size=4)[0]
    assert x.shape == (3, 4, 4)
    assert x[:, :, 1:3].min() > 0.4 and x[:, :, 0].max() < 0.6  # band in the middle, dark at the edge


def test_images_of_another_size_need_image_size(tmp_path):
    from PIL import Image

    root = image_folder(tmp_path)
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(root / "dog" / "big.png")
    ds = ro.data.load(f"folder:{root}")
    with pytest.raises(ValueError, match=r"big\.png is 10x10.*--image-size"):
        formats.first(ds)
    assert formats.first(ro.data.load(f"folder:{root}", image_size=8))[0].shape == (13, 3, 8, 8)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nowhere", "no folder"),
    (lambda p: p, "no class sub-folders"),
    (lambda p: (image_folder(p), (p / "eel").mkdir(), p)[2], r"class folder .*eel holds no \.png"),
])
def test_bad_folders_are_refused_with_what_to_do(tmp_path, make, message):
    with pytest.raises(ValueError, match=message):
        ro.data.load(f"folder:{make(tmp_path)}")


def test_a_corrupt_image_is_named_or_skipped_with_skip_bad(tmp_path):
    root = image_folder(tmp_path)
    (root / "cat" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    ds = ro.data.load(f"folder:{root}")
    with pytest.raises(ValueError, match=r"cannot read image .*cat/zz\.png.*--skip-bad"):
        formats.first(ds)
    kept = ro.data.load(f"folder:{root}", skip_bad=True)
    assert len(kept) == 12 and [p.name for p in kept.skipped] == ["zz.png"]
    assert formats.first(kept)[0].shape == (12, 3, 8, 8)


def test_npz_channels_last_uint8_and_memory_map(tmp_path):
    x, y = npz_file(tmp_path / "a.npz")
    ds = ro.data.load(f"npz:{tmp_path / 'a.npz'}")
    assert isinstance(ds.x, np.memmap) and ds.shape == (3, 8, 8) and len(ds) == 12 and ds.num_classes == 4
    img, label = ds[5]
    assert label == y[5] and torch.equal(img, torch.from_numpy(x[5]).permute(2, 0, 1).float() / 255)
    npz_file(tmp_path / "c.npz", compressed=True)  # compressed members are loaded whole, same content
    assert torch.equal(ro.data.load(f"npz:{tmp_path / 'c.npz'}")[5][0], img)


def test_npz_float_channels_first(tmp_path):
    x = np.random.default_rng(0).random((5, 1, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "f.npz", x=x, y=np.array([0, 1, 0, 1, 2]))
    ds = ro.data.load(f"npz:{tmp_path / 'f.npz'}")
    assert ds.shape == (1, 6, 6) and torch.equal(ds[2][0], torch.from_numpy(x[2]))


@pytest.mark.parametrize("arrays, message", [
    (dict(x=np.zeros((4, 3, 8, 8), np.uint8), y=np.zeros(3, np.int64)), r"x has shape \(4, 3, 8, 8\) and y \(3,\)"),
    (dict(x=np.zeros((4, 3, 8, 8), np.uint8)), "no array 'y'"),
    (dict(x=np.zeros((4, 8, 8), np.uint8), y=np.zeros(4, np.int64)), "expected x"),
    (dict(x=np.zeros((2, 3, 8, 8), np.uint8), y=np.array([0.5, 1.0])), "class indices"),
])
def test_npz_that_do_not_fit_are_refused(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        ro.data.load(f"npz:{tmp_path / 'bad.npz'}")


def test_spec_options_apply_to_folders_only(tmp_path):
    npz_file(tmp_path / "a.npz")
    with pytest.raises(ValueError, match="folder: data only"):
        ro.data.load(f"npz:{tmp_path / 'a.npz'}", image_size=4)
    with pytest.raises(ValueError, match="folder: data only"):
        ro.data.load("mnist-mini", skip_bad=True)


def _tiny_setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4)).eval()
    return model, [ro.attacks.PGD(ro.Linf(8 / 255), steps=3, step_size=4 / 255)]


def test_streamed_evaluation_equals_the_in_memory_one(tmp_path):
    root = image_folder(tmp_path, per_class=5)
    ds = ro.data.load(f"folder:{root}")
    model, attacks = _tiny_setup()
    x, y = formats.first(ds)
    reference = ro.evaluate(model, (x, y), attacks, batch_size=6, progress=False)
    for data in (ds, DataLoader(ds, batch_size=4), formats.Streamed(ds)):
        ev = ro.evaluate(model, data, attacks, batch_size=6, progress=False)
        assert torch.equal(ev.correct, reference.correct) and torch.equal(ev.robust, reference.robust)
        assert ev.meta["paths"] == [str(p) for p in ds.files]
    assert "paths" not in reference.meta


def test_streamed_evaluation_reads_at_most_a_batch_at_once(tmp_path):
    class Counting(torch.utils.data.Dataset):
        def __init__(self, inner):
            self.inner, self.targets, self.reads = inner, inner.targets, []

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, i):
            self.reads.append(i)
            return self.inner[i]

    ds = Counting(ro.data.load(f"folder:{image_folder(tmp_path, per_class=5)}"))
    stream = formats.Streamed(ds)
    batch = stream[torch.tensor([3, 7, 11])]
    assert batch.shape == (3, 3, 8, 8) and ds.reads == [0, 3, 7, 11]  # the first item: the shape
    model, attacks = _tiny_setup()
    ro.evaluate(model, stream, attacks, batch_size=6, progress=False)
    assert set(ds.reads) == set(range(20))


def test_a_shuffled_loader_is_collected_not_streamed(tmp_path):
    ds = ro.data.load(f"folder:{image_folder(tmp_path)}")
    assert formats.streamed(DataLoader(ds, shuffle=True)) is None
    assert formats.streamed((torch.zeros(1, 3), torch.zeros(1))) is None
