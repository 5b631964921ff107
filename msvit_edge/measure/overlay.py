"""Gate overlays: an image with its coarse regions dimmed and its fine regions split 2x2. Torch-free (Pillow).

``write_overlays`` is the one writer (the demo's sheet through ``gate_overlays``, ``eval``'s per-image PNGs);
``write_segmentation_overlays`` puts a segmenter's predicted and ground-truth masks beside the gate's decisions
(``eval``'s, and ``bench``'s from an ``OverlaySample`` of each segmentation source's run).

The picture that explains MSViT: plain background stays coarse, the object gets fine tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from msvit_edge.bundle import Bundle, dense
from msvit_edge.bundle.preprocess import to_uint8
from msvit_edge.engines.ort import OnnxRuntimePipeline
from msvit_edge.engines.pipeline import PipelineOutput
from msvit_edge.measure.images import Images
from msvit_edge.model.config import MSViTConfig

FINE = (255, 60, 60)
SCALE = 4  # the demo's 80 px scenes are small on screen
CAPTION = 18  # px: the strip under a tile that names its class and token count
IGNORED = (255, 255, 255)  # mask pixels labelled the ignore index
GAP = 4  # px between the panels of a segmentation overlay
OVERLAYS = 8  # images per segmentation source that bench draws into its report's overlays/


def _voc_palette() -> np.ndarray:
    """PASCAL VOC's colour map [256, 3] (what VOC and MMSegmentation masks look like): class 0 black, neighbouring
    classes far apart (each class index's bits spread over the three channels' high bits)."""
    k = np.arange(256)
    colours = np.zeros((256, 3), np.int64)
    for bit in range(8):
        for channel in range(3):
            colours[:, channel] |= ((k >> (3 * bit + channel)) & 1) << (7 - bit)
    return colours.astype(np.uint8)


PALETTE = _voc_palette()


def overlay(pixels: np.ndarray, fine: np.ndarray, region: int, scale: int = SCALE) -> Image.Image:
    """``pixels`` uint8 [H, W, C] enlarged ``scale`` times, with each coarse region (``region`` px) drawn by its
    decision in ``fine`` [R] (row-major coarse grid)."""
    size, step = pixels.shape[0] * scale, region * scale
    grid = pixels.shape[0] // region
    image = Image.fromarray(pixels).resize((size, size), Image.NEAREST).convert("RGB")
    draw = ImageDraw.Draw(image, "RGBA")
    for r in range(grid * grid):
        x, y = (r % grid) * step, (r // grid) * step
        box = [x, y, x + step - 1, y + step - 1]
        if fine[r]:
            half = step // 2
            draw.rectangle(box, outline=(*FINE, 255), width=2)
            draw.line([x + half, y, x + half, y + step], fill=(*FINE, 200))
            draw.line([x, y + half, x + step, y + half], fill=(*FINE, 200))
        else:
            draw.rectangle(box, fill=(0, 0, 0, 90), outline=(90, 90, 90, 255))
    return image


def captioned(tile: Image.Image, caption: str) -> Image.Image:
    """``tile`` above a white strip with ``caption`` in it."""
    out = Image.new("RGB", (tile.width, tile.height + CAPTION), "white")
    out.paste(tile, (0, 0))
    ImageDraw.Draw(out).text((4, tile.height + 3), caption, fill=(0, 0, 0), font=ImageFont.load_default())
    return out


def write_overlays(
    images,
    fine: np.ndarray,
    region: int,
    folder: Path,
    columns: int = 4,
    sheet: bool = True,
    captions: list[str] | None = None,
) -> list[Path]:
    """One PNG per image in ``folder`` (``000.png``, ...) and, with ``sheet``, ``overlays.png``, a sheet of them
    all; returns the sheet's path first (when written), then the images'. The one overlay writer (demo, eval).

    Args:
        images: uint8 [N, H, W, C] (an array or a list of images).
        fine: bool [N, R], each region's decision.
        region: Coarse region side, px.
        folder: Created if missing.
        columns: Images per row of the sheet.
        sheet: Write the sheet too (only with at least one image).
        captions: A line under each image (its class and token count), or none.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tiles = [overlay(img, f, region) for img, f in zip(images, fine, strict=True)]
    if captions is not None:
        tiles = [captioned(tile, words) for tile, words in zip(tiles, captions, strict=True)]
    paths = []
    for i, tile in enumerate(tiles):
        paths.append(folder / f"{i:03d}.png")
        tile.save(paths[-1])
    if not (sheet and tiles):
        return paths
    w, h = tiles[0].size
    rows = -(-len(tiles) // columns)
    page = Image.new("RGB", (columns * w, rows * h), "white")
    for i, tile in enumerate(tiles):
        page.paste(tile, ((i % columns) * w, (i // columns) * h))
    page.save(folder / "overlays.png")
    return [folder / "overlays.png", *paths]


def mask_image(labels: np.ndarray, ignore_index: int, scale: int = SCALE) -> Image.Image:
    """A label map [H, W] in ``PALETTE``'s colours (labels past 255 wrap), ignored pixels white, enlarged ``scale``
    times."""
    labels = np.asarray(labels)
    colours = PALETTE[labels % 256]
    colours[labels == ignore_index] = IGNORED
    height, width = labels.shape
    return Image.fromarray(colours).resize((width * scale, height * scale), Image.NEAREST)


def write_segmentation_overlays(
    images, fine: np.ndarray, predicted, truth, region: int, folder: Path, ignore_index: int
) -> list[Path]:
    """One PNG per image in ``folder`` (``000.png``, ...): the gate's decisions (``overlay``), the predicted and the
    ground-truth masks (``mask_image``) side by side, each captioned.

    Args:
        images: uint8 [N, H, W, C].
        fine: bool [N, R], each region's decision.
        predicted: Predicted label maps [N, H, W].
        truth: Labelled maps [N, H, W].
        region: Coarse region side, px.
        folder: Created if missing.
        ignore_index: Label of unlabelled pixels.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (image, decisions, guess, label) in enumerate(zip(images, fine, predicted, truth, strict=True)):
        gate = f"gate: {int(np.sum(decisions))}/{len(decisions)} fine"
        panels = [
            captioned(overlay(image, decisions, region), gate),
            captioned(mask_image(guess, ignore_index), "predicted"),
            captioned(mask_image(label, ignore_index), "ground truth"),
        ]
        strip = Image.new("RGB", (sum(p.width for p in panels) + GAP * 2, panels[0].height), "white")
        for k, panel in enumerate(panels):
            strip.paste(panel, (k * (panel.width + GAP), 0))
        paths.append(folder / f"{i:03d}.png")
        strip.save(paths[-1])
    return paths


def gate_overlays(bundle: Bundle, folder: Path, n: int = 8, class_names: tuple[str, ...] | None = None) -> list[Path]:
    """Overlays of the bundle's first ``n`` validation images, with their sheet, each captioned with its class, its
    token count and, where it differs, the predicted class: the gate's decisions as the ONNX Runtime pipeline makes
    them (a region is fine where its gate probability exceeds the bundle's threshold)."""
    ref = bundle.reference()
    with OnnxRuntimePipeline(bundle) as pipe:
        out = pipe(bundle.preprocess(ref.images[:n]), bundle.threshold)
    vit = MSViTConfig.from_dict(bundle.manifest["model"]).vit
    predicted = out.logits.argmax(1)
    captions = [
        caption(int(label), int(guess), int(count), class_names)
        for label, guess, count in zip(ref.labels[:n], predicted, out.counts, strict=True)
    ]
    fine = dense.fine_regions(out.probs, bundle.threshold)
    return write_overlays(ref.images[:n], fine, 2 * vit.patch_size, folder, captions=captions)


def caption(label: int, predicted: int, tokens: int, class_names: tuple[str, ...] | None = None) -> str:
    """ "Trouser: 47 tokens", and ", predicted Dress" where the model got it wrong."""

    def name(k: int) -> str:
        return class_names[k] if class_names and k < len(class_names) else f"class {k}"

    wrong = "" if predicted == label else f", predicted {name(predicted)}"
    return f"{name(label)}: {tokens} tokens{wrong}"


@dataclass(frozen=True)
class OverlaySample:
    """What one dense source's overlays draw (``overlay.write_segmentation_overlays``): a few images, the gate's
    decisions on them, the predicted and the ground-truth label maps."""

    images: np.ndarray  # uint8 [n, S, S, C]
    fine: np.ndarray  # bool [n, R]
    predicted: np.ndarray  # [n, S, S]
    truth: np.ndarray  # [n, S, S], unlabelled pixels dense.IGNORED
    region: int  # px side of a coarse region


def overlay_sample(out: PipelineOutput, images: Images, threshold: float, mean, std, region: int) -> OverlaySample:
    """The first ``OVERLAYS`` images of a dense source's run, as its overlays draw them."""
    n = min(OVERLAYS, len(out.logits))
    truth = images.labels[:n]
    pixels = to_uint8(images.x[:n], mean, std)
    predicted = dense.pixel_labels(out.logits[:n], truth.shape[-1])
    return OverlaySample(pixels, dense.fine_regions(out.probs[:n], threshold), predicted, truth, region)
