"""The registry of clean datasets: where each one's files are found, how to get them, what its
images allow (`DataFacts`), and which reader reads them.

    DATASETS["fashion-mnist"].how_to_get
    get_source("cifar-10")            # by name or alias; a one-line error naming the known ones
    facts_for(protected_set)          # a protected set has its base dataset's facts

Each `Source` states its facts; `facts_for` finds them for any `ImageSet` (a protected or imported
set through the base dataset its manifest names). `Recipe.for_data` applies them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UnlearnableError
from .facts import UNKNOWN, DataFacts
from .imageset import ImageSet
from .readers import (
    DIGIT_CLASSES, FASHION_CLASSES, load_cifar10, load_cifar100, load_digits, load_idx_pair, load_svhn,
)


@dataclass(frozen=True)
class Download:
    """One file of a dataset's official distribution.

    `sha256` is required and always verified; `md5` (what torchvision and the CIFAR page publish)
    is verified too when given. `mirrors` are tried in order after `url` when it cannot be
    reached or serves other bytes. An `extract` archive is unpacked into the data root, keeping
    its top folder (cifar-10-python.tar.gz gives ROOT/cifar-10-batches-py/).
    """

    url: str
    sha256: str
    filename: str
    extract: bool = False
    md5: str = ""
    mirrors: tuple[str, ...] = ()


def _files(base: str, mirrors: tuple[str, ...], table: list[tuple[str, str, str]]) -> tuple[Download, ...]:
    return tuple(Download(base + name, sha, name, md5=md5, mirrors=tuple(m + name for m in mirrors))
                 for name, sha, md5 in table)


# SHA-256 values as published in pytorch/vision, torchvision/prototype/datasets/_builtin/mnist.py
# (MNIST._CHECKSUMS, FashionMNIST._CHECKSUMS); MD5 values from torchvision/datasets/mnist.py.
_FASHION_DOWNLOADS = _files(
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # Zalando's README
    ("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",),
    [("train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
      "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
     ("train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
      "25c81989df183df01b3e8a0aad5dffbe"),
     ("t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
      "bef4ecab320f06d8554ea6380940ec79"),
     ("t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
      "bb300cfdad3c16e7a12a480ee83cd310")])
# yann.lecun.com no longer serves the files reliably; torchvision's maintained mirror comes first,
# TensorFlow's second.
_MNIST_DOWNLOADS = _files(
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ("https://storage.googleapis.com/cvdf-datasets/mnist/",),
    [("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
      "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
     ("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
      "d53e105ee54ea40749a09fcbcd1e9432"),
     ("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
      "9fb629c4189551a2d022fa330f9573f3"),
     ("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
      "ec29112dd5afa0611ce80d1b7f02629c")])
# SHA-256 as in keras-team/keras keras/datasets/cifar10.py and cifar100.py (`file_hash`) and in
# pytorch/vision torchvision/prototype/datasets/_builtin/cifar.py (`_SHA256`); MD5 from the
# CIFAR page (https://www.cs.toronto.edu/~kriz/cifar.html), as torchvision/datasets/cifar.py has.
_CIFAR10_DOWNLOADS = (Download(
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce", "cifar-10-python.tar.gz",
    extract=True, md5="c58f30108f718f92721af3b95e74349a"),)
_CIFAR100_DOWNLOADS = (Download(
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7", "cifar-100-python.tar.gz",
    extract=True, md5="eb9058c3a382ffc7106e4002c42a8d85"),)
# SHA-256 as in pytorch/vision torchvision/prototype/datasets/_builtin/svhn.py (SVHN._CHECKSUMS);
# MD5 from torchvision/datasets/svhn.py. The site serves plain HTTP only; the checksum is what
# makes that safe.
_SVHN_DOWNLOADS = _files("http://ufldl.stanford.edu/housenumbers/", (), [
    ("train_32x32.mat", "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
     "e26dedcc434d2e4c54c9b2d4a06d8373"),
    ("test_32x32.mat", "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
     "eb5a983be6a315427106f1b164d9cef3")])


@dataclass(frozen=True)
class Source:
    """A registered dataset: its reader, the file that marks its directory, the folder names it is
    found under, how to get it, its downloads, shape, classes and facts."""
    name: str
    loader: Callable[[Path, str], ImageSet]
    marker: str  # a file (or glob) whose presence says the directory holds this dataset
    dirnames: tuple[str, ...]  # sub-directory names to look for under each root
    system_dirs: tuple[str, ...] = ()
    how_to_get: str = ""
    downloads: tuple[Download, ...] = ()
    shape_chw: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    embedded: bool = False
    aliases: tuple[str, ...] = field(default=())
    facts: DataFacts = DataFacts()  # what training may do to the images (crop, flip)


DATASETS: dict[str, Source] = {}
# Digits and house numbers are not mirror-symmetric (a mirrored 2 is no 2); shifts are harmless.
_DIGIT_FACTS = DataFacts(hflip=False)


def register_dataset(src: Source) -> Source:
    """Register `src` under its name and its aliases."""
    DATASETS[src.name] = src
    for a in src.aliases:
        DATASETS[a] = src
    return src


register_dataset(Source(
    "fashion-mnist", lambda r, s: load_idx_pair(r, s, FASHION_CLASSES, "fashion-mnist"),
    "train-images-idx3-ubyte*", ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST"),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    how_to_get="install Debian's package (sudo apt-get install dataset-fashion-mnist) or run "
               "`unlearnable datasets --download fashion-mnist`",
    downloads=_FASHION_DOWNLOADS, aliases=("fmnist", "fashion_mnist"), facts=DataFacts(hflip=True),
))
register_dataset(Source(
    "mnist", lambda r, s: load_idx_pair(r, s, DIGIT_CLASSES, "mnist"),
    "train-images*idx3-ubyte*", ("mnist", "MNIST/raw", "MNIST"),
    system_dirs=("/usr/share/datasets/mnist",),
    how_to_get="run `unlearnable datasets --download mnist`, or put the four IDX files "
               "(train-images-idx3-ubyte.gz, ...) in DATA_ROOT/mnist",
    downloads=_MNIST_DOWNLOADS, facts=_DIGIT_FACTS,
))
register_dataset(Source(
    "cifar10", load_cifar10, "data_batch_1", ("cifar-10-batches-py", "cifar10", "cifar-10"),
    how_to_get="run `unlearnable datasets --download cifar10`, or extract cifar-10-python.tar.gz "
               "into DATA_ROOT (giving DATA_ROOT/cifar-10-batches-py)",
    downloads=_CIFAR10_DOWNLOADS, shape_chw=(3, 32, 32), aliases=("cifar-10",), facts=DataFacts(hflip=True),
))
register_dataset(Source(
    "cifar100", load_cifar100, "train", ("cifar-100-python", "cifar100", "cifar-100"),
    how_to_get="run `unlearnable datasets --download cifar100`, or extract cifar-100-python.tar.gz "
               "into DATA_ROOT (giving DATA_ROOT/cifar-100-python)",
    downloads=_CIFAR100_DOWNLOADS, shape_chw=(3, 32, 32), num_classes=100, aliases=("cifar-100",),
    facts=DataFacts(hflip=True),
))
register_dataset(Source(
    "svhn", load_svhn, "train_32x32.mat", ("svhn", "SVHN"),
    how_to_get="run `unlearnable datasets --download svhn`, or put train_32x32.mat and "
               "test_32x32.mat in DATA_ROOT/svhn",
    downloads=_SVHN_DOWNLOADS, shape_chw=(3, 32, 32), facts=_DIGIT_FACTS,
))
register_dataset(Source(
    "digits", load_digits, "", (), how_to_get="ships with scikit-learn", shape_chw=(1, 8, 8),
    embedded=True,
    # The digit fills the 8x8 frame, so a 1-pixel shift loses an eighth of it: with crops the
    # ConvNet reaches 81 % after 3 paper-recipe epochs and 98.4 % after 40, without 92 % and 99.0 %
    # (mean of 3 seeds, no flip either way).
    facts=DataFacts(hflip=False, crop=False),
))


def get_source(name: str) -> Source:
    """The registered dataset `name` (any alias, any case), or a one-line error naming the known ones."""
    key = name.lower()
    if key not in DATASETS:
        known = ", ".join(sorted({s.name for s in DATASETS.values()}))
        raise UnlearnableError(f"unknown dataset {name!r} (known: {known}; or give a dataset directory)")
    return DATASETS[key]


def facts_for(ds: ImageSet) -> DataFacts:
    """The facts of `ds`'s images, looked up by the registered dataset they come from."""
    name = _origin(ds)
    src = DATASETS.get(name.lower()) if name else None
    return src.facts if src is not None else UNKNOWN


def _origin(ds: ImageSet) -> str | None:
    """The registered name `ds` may come from; None where its origin is known to be elsewhere."""
    man = ds.meta.get("manifest")
    base = man.get("base") if isinstance(man, dict) else None
    if isinstance(base, dict) and base.get("name"):
        # A protected set is its base dataset's images, changed within a small budget.
        name = base["name"]
        return name if isinstance(name, str) else None
    src = ds.meta.get("source")
    if isinstance(src, dict):
        # Set by the loaders: an image folder's name is only its directory's.
        name = src.get("dataset")
        return name if isinstance(name, str) else None
    return ds.name or None
