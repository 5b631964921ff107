"""msvit_edge.bundle.preprocess: the one normalisation every data set, export and bundle uses, and its inverse."""

from __future__ import annotations

import numpy as np
import pytest

from msvit_edge.bundle.preprocess import check_stats, normalise, preprocess, record, resize_rule, to_uint8
from msvit_edge.errors import MsvitEdgeError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PIXELS = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)


def test_preprocess_scales_to_channels_first_and_normalises_per_channel():
    x = preprocess(PIXELS, MEAN, STD)
    assert x.shape == (3, 3, 8, 8) and x.dtype == np.float32
    b, y, c = 1, 5, 2
    assert x[b, c, y, 4] == pytest.approx((PIXELS[b, y, 4, c] / 255 - MEAN[c]) / STD[c], abs=1e-6)


def test_to_uint8_inverts_preprocess_exactly():
    np.testing.assert_array_equal(to_uint8(preprocess(PIXELS, MEAN, STD), MEAN, STD), PIXELS)


def test_to_uint8_clips_what_no_pixel_could_be():
    x = preprocess(PIXELS, MEAN, STD)
    x[0, 0, 0, 0], x[0, 1, 0, 0] = 100.0, -100.0
    out = to_uint8(x, MEAN, STD)
    assert out[0, 0, 0, 0] == 255 and out[0, 0, 0, 1] == 0


def test_normalise_takes_one_image_or_a_batch_alike():
    x01 = PIXELS.transpose(0, 3, 1, 2) / 255.0
    batch = normalise(x01, MEAN, STD)
    assert batch.shape == x01.shape and batch.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(batch[:, c], (x01[:, c] - MEAN[c]) / STD[c], atol=1e-6)
    np.testing.assert_array_equal(normalise(x01[1], MEAN, STD), batch[1])


def test_the_manifest_record_says_what_preprocess_does():
    rec = record(32, MEAN, STD)
    assert rec["size"] == 32 and rec["resize"] == resize_rule(32)
    m, s = (np.array(rec[k])[:, None, None] for k in ("mean", "std"))
    expected = (PIXELS.transpose(0, 3, 1, 2) * rec["scale"] - m) / s
    np.testing.assert_allclose(preprocess(PIXELS, MEAN, STD), expected, atol=1e-6)


@pytest.mark.parametrize("mean, std", [((0.5,) * 3, (0.5, 0.0, 0.5)), ((0.5,) * 2, (0.5,) * 3)])
def test_bad_statistics_are_refused(mean, std):
    with pytest.raises(MsvitEdgeError, match="mean and std need 3 values each with std > 0"):
        check_stats(mean, std, 3)
