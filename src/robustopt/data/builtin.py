"""The datasets robustopt knows: MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100, SVHN and the shipped mnist-mini.

Each is one :func:`~robustopt.data.registry.register_dataset` call: constants, the official
files with their checksums and download sources, and the reader of its file layout. They
are registered in the order ``robustopt data list`` shows them.

    ROOT/mnist/{train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
                t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz}
    ROOT/fashion-mnist/   the same four names (when ROOT lacks them, the folder
                          /usr/share/datasets/fashion-mnist of Debian's package
                          dataset-fashion-mnist is used if it holds them)
    ROOT/cifar10/cifar-10-batches-bin/{data_batch_1..5, test_batch}.bin
    ROOT/cifar100/cifar-100-binary/{train, test}.bin
    ROOT/svhn/{train, test}_32x32.mat
    robustopt/assets/mnist-mini.npz   (inside the package: the first 5000 / 1000 MNIST examples)
"""

from __future__ import annotations

from robustopt.data.files import (asset_reader, each_file, idx_reader, read_cifar100_batch, read_cifar_batch,
                                  read_svhn_mat)
from robustopt.data.registry import FileInfo, register_dataset

__all__: list[str] = []

_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
_DIGITS = tuple(str(i) for i in range(10))
_MNIST_MEAN, _MNIST_STD = (0.1307,), (0.3081,)
_MNIST_HOME = "http://yann.lecun.com/exdb/mnist/"
_MNIST_LICENSE = "CC BY-SA 3.0 (Yann LeCun, Corinna Cortes, Christopher J.C. Burges)"


def _idx_files(
    bases: tuple[str, ...], rows: list[tuple[str, str, str, int, str, str, tuple[tuple[int, str], ...]]]
) -> tuple[FileInfo, ...]:
    return tuple(
        FileInfo(name, split, kind, size, sha, md5, tuple(b + name for b in bases), alt)
        for name, split, kind, size, sha, md5, alt in rows
    )


register_dataset(
    "mnist-mini",
    shape=(1, 28, 28),
    mean=_MNIST_MEAN,  # same distribution as MNIST: models share the constants
    std=_MNIST_STD,
    train_size=5000,
    test_size=1000,
    classes=_DIGITS,
    reader=asset_reader,
    asset="assets/mnist-mini.npz",
    madry_table="mnist",
    homepage=_MNIST_HOME,
    license=_MNIST_LICENSE + "; subset shipped in robustopt/assets (see MNIST-LICENSE.md)",
)

register_dataset(
    "mnist",
    shape=(1, 28, 28),
    mean=_MNIST_MEAN,
    std=_MNIST_STD,
    # sha256/md5 of the official files (the md5 are the published ones).
    files=_idx_files(_MNIST_URLS, [
        ("train-images-idx3-ubyte.gz", "train", "images", 9912422,
         "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", "f68b3c2dcbeaaa9fbdd348bbdeb94873", ()),
        ("train-labels-idx1-ubyte.gz", "train", "labels", 28881,
         "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", "d53e105ee54ea40749a09fcbcd1e9432", ()),
        ("t10k-images-idx3-ubyte.gz", "test", "images", 1648877,
         "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", "9fb629c4189551a2d022fa330f9573f3", ()),
        ("t10k-labels-idx1-ubyte.gz", "test", "labels", 4542,
         "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", "ec29112dd5afa0611ce80d1b7f02629c", ()),
    ]),
    train_size=60000,
    test_size=10000,
    classes=_DIGITS,
    reader=idx_reader,
    madry_table="mnist",
    homepage=_MNIST_HOME,
    license=_MNIST_LICENSE,
)

register_dataset(
    "fashion-mnist",
    shape=(1, 28, 28),
    mean=(0.2860,),
    std=(0.3530,),
    # Official files: md5 as published in the zalandoresearch/fashion-mnist README;
    # sha256 of the files with those md5. Debian's dataset-fashion-mnist
    # (0.0~git20200523.55506a9-1) ships the same deflate streams with a rewritten
    # gzip header (no file name, new mtime), hence different bytes: also accepted.
    files=_idx_files(_FASHION_URLS, [
        ("train-images-idx3-ubyte.gz", "train", "images", 26421880,
         "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         ((26421856, "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),)),
        ("train-labels-idx1-ubyte.gz", "train", "labels", 29515,
         "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", "25c81989df183df01b3e8a0aad5dffbe",
         ((29491, "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),)),
        ("t10k-images-idx3-ubyte.gz", "test", "images", 4422102,
         "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", "bef4ecab320f06d8554ea6380940ec79",
         ((4422079, "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),)),
        ("t10k-labels-idx1-ubyte.gz", "test", "labels", 5148,
         "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", "bb300cfdad3c16e7a12a480ee83cd310",
         ((5125, "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),)),
    ]),
    train_size=60000,
    test_size=10000,
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    reader=idx_reader,
    aliases=("fashionmnist", "fmnist"),
    fallback_dirs=("/usr/share/datasets/fashion-mnist",),
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    license="MIT (Zalando SE)",
)

_CIFAR_BINS = [
    ("data_batch_1.bin", "train", "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
     "5dd7e06a14cb22eb9f671a540d1b7c25"),
    ("data_batch_2.bin", "train", "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
     "5ea93a67294ea407fff1d09f752e9692"),
    ("data_batch_3.bin", "train", "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
     "942cd6a4bcdd0dd3c604fbe906cb4421"),
    ("data_batch_4.bin", "train", "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
     "ae636b3ba5c66a11e91e8cb52e771fcb"),
    ("data_batch_5.bin", "train", "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
     "53f37980c15c3d472c316c40844f3f0d"),
    ("test_batch.bin", "test", "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
     "803d5f7f4d78ea53de84dbe85f74fb6d"),
]

_CIFAR10 = register_dataset(
    "cifar10",
    shape=(3, 32, 32),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    # The official binary version: 10,000 records of 3073 bytes per file.
    files=tuple(
        FileInfo(f"cifar-10-batches-bin/{n}", split, "batch", 30730000, sha, md5) for n, split, sha, md5 in _CIFAR_BINS
    ),
    archive=FileInfo(
        "cifar-10-binary.tar.gz", "", "archive", None, None, "c32a1d4ab5d03f1284b67883e8d87530",
        ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
    ),
    train_size=50000,
    test_size=10000,
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    madry_table="cifar10",
    aliases=("cifar-10",),
    reader=each_file(read_cifar_batch),
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    license="no formal license; cite Krizhevsky, 'Learning Multiple Layers of Features from Tiny Images', 2009",
)

_CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)  # the fine labels, in label order

register_dataset(
    "cifar100",
    shape=(3, 32, 32),
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    # The official binary version: records of 2 label bytes (coarse, fine) + 3072 pixel bytes. The
    # archive's md5 is the published one; the two files' md5 are those of the files in that archive.
    files=(
        FileInfo("cifar-100-binary/train.bin", "train", "batch", 153700000, None, "6172c7755cfe09b2fe270c85cebc1b15"),
        FileInfo("cifar-100-binary/test.bin", "test", "batch", 30740000, None, "4499cfba6c016c1be1438163640a0898"),
    ),
    archive=FileInfo(
        "cifar-100-binary.tar.gz", "", "archive", None, None, "03b5dce01913d631647c71ecec9e9cb8",
        ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",),
    ),
    train_size=50000,
    test_size=10000,
    classes=_CIFAR100_CLASSES,
    aliases=("cifar-100",),
    reader=each_file(read_cifar100_batch),
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    license=_CIFAR10.license,
)

_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
register_dataset(
    "svhn",
    shape=(3, 32, 32),
    mean=(0.4377, 0.4438, 0.4728),
    std=(0.1980, 0.2010, 0.1970),
    # The cropped digits (format 2), MATLAB files; md5 as published with torchvision's SVHN.
    files=(
        FileInfo("train_32x32.mat", "train", "mat", 182040794, None, "e26dedcc434d2e4c54c9b2d4a06d8373",
                 (_SVHN_URL + "train_32x32.mat",)),
        FileInfo("test_32x32.mat", "test", "mat", 64275384, None, "eb5a983be6a315427106f1b164d9cef3",
                 (_SVHN_URL + "test_32x32.mat",)),
    ),
    train_size=73257,
    test_size=26032,
    classes=_DIGITS,
    reader=each_file(read_svhn_mat),
    homepage=_SVHN_URL,
    license="non-commercial use only; cite Netzer et al., 'Reading Digits in Natural Images with Unsupervised "
            "Feature Learning', 2011",
)
