"""Tests for msvit_edge.data: IDX loading, scene rendering and boxes, ImageFolder and .npz datasets, dispatch."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from msvit_edge import data
from msvit_edge.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    FashionMNISTScenes,
    ImageFolderDataset,
    NpzDataset,
    SceneConfig,
    load_fashion_mnist,
    open_dataset,
    random_subset,
    region_overlap,
)
from msvit_edge.errors import MsvitEdgeError

pytestmark = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="needs the dataset-fashion-mnist Debian package")
MEAN = STD = (0.5, 0.5, 0.5)


@pytest.fixture(scope="module")
def fmnist_test() -> tuple[np.ndarray, np.ndarray]:
    return load_fashion_mnist(split="test")


def _denorm(image: torch.Tensor) -> torch.Tensor:
    return image * 0.5 + 0.5


# ---------------------------------------------------------------------------------------------------------------------
# IDX files


@pytest.mark.parametrize(("split", "count"), [("train", 60000), ("test", 10000)])
def test_load_fashion_mnist(split: str, count: int) -> None:
    images, labels = load_fashion_mnist(split=split)
    assert images.shape == (count, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (count,) and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(len(FASHION_MNIST_CLASSES)))
    assert images.max() == 255 and images[:, 0, 0].mean() < 5  # bright objects on black


def test_load_uncompressed_idx_matches_gzip(tmp_path: Path, fmnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((FASHION_MNIST_DIR / f"{name}.gz").read_bytes()))
    images, labels = load_fashion_mnist(tmp_path, "test")
    np.testing.assert_array_equal(images, fmnist_test[0])
    np.testing.assert_array_equal(labels, fmnist_test[1])


def _idx_bytes(magic: int, shape: tuple[int, ...], payload_size: int | None = None) -> bytes:
    header = np.array([magic, *shape], dtype=">i4").tobytes()
    return header + bytes(int(np.prod(shape)) if payload_size is None else payload_size)


def _write_small_idx(folder: Path, images: bytes, labels: bytes) -> None:
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))


GOOD_IMAGES, GOOD_LABELS = _idx_bytes(2051, (5, 28, 28)), _idx_bytes(2049, (5,))


@pytest.mark.parametrize(
    ("images", "labels", "bad_file", "problem"),
    [
        (_idx_bytes(2049, (5, 28, 28)), GOOD_LABELS, "t10k-images", "magic number 2049"),
        (GOOD_IMAGES, _idx_bytes(2051, (5,)), "t10k-labels", "magic number 2051"),
        (_idx_bytes(2051, (5, 28, 28), payload_size=100), GOOD_LABELS, "t10k-images", "truncated"),
        (b"\x00\x00\x08", GOOD_LABELS, "t10k-images", "truncated"),
        (GOOD_IMAGES, _idx_bytes(2049, (4,)), "t10k-labels", "4 labels"),
    ],
)
def test_idx_errors_name_the_file(tmp_path: Path, images: bytes, labels: bytes, bad_file: str, problem: str) -> None:
    _write_small_idx(tmp_path, images, labels)
    with pytest.raises(MsvitEdgeError, match=problem) as info:
        load_fashion_mnist(tmp_path, "test")
    assert info.value.path is not None and info.value.path.name.startswith(bad_file)


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    _write_small_idx(tmp_path, GOOD_IMAGES, GOOD_LABELS)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(MsvitEdgeError, match=re.escape("t10k-images-idx3-ubyte.gz")):
        load_fashion_mnist(tmp_path, "test")


def test_missing_files_and_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_small_idx(tmp_path, GOOD_IMAGES, GOOD_LABELS)
    with pytest.raises(MsvitEdgeError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path, "train")
    with pytest.raises(MsvitEdgeError, match="nowhere: folder not found"):
        load_fashion_mnist(tmp_path / "nowhere")
    monkeypatch.setattr(data.idx, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(MsvitEdgeError, match=r"apt-get install dataset-fashion-mnist\b.* --data"):
        load_fashion_mnist()


# ---------------------------------------------------------------------------------------------------------------------
# Scenes


def _scenes(fmnist: tuple[np.ndarray, np.ndarray], blank: bool = False, **config: float) -> FashionMNISTScenes:
    """Scenes of the test split; ``blank`` swaps every item for an empty one (same layout, background only)."""
    images, labels = fmnist
    return FashionMNISTScenes(np.zeros_like(images) if blank else images, labels, SceneConfig(**config))


def test_scene_tensor(fmnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    scenes = _scenes(fmnist_test)
    image, label = scenes[7]
    assert image.shape == (3, 80, 80) and image.dtype == torch.float32
    assert label == fmnist_test[1][7] and len(scenes) == 10000
    assert _denorm(image).min() >= 0.0 and _denorm(image).max() <= 1.0
    torch.testing.assert_close(_denorm(image), torch.from_numpy(scenes.render(7)).permute(2, 0, 1))


def test_scenes_deterministic_per_index(fmnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    first, again = _scenes(fmnist_test, clutter=3), _scenes(fmnist_test, clutter=3)
    for index in (0, 1, 9999):
        torch.testing.assert_close(first[index][0], again[index][0], rtol=0, atol=0)
        torch.testing.assert_close(first[index][0], first[index][0], rtol=0, atol=0)
    assert not torch.equal(first[0][0], first[1][0])


def test_seeds_change_layout(fmnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    seed0, seed1 = _scenes(fmnist_test, seed=0), _scenes(fmnist_test, seed=1)
    moved = sum(seed0.box(i) != seed1.box(i) for i in range(20))
    assert moved >= 18
    assert not torch.equal(seed0[0][0], seed1[0][0])


@pytest.mark.parametrize("config", [{}, {"item_scale": 1.5}, {"item_scale": 0.6, "canvas": 48}, {"noise": 0.0}])
def test_box_is_tight_and_exact(fmnist_test: tuple[np.ndarray, np.ndarray], config: dict[str, float]) -> None:
    scenes, blank = _scenes(fmnist_test, **config), _scenes(fmnist_test, blank=True, **config)
    canvas = scenes.config.canvas
    for index in range(0, 10000, 400):
        x0, y0, x1, y1 = scenes.box(index)
        assert 0 <= x0 < x1 <= canvas and 0 <= y0 < y1 <= canvas
        # The item is the only difference from the background-only twin: zero outside the box, on every box edge.
        changed = np.abs(scenes.render(index) - blank.render(index)).sum(-1) > 1e-4  # [canvas, canvas]
        inside = np.zeros_like(changed)
        inside[y0:y1, x0:x1] = True
        assert not changed[~inside].any()
        box = changed[y0:y1, x0:x1]
        assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()


def test_clutter_is_outside_the_box_and_keeps_layout(fmnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    plain, cluttered = _scenes(fmnist_test), _scenes(fmnist_test, clutter=6)
    blank = _scenes(fmnist_test, blank=True, clutter=6)
    with_clutter_outside = 0
    for index in range(20):
        assert cluttered.box(index) == plain.box(index)
        x0, y0, x1, y1 = cluttered.box(index)
        changed = np.abs(cluttered.render(index) - blank.render(index)).sum(-1) > 1e-4
        changed[y0:y1, x0:x1] = False
        with_clutter_outside += changed.any()
    assert with_clutter_outside >= 18


def test_object_covers_small_part_of_canvas(fmnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    scenes = _scenes(fmnist_test)
    areas = [(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in map(scenes.box, range(0, 10000, 10))]
    assert 0.03 < np.mean(areas) / 80**2 < 0.25


def test_scene_config_errors(fmnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(MsvitEdgeError, match="does not fit"):
        _scenes(fmnist_test, canvas=20)
    with pytest.raises(MsvitEdgeError, match="noise"):
        SceneConfig(noise=-1)


@pytest.mark.parametrize(
    ("box", "cells"),
    [
        ((0, 0, 16, 16), [(0, 0)]),
        ((16, 16, 32, 32), [(1, 1)]),
        ((15, 0, 17, 1), [(0, 0), (0, 1)]),
        ((0, 70, 20, 80), [(4, 0), (4, 1)]),
        ((33, 10, 40, 40), [(0, 2), (1, 2), (2, 2)]),
    ],
)
def test_region_overlap_hand_made(box: tuple[int, int, int, int], cells: list[tuple[int, int]]) -> None:
    expected = np.zeros((5, 5), dtype=bool)
    expected[tuple(zip(*cells, strict=True))] = True
    np.testing.assert_array_equal(region_overlap(box, canvas=80, region=16), expected)


def test_region_overlap_matches_pixel_mask() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        x0, x1 = sorted(rng.choice(85, size=2, replace=False))
        y0, y1 = sorted(rng.choice(85, size=2, replace=False))
        mask = np.zeros((84, 84), dtype=bool)
        mask[y0:y1, x0:x1] = True
        expected = mask[:80, :80].reshape(5, 16, 5, 16).any(axis=(1, 3))  # the last 4 px are in no region
        np.testing.assert_array_equal(region_overlap((x0, y0, x1, y1), canvas=84, region=16), expected)


# ---------------------------------------------------------------------------------------------------------------------
# ImageFolder


def _save(path: Path, image: Image.Image, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kw)
    return path


def _make_folder(root: Path) -> Path:
    """Two classes; 'shoe' holds images of assorted sizes, modes and formats."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    _save(root / "shoe" / "a.png", rgb)
    _save(root / "shoe" / "b.jpg", rgb.convert("L").resize((17, 50)))
    _save(root / "shoe" / "c.png", rgb.convert("RGBA"))
    _save(root / "shoe" / "d.png", palette)
    _save(root / "shoe" / "e.jpg", rgb.convert("CMYK"))
    _save(root / "shoe" / "f.PNG", Image.fromarray(np.full((9, 12), 65535, dtype=np.uint16)))
    _save(root / "shoe" / "nested" / "g.bmp", rgb)
    _save(root / "shoe" / "h.webp", rgb)
    _save(root / "bag" / "x.jpeg", rgb.resize((300, 200)))
    (root / "shoe" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / ".cache").mkdir()
    return root


def test_image_folder_loads_any_mode_and_size(tmp_path: Path) -> None:
    dataset = ImageFolderDataset(_make_folder(tmp_path), 24, MEAN, STD)
    assert dataset.classes == ["bag", "shoe"]
    assert [(p.name, label) for p, label in dataset.samples][:3] == [("x.jpeg", 0), ("a.png", 1), ("b.jpg", 1)]
    assert len(dataset) == 9  # .DS_Store and the hidden folder are ignored
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.shape == (3, 24, 24) and image.dtype == torch.float32
        assert label == dataset.samples[index][1]
        assert image.min() >= -1.0 and image.max() <= 1.0


def test_image_folder_scales_16_bit(tmp_path: Path) -> None:
    levels = np.array([[0, 128 * 257], [65535, 65535]], dtype=np.uint16).repeat(8, 0).repeat(8, 1)
    _save(tmp_path / "gray" / "deep.png", Image.fromarray(levels))
    image = _denorm(ImageFolderDataset(tmp_path, 16, MEAN, STD)[0][0])
    torch.testing.assert_close(image[:, 12, :], torch.ones(3, 16))
    torch.testing.assert_close(image[:, 2, 12], torch.full((3,), 128 / 255))


def test_image_folder_non_image_file_is_named(tmp_path: Path) -> None:
    root = _make_folder(tmp_path)
    (root / "bag" / "notes.txt").write_text("not an image")
    with pytest.raises(MsvitEdgeError, match=re.escape("notes.txt: not an image file")):
        ImageFolderDataset(root, 24, MEAN, STD)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_image_folder_corrupt_image(tmp_path: Path, damage: str) -> None:
    root = _make_folder(tmp_path)
    broken = root / "bag" / "broken.jpg"
    source = (root / "bag" / "x.jpeg").read_bytes()
    broken.write_bytes(b"this is not a jpeg" * 10 if damage == "garbage" else source[: len(source) // 2])
    dataset = ImageFolderDataset(root, 24, MEAN, STD)
    with pytest.raises(MsvitEdgeError, match=re.escape("broken.jpg: ")):
        dataset[0]
    with pytest.warns(UserWarning, match=re.escape("broken.jpg: ")):
        skipping = ImageFolderDataset(root, 24, MEAN, STD, skip_corrupt=True)
    assert len(skipping) == len(dataset) - 1
    assert broken not in [path for path, _ in skipping.samples]


def test_image_folder_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(MsvitEdgeError, match="missing: dataset folder not found"):
        ImageFolderDataset(tmp_path / "missing", 24, MEAN, STD)
    (tmp_path / "loose.png").write_bytes(b"")
    with pytest.raises(MsvitEdgeError, match="no class subfolders"):
        ImageFolderDataset(tmp_path, 24, MEAN, STD)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MsvitEdgeError, match="empty: class folder has no images"):
        ImageFolderDataset(tmp_path, 24, MEAN, STD)


# ---------------------------------------------------------------------------------------------------------------------
# .npz


GRAY = np.random.default_rng(1).integers(0, 256, (4, 20, 20), dtype=np.uint8)
NPZ_LAYOUTS = {
    "NHW": GRAY,
    "NHWC": np.repeat(GRAY[..., None], 3, axis=-1),
    "NCHW": np.repeat(GRAY[:, None], 3, axis=1),
    "NHW1-float": GRAY[..., None] / 255.0,
    "N1HW-float32": (GRAY[:, None] / 255.0).astype(np.float32),
}


@pytest.mark.parametrize("size", [20, 12])
@pytest.mark.parametrize("layout", NPZ_LAYOUTS)
def test_npz_layouts_agree(tmp_path: Path, layout: str, size: int) -> None:
    path = tmp_path / "set.npz"
    np.savez(path, images=NPZ_LAYOUTS[layout], labels=np.array([0, 2, 1, 2]))
    dataset = NpzDataset(path, size, MEAN, STD)
    reference = NpzDataset(_npz(tmp_path / "ref.npz", images=GRAY, labels=np.array([0, 2, 1, 2])), size, MEAN, STD)
    assert len(dataset) == 4 and dataset.classes == ["0", "1", "2"]
    image, label = dataset[1]
    assert image.shape == (3, size, size) and image.dtype == torch.float32 and label == 2
    torch.testing.assert_close(image, reference[1][0])
    if size == 20:
        torch.testing.assert_close(_denorm(image)[0], torch.from_numpy(GRAY[1] / 255.0).float())


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"imgs": GRAY, "labels": np.arange(4)}, "missing array.*images.*has: imgs, labels"),
        ({"images": GRAY, "labels": np.arange(3)}, "3 labels for 4 images"),
        ({"images": GRAY, "labels": np.arange(4.0)}, "labels must be a 1-D integer array"),
        ({"images": GRAY[0], "labels": np.arange(20)}, r"images must be \[N,H,W\]"),
        ({"images": GRAY.astype(np.int32), "labels": np.arange(4)}, r"images must be uint8 .* got int32"),
        ({"images": GRAY * 1.0, "labels": np.arange(4)}, "float images must be in 0..1"),
    ],
)
def test_npz_errors_name_the_file(tmp_path: Path, arrays: dict[str, np.ndarray], problem: str) -> None:
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(MsvitEdgeError, match=rf"bad\.npz: {problem}"):
        NpzDataset(path, 20, MEAN, STD)


def test_npz_file_errors(tmp_path: Path) -> None:
    with pytest.raises(MsvitEdgeError, match=re.escape("absent.npz: file not found")):
        NpzDataset(tmp_path / "absent.npz", 20, MEAN, STD)
    np.save(tmp_path / "plain.npy", GRAY)
    (tmp_path / "plain.npy").rename(tmp_path / "plain.npz")
    with pytest.raises(MsvitEdgeError, match=re.escape("plain.npz: not an .npz archive")):
        NpzDataset(tmp_path / "plain.npz", 20, MEAN, STD)


# ---------------------------------------------------------------------------------------------------------------------
# open_dataset


def test_open_dataset_scenes(tmp_path: Path) -> None:
    demo = open_dataset("fashion-mnist-scenes", "test", 80, MEAN, STD)
    assert isinstance(demo, FashionMNISTScenes) and len(demo) == 10000
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).symlink_to(FASHION_MNIST_DIR / name)
    scene = SceneConfig(canvas=64, seed=3)
    custom = open_dataset(tmp_path, "test", 64, MEAN, STD, scene=scene)
    assert isinstance(custom, FashionMNISTScenes) and custom.config == scene and custom[0][0].shape == (3, 64, 64)
    assert open_dataset("fashion-mnist-scenes", "test", 96, MEAN, STD)[0][0].shape == (3, 96, 96)  # any model size
    with pytest.raises(MsvitEdgeError, match="image size 96 must equal the scene canvas 64"):
        open_dataset(tmp_path, "test", 96, MEAN, STD, scene=scene)
    with pytest.raises(MsvitEdgeError, match="train-images-idx3-ubyte"):
        open_dataset(tmp_path, "train", 64, MEAN, STD, scene=scene)


def test_open_dataset_files_and_folders(tmp_path: Path) -> None:
    npz = _npz(tmp_path / "set.npz", images=GRAY, labels=np.arange(4))
    assert isinstance(open_dataset(npz, "train", 20, MEAN, STD), NpzDataset)
    flat = _make_folder(tmp_path / "flat")
    with pytest.warns(UserWarning, match="no test/ subfolder"):  # the same images as its train split
        assert isinstance(open_dataset(flat, "test", 20, MEAN, STD), ImageFolderDataset)
    rgb = Image.new("RGB", (8, 8))
    _save(tmp_path / "split" / "train" / "a" / "1.png", rgb)
    _save(tmp_path / "split" / "test" / "b" / "1.png", rgb)
    assert open_dataset(tmp_path / "split", "train", 8, MEAN, STD).classes == ["a"]
    assert open_dataset(tmp_path / "split", "test", 8, MEAN, STD).classes == ["b"]
    with pytest.raises(MsvitEdgeError, match=re.escape("nothing.csv: not a dataset")):
        open_dataset(tmp_path / "nothing.csv", "train", 20, MEAN, STD)


def test_random_subset_draws_across_the_whole_data_set() -> None:
    subset = random_subset(FashionMNISTScenes(np.zeros((100, 28, 28), np.uint8), np.arange(100) % 10), 40)
    assert len(subset) == 40 and max(subset.indices) >= 40 and len(set(subset.indices)) == 40


def test_a_mistyped_split_is_refused_and_a_flat_folder_as_test_split_warns(tmp_path):
    from PIL import Image

    from msvit_edge.data import open_dataset
    from msvit_edge.errors import UsageError

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / cls / "0.png")
    with pytest.raises(UsageError, match="split must be one of train, test, got 'tset'"):
        open_dataset(tmp_path, "tset", 8, (0.5,) * 3, (0.5,) * 3)
    with pytest.warns(UserWarning, match="no test/ subfolder, so the test split is every image of the folder"):
        open_dataset(tmp_path, "test", 8, (0.5,) * 3, (0.5,) * 3)
    (tmp_path / "test" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "a" / "0.png")
    assert len(open_dataset(tmp_path, "test", 8, (0.5,) * 3, (0.5,) * 3)) == 1  # its own test/ folder: no warning
