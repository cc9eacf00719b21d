"""Image sources on small files written here: ImageFolder, webdataset tar shards, Fashion-MNIST IDX files,
corrupt images; scikit-image photos; in-memory tensors; deterministic subsets."""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saebench.acts.sources import (
    UNLABELED,
    FashionMNISTSource,
    ImageFolderSource,
    ImageSource,
    SkimagePhotosSource,
    TensorImageSource,
    UnreadableImageError,
    WebDatasetSource,
    read_idx,
    subset,
)
from saebench.acts.sources import fashion_mnist as fashion_mnist_module


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- ImageFolder
@pytest.fixture
def image_folder(tmp_path, rgb_arrays):
    """ImageNet layout: root/train/<class>/, 2 classes (a nested folder, an upper-case .JPEG); root/val/."""
    root = tmp_path / "imagenet"
    files = {
        "train/n02/b.png": rgb_arrays[0],
        "train/n02/a.png": rgb_arrays[1],
        "train/n01/sub/c.png": rgb_arrays[2],
        "val/n01/d.png": rgb_arrays[3],
    }
    for relative, array in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(png_bytes(array))
    (root / "train/n01/e.JPEG").write_bytes(jpeg_bytes(rgb_arrays[4]))
    (root / "train/n01/notes.txt").write_text("not an image")
    (root / "train/n01/.hidden.png").write_bytes(png_bytes(rgb_arrays[5]))
    return root


def test_image_folder_labels_order_and_pixels(image_folder, rgb_arrays):
    source = ImageFolderSource(image_folder, split="train")
    # classes sorted (n01 -> 0, n02 -> 1); files sorted by path within a class; .txt and hidden files ignored
    assert source.class_names == ["n01", "n02"]
    assert [source.path_of(i).name for i in range(len(source))] == ["e.JPEG", "c.png", "a.png", "b.png"]
    assert [source.label_of(i) for i in range(len(source))] == [0, 0, 1, 1]
    sample = source[2]
    assert (sample.label, sample.index, sample.caption) == (1, 2, None)
    assert np.array_equal(np.asarray(sample.image), rgb_arrays[1])  # PNG is lossless
    assert len(ImageFolderSource(image_folder, split="val")) == 1
    assert isinstance(source, ImageSource)


def test_image_folder_fingerprint_ignores_the_root_but_not_the_files(image_folder, tmp_path):
    source = ImageFolderSource(image_folder, split="train")
    moved = tmp_path / "elsewhere"
    shutil.copytree(image_folder, moved)
    assert ImageFolderSource(moved, split="train").fingerprint() == source.fingerprint()
    (moved / "train/n02/z.png").write_bytes((moved / "train/n02/a.png").read_bytes())
    assert ImageFolderSource(moved, split="train").fingerprint() != source.fingerprint()
    assert pickle.loads(pickle.dumps(source)).fingerprint() == source.fingerprint()


def test_image_folder_errors(image_folder, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"image folder not found: .*test \(splits present: \['train', 'val'\]\)"
    ):
        ImageFolderSource(image_folder, split="test")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no class folders in .*flat: expected .*/<class>/<image>"):
        ImageFolderSource(flat)


def test_corrupt_and_truncated_images_raise_with_their_index(image_folder, rgb_arrays):
    (image_folder / "train/n02/a.png").write_bytes(b"this is not a png")
    truncated = jpeg_bytes(rgb_arrays[0])
    (image_folder / "train/n02/b.png").write_bytes(truncated[: len(truncated) // 2])  # a JPEG cut in half
    source = ImageFolderSource(image_folder, split="train")
    for index in (2, 3):
        with pytest.raises(UnreadableImageError) as info:
            source[index]
        assert info.value.index == index
        assert info.value.origin == str(source.path_of(index))
    error = pickle.loads(pickle.dumps(info.value))  # crosses DataLoader worker processes intact
    assert (error.index, error.origin) == (3, info.value.origin)
    assert source[1].label == 0  # the readable ones still read


# ---------------------------------------------------------------------------------------------- webdataset
def write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.fixture
def shards(tmp_path, rgb_arrays):
    """Two CC3M-style shards: images with captions, one with a class label, one key without an image, one
    corrupt JPEG."""
    folder = tmp_path / "cc3m"
    folder.mkdir()
    write_tar(
        folder / "shard-000000.tar",
        {
            "0000.png": png_bytes(rgb_arrays[0]),
            "0000.txt": b"a red square \n",
            "0000.cls": b"7",
            "0001.jpg": jpeg_bytes(rgb_arrays[1]),
            "0001.txt": "caf\u00e9 at night".encode(),
            "0002.json": b"{}",
        },
    )
    write_tar(
        folder / "shard-000001.tar",
        {
            "sub/0003.png": png_bytes(rgb_arrays[2]),
            "0004.jpg": b"\xff\xd8\xff not really a jpeg",
            "0004.txt": b"broken",
        },
    )
    return folder


def test_webdataset_samples_captions_and_labels(shards, rgb_arrays):
    source = WebDatasetSource(sorted(shards.glob("*.tar")))
    assert len(source) == 4 and source.n_keys_without_image == 1  # 0002 has only a .json
    keys = [source.key_of(i) for i in range(4)]
    assert keys == [
        "shard-000000.tar:0000",
        "shard-000000.tar:0001",
        "shard-000001.tar:sub/0003",
        "shard-000001.tar:0004",
    ]
    first, second, third = source[0], source[1], source[2]
    assert np.array_equal(np.asarray(first.image), rgb_arrays[0])
    assert (first.caption, first.label) == ("a red square", 7)
    assert (second.caption, second.label, second.image.size) == ("caf\u00e9 at night", UNLABELED, (24, 20))
    assert (third.caption, third.index) == (None, 2)
    with pytest.raises(UnreadableImageError) as info:
        source[3]
    assert info.value.index == 3 and info.value.origin.endswith("shard-000001.tar:0004.jpg")


def test_webdataset_shard_arguments(shards):
    by_list = WebDatasetSource(sorted(shards.glob("*.tar")))
    assert WebDatasetSource(shards).fingerprint() == by_list.fingerprint()  # a directory
    assert WebDatasetSource(str(shards / "shard-*.tar")).fingerprint() == by_list.fingerprint()  # a glob
    assert pickle.loads(pickle.dumps(by_list))[0].caption == "a red square"
    with pytest.raises(FileNotFoundError, match="tar shards not found: .*missing.tar"):
        WebDatasetSource([shards / "missing.tar"])
    gz = shards / "packed.tar.gz"
    with tarfile.open(gz, "w:gz") as archive:
        archive.add(shards / "shard-000000.tar", arcname="x.tar")
    with pytest.raises(ValueError, match="not an uncompressed tar file.*decompress"):
        WebDatasetSource([gz])


# ---------------------------------------------------------------------------------------------- Fashion-MNIST
def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding: 0, 0, type 0x08 (ubyte), number of dimensions, big-endian uint32 sizes, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def fmnist_arrays():
    images = np.random.default_rng(3).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    return images, np.array([9, 0, 0, 3, 9], dtype=np.uint8)


def write_fmnist(folder: Path, images: np.ndarray, labels: np.ndarray, compress: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        data = idx_bytes(array)
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)


@pytest.fixture
def no_system_fmnist(monkeypatch, tmp_path):
    """Hide any Debian copy and any SAEBENCH_DATA so lookups see only this test's files."""
    monkeypatch.setattr(fashion_mnist_module, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.delenv("SAEBENCH_DATA", raising=False)


def test_read_idx_parses_the_header(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(array))
    assert np.array_equal(read_idx(tmp_path / "a.idx"), array)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(ValueError, match="bad is not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(idx_bytes(array)[:-1])
    with pytest.raises(ValueError, match=r"header says shape \(2, 3, 4\) but the file holds 23 data bytes"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_from_root_and_from_saebench_data(
    no_system_fmnist, tmp_path, fmnist_arrays, monkeypatch
):
    images, labels = fmnist_arrays
    write_fmnist(tmp_path / "mine", images, labels)
    source = FashionMNISTSource("test", root=tmp_path / "mine")
    assert len(source) == 5 and [source.label_of(i) for i in range(5)] == [9, 0, 0, 3, 9]
    sample = source[3]
    assert sample.image.mode == "L" and np.array_equal(np.asarray(sample.image), images[3])
    assert source.class_names[sample.label] == "Dress"
    # torchvision's layout, uncompressed, found through SAEBENCH_DATA
    write_fmnist(tmp_path / "data" / "FashionMNIST" / "raw", images, labels, compress=False)
    monkeypatch.setenv("SAEBENCH_DATA", str(tmp_path / "data"))
    assert FashionMNISTSource("test").fingerprint() == source.fingerprint()


def test_fashion_mnist_missing_files_say_how_to_get_them(no_system_fmnist, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        FashionMNISTSource("train")
    message = str(info.value)
    for needle in (
        "train-images-idx3-ubyte",
        "apt-get install dataset-fashion-mnist",
        "SAEBENCH_DATA",
        "download=True",
    ):
        assert needle in message
    with pytest.raises(ValueError, match="unknown Fashion-MNIST split 'val'; valid: train, test"):
        FashionMNISTSource("val")


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist absent"
)
def test_debian_fashion_mnist_has_6000_images_per_training_class():
    source = FashionMNISTSource("train")  # offline_data.md B1: 60,000 images, exactly 6,000 per class
    assert len(source) == 60000
    assert np.bincount(source.labels, minlength=10).tolist() == [6000] * 10


# ---------------------------------------------------------------------------------------------- in memory
def test_skimage_photos():
    source = SkimagePhotosSource(["coffee", "chelsea"])
    assert len(source) == 2 and source.class_names == ("coffee", "chelsea")
    assert source[1].image.size == (451, 300) and source[1].label == 1  # chelsea is 451 x 300 (w x h)
    assert len(SkimagePhotosSource()) == 14
    with pytest.raises(ValueError, match="unknown scikit-image photos \\['lena'\\]"):
        SkimagePhotosSource(["lena"])


def test_tensor_source(rgb_arrays):
    import torch

    source = TensorImageSource(torch.from_numpy(rgb_arrays), labels=[0, 1, 2, 0, 1, 2])
    assert np.array_equal(np.asarray(source[5].image), rgb_arrays[5]) and source[5].label == 2
    gray = TensorImageSource(rgb_arrays[..., 0])
    assert gray[0].image.mode == "L" and gray[0].label == UNLABELED
    assert source[-1].index == 5
    with pytest.raises(IndexError, match="index 6 out of range for 6 images"):
        source[6]
    with pytest.raises(ValueError, match="must be uint8 pixels"):
        TensorImageSource(rgb_arrays.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, H, W, 3\)"):
        TensorImageSource(rgb_arrays[..., :2])
    with pytest.raises(ValueError, match="5 labels for 6 images"):
        TensorImageSource(rgb_arrays, labels=[0] * 5)


# ---------------------------------------------------------------------------------------------- subsets
@pytest.fixture
def labelled(rgb_arrays):
    # labels by index: 0 1 0 2 1 0 2 2 ... (8 images: the 6 arrays plus two repeats)
    arrays = np.concatenate([rgb_arrays, rgb_arrays[:2]])
    return TensorImageSource(arrays, labels=[0, 1, 0, 2, 1, 0, 2, 2])


def test_subset_first_n_and_per_class(labelled):
    # per_class=2 keeps the first two of each label in order: 0 (idx 0, 2), 1 (idx 1, 4), 2 (idx 3, 6)
    assert subset(labelled, per_class=2).indices == [0, 1, 2, 3, 4, 6]
    assert subset(labelled, first_n=3).indices == [0, 1, 2]
    assert subset(labelled, first_n=100).indices == list(range(8))
    assert subset(labelled, per_class=2, first_n=4).indices == [0, 1, 2, 3]
    per_class = subset(labelled, per_class=2)
    assert per_class[5].index == 6 and per_class[5].label == 2  # Sample.index stays the original index
    assert per_class.label_of(5) == 2


def test_subset_is_deterministic_and_recorded(labelled):
    first = subset(labelled, per_class=2)
    assert first.fingerprint() == subset(labelled, per_class=2).fingerprint()
    fingerprint = first.fingerprint()
    assert (fingerprint["kind"], fingerprint["per_class"], fingerprint["first_n"]) == ("subset", 2, None)
    assert fingerprint["parent"] == labelled.fingerprint()
    assert fingerprint != subset(labelled, first_n=6).fingerprint()
    nested = subset(first, first_n=2)
    assert [nested[i].index for i in range(2)] == [0, 1]
    assert nested.fingerprint()["parent"] == fingerprint


def test_subset_errors(labelled, rgb_arrays):
    with pytest.raises(ValueError, match="needs first_n, per_class or both"):
        subset(labelled)
    with pytest.raises(ValueError, match="first_n must be a positive int"):
        subset(labelled, first_n=0)
    with pytest.raises(ValueError, match="per_class subsets need labels; image 0 of tensor is unlabelled"):
        subset(TensorImageSource(rgb_arrays), per_class=1)


def test_unreadable_image_through_a_subset_keeps_its_original_index(image_folder):
    (image_folder / "train/n02/a.png").write_bytes(b"garbage")
    # files e, c (class 0), a, b (class 1); one per class keeps e (index 0) and a (index 2)
    picked = subset(ImageFolderSource(image_folder, split="train"), per_class=1)
    with pytest.raises(UnreadableImageError) as info:
        picked[1]
    assert info.value.index == 2
