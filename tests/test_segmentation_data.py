"""Segmentation data: Fashion-MNIST scenes with per-pixel labels, and users' images/ + masks/ folders with their
one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from msvit_edge.data import (
    FASHION_MNIST_DIR,
    SCENE_MASK_CLASSES,
    FashionMNISTSceneMasks,
    FashionMNISTScenes,
    SceneConfig,
    boundary_regions,
    load_fashion_mnist,
    open_segmentation_dataset,
    region_overlap,
    segmentation_classes,
)
from msvit_edge.errors import MsvitEdgeError

MEAN = STD = (0.5, 0.5, 0.5)
needs_fmnist = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="needs the dataset-fashion-mnist package")


@pytest.fixture(scope="module")
def fmnist_test() -> tuple[np.ndarray, np.ndarray]:
    return load_fashion_mnist(split="test")


# ---------------------------------------------------------------------------------------------------------------------
# Scenes


@needs_fmnist
@pytest.mark.parametrize("config", [{}, {"clutter": 3}, {"item_scale": 1.5, "canvas": 96}])
def test_scene_labels_are_exactly_the_pixels_the_item_changed(fmnist_test, config):
    images, labels = fmnist_test
    scenes = FashionMNISTSceneMasks(images[:20], labels[:20], SceneConfig(**config))
    for i in range(20):
        blanked = images[:20].copy()
        blanked[i] = 0  # the same scene without its item; clutter (from the other items) stays
        mask = scenes.mask(i)
        changed = (scenes.render(i) != FashionMNISTScenes(blanked, labels[:20], SceneConfig(**config)).render(i)).any(
            -1
        )
        assert np.array_equal(mask > 0, changed)
        assert set(np.unique(mask)) == {0, 1 + labels[i]}
        rows, cols = np.nonzero(mask)
        assert scenes.box(i) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


@needs_fmnist
def test_scene_masks_are_the_classification_scenes_with_label_maps(fmnist_test):
    images, labels = fmnist_test
    masks, scenes = FashionMNISTSceneMasks(images, labels), FashionMNISTScenes(images, labels)
    image, label_map = masks[7]
    assert torch.equal(image, scenes[7][0]) and label_map.dtype == torch.int64 and label_map.shape == (80, 80)
    masks.set_epoch(3)
    scenes.set_epoch(3)
    assert torch.equal(masks[7][0], scenes[7][0]) and not torch.equal(masks[7][1], label_map)
    assert masks.classes == SCENE_MASK_CLASSES and len(masks.classes) == 11 and masks.classes[0] == "background"


@needs_fmnist
def test_the_scenes_spec_opens_both_splits_with_eleven_classes():
    test = open_segmentation_dataset("fashion-mnist-scenes", "test", 80, MEAN, STD)
    assert isinstance(test, FashionMNISTSceneMasks) and len(test) == 10000 and test.ignore_index == 255
    assert len(open_segmentation_dataset("fashion-mnist-scenes", "train", 80, MEAN, STD)) == 60000
    assert segmentation_classes("fashion-mnist-scenes") == SCENE_MASK_CLASSES


# ---------------------------------------------------------------------------------------------------------------------
# Users' folders


def _pair(root: Path, name: str, mask: Image.Image, image: Image.Image | None = None) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    (image or Image.new("RGB", mask.size, (90, 90, 90))).save(root / "images" / f"{name}.png")
    mask.save(root / "masks" / f"{name}.png")


def _halves(width: int = 40, height: int = 30, left: int = 1, right: int = 2) -> np.ndarray:
    labels = np.full((height, width), left, np.uint8)
    labels[:, width // 2 :] = right
    return labels


def _palette(labels: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> Image.Image:
    image = Image.fromarray(labels, "P")
    palette = [0] * 768
    for index, rgb in colours.items():
        palette[3 * index : 3 * index + 3] = rgb
    image.putpalette(palette)
    return image


def test_a_folder_pairs_images_with_masks_and_crops_both_alike(tmp_path):
    image = np.zeros((30, 40, 3), np.uint8)
    image[:, 20:] = 255  # bright right half, class 2
    _pair(tmp_path, "a", Image.fromarray(_halves()), Image.fromarray(image))
    _pair(tmp_path, "b", Image.fromarray(np.full((30, 40), 255, np.uint8)))  # all unlabelled
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    data = open_segmentation_dataset(tmp_path, "train", 16, MEAN, STD)
    assert data.classes == ["background", "cat", "dog"] and len(data) == 2
    pixels, labels = data[0]
    assert pixels.shape == (3, 16, 16) and labels.shape == (16, 16) and labels.dtype == torch.int64
    assert torch.equal(labels == 2, pixels[0] > 0)  # the image's bright half is exactly the mask's class 2
    assert torch.all(data[1][1] == 255)


def test_palette_masks_read_as_indices_or_by_the_classes_colours(tmp_path):
    labels = _halves(left=0, right=1)
    labels[15, 10] = 255  # VOC's unlabelled border: ignored whatever its colour
    _pair(tmp_path, "voc", _palette(labels, {0: (0, 0, 0), 1: (128, 0, 0), 255: (224, 224, 192)}))
    data = open_segmentation_dataset(tmp_path, "train", 30, MEAN, STD, num_classes=2)
    indices = data[0][1]
    assert data.classes == ["0", "1"] and set(np.unique(indices.numpy())) == {0, 1, 255}
    (tmp_path / "classes.txt").write_text("# labelmap\nbackground:0,0,0::\ncar:128,0,0::\n")
    reordered = _palette(1 - _halves(left=0, right=1), {1: (0, 0, 0), 0: (128, 0, 0)})  # a re-saved palette
    _pair(tmp_path, "voc", reordered)
    by_colour = open_segmentation_dataset(tmp_path, "train", 30, MEAN, STD)[0][1]
    assert torch.equal(by_colour, torch.where(indices == 255, 0, indices))


def test_splits_sit_in_either_layout_and_test_answers_to_val(tmp_path):
    _pair(tmp_path / "train", "a", Image.fromarray(_halves()))
    _pair(tmp_path / "val", "b", Image.fromarray(_halves()))
    train = open_segmentation_dataset(tmp_path, "train", 16, MEAN, STD, num_classes=3)
    test = open_segmentation_dataset(tmp_path, "test", 16, MEAN, STD, num_classes=3)
    assert [p.name for p, _ in train.samples] == ["a.png"] and [p.parent.parent.name for p, _ in test.samples] == [
        "val"
    ]
    other = tmp_path / "other"
    for split in ("train", "test"):
        (other / "images" / split).mkdir(parents=True)
        (other / "masks" / split).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(other / "images" / split / "x.jpg")
        Image.new("L", (8, 8)).save(other / "masks" / split / "x.png")
    assert open_segmentation_dataset(other, "test", 8, MEAN, STD, num_classes=1).samples[0][0].parent.name == "test"
    (tmp_path / "flat").mkdir()
    _pair(tmp_path / "flat", "c", Image.fromarray(_halves()))
    with pytest.warns(UserWarning, match="no test/ or val/ split"):
        open_segmentation_dataset(tmp_path / "flat", "test", 16, MEAN, STD, num_classes=3)


def _size_mismatch(root: Path) -> None:
    _pair(root, "a", Image.fromarray(_halves()), Image.new("RGB", (41, 30)))


def _class_out_of_range(root: Path) -> None:
    _pair(root, "a", Image.fromarray(_halves(right=7)))


def _unknown_palette_colour(root: Path) -> None:
    _pair(root, "a", _palette(_halves(), {1: (1, 2, 3), 2: (0, 255, 0)}))


def _colour_mask_without_colours(root: Path) -> None:
    _pair(root, "a", Image.new("RGB", (8, 8)))


BAD_MASKS = {
    "size mismatch": (_size_mismatch, "mask is 40x30 but its image a.png is 41x30"),
    "class out of range": (_class_out_of_range, r"class 7 at pixel \(x=20, y=0\) is out of range: 3 classes"),
    "unknown palette colour": (
        _unknown_palette_colour,
        r"palette colours that are no class's in classes.txt: \(1, 2, 3\)",
    ),
    "colour mask, no colours": (
        _colour_mask_without_colours,
        r"colour \(RGB\) mask, but classes.txt gives no class colours",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_MASKS))
def test_a_bad_mask_is_one_line_naming_the_file(tmp_path, case):
    make, problem = BAD_MASKS[case]
    make(tmp_path)
    colours = case == "unknown palette colour"
    (tmp_path / "classes.txt").write_text("bg:0,0,0\ncat:255,0,0\ndog:0,255,0\n" if colours else "bg\ncat\ndog\n")
    data = open_segmentation_dataset(tmp_path, "train", 16, MEAN, STD)
    with pytest.raises(MsvitEdgeError, match=problem) as info:
        data[0]
    assert info.value.path == tmp_path / "masks" / "a.png" and "\n" not in str(info.value)


def _write(name: str, content: str):
    return lambda root: (root / name).write_text(content)


def _image(mode: str, name: str):
    return lambda root: Image.new(mode, (8, 8)).save(root / name)


@pytest.mark.parametrize(
    ("make", "file", "problem"),
    [
        (_image("L", "masks/orphan.png"), "masks/orphan.png", "mask without an image: no images/orphan"),
        (_image("RGB", "images/lonely.jpg"), "images/lonely.jpg", "image without a mask: no masks/lonely.png"),
        (_image("L", "masks/a.jpg"), "masks/a.jpg", "masks must be PNG"),
        (_write("classes.txt", "bg:0,0,0\ncat\n"), "classes.txt", "colours for some classes only"),
        (_write("classes.txt", "bg:0,0\n"), "classes.txt", "line 1: colour '0,0' is not r,g,b"),
        (_write("classes.txt", "a\nb\nc\nd\n"), "classes.txt", "names 4 classes; the model has 3"),
    ],
)
def test_a_bad_folder_is_one_line_naming_the_file(tmp_path, make, file, problem):
    _pair(tmp_path, "a", Image.fromarray(_halves()))
    make(tmp_path)
    with pytest.raises(MsvitEdgeError, match=problem) as info:
        open_segmentation_dataset(tmp_path, "train", 16, MEAN, STD, num_classes=3)
    assert info.value.path == tmp_path / file and "\n" not in str(info.value)


def test_a_folder_without_class_count_or_layout_says_what_it_needs(tmp_path):
    _pair(tmp_path, "a", Image.fromarray(_halves()))
    with pytest.raises(MsvitEdgeError, match="how many classes"):
        open_segmentation_dataset(tmp_path, "train", 16, MEAN, STD)
    (tmp_path / "plain").mkdir()
    with pytest.raises(MsvitEdgeError, match="not a segmentation dataset"):
        open_segmentation_dataset(tmp_path / "plain", "train", 16, MEAN, STD)


def test_boundary_regions_are_those_holding_two_classes_side_by_side():
    labels = np.zeros((8, 12), np.int64)
    labels[1:3, 1:3] = 4  # inside region (0, 0) only
    labels[:, 8:] = 255  # unlabelled: no boundary with it
    expected = np.zeros((2, 3), bool)
    expected[0, 0] = True
    np.testing.assert_array_equal(boundary_regions(labels, 4), expected)
    labels[4:, 3] = 1  # a column at the edge of region (1, 0), touching region (1, 1)
    expected[1, :2] = True
    np.testing.assert_array_equal(boundary_regions(labels, 4), expected)


@needs_fmnist
def test_the_boundary_regions_of_a_scene_lie_in_its_box_grown_by_a_pixel(fmnist_test):
    scenes = FashionMNISTSceneMasks(*fmnist_test)
    for i in range(20):
        x0, y0, x1, y1 = scenes.box(i)
        regions = boundary_regions(scenes.mask(i), 16)
        assert regions.any() and not (regions & ~region_overlap((x0 - 1, y0 - 1, x1 + 1, y1 + 1), 80, 16)).any()
