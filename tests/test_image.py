"""lumbar_d2.utils.image: the one resize rule (sizes and interpolation worked out by hand)."""
from __future__ import annotations

import numpy as np

from lumbar_d2.inference.series import square_pixels
from lumbar_d2.utils.image import fit_short_side, fit_width, resized, scaled


def test_shrinking_averages_and_enlarging_interpolates():
    line = np.zeros((4, 4), np.float32)
    line[:, 0] = 1.0  # a 1-px line: area-averaging keeps it at half strength
    np.testing.assert_allclose(resized(line, 2, 2), [[0.5, 0.0], [0.5, 0.0]])
    ramp = np.array([[0.0, 4.0]], np.float32)  # 1 x 2 -> 1 x 4, linear: 0, 1, 3, 4
    np.testing.assert_allclose(resized(ramp, 1, 4), [[0.0, 1.0, 3.0, 4.0]])


def test_sizes_round_and_keep_at_least_one_pixel():
    assert scaled(np.zeros((3, 10)), 0.1, 0.5).shape == (1, 5)       # 0.3 -> 1 px
    assert fit_width(np.zeros((100, 333, 3), np.uint8), 160).shape == (48, 160, 3)  # 48.05
    assert fit_short_side(np.zeros((640, 512), np.uint8), 256).shape == (320, 256)
    # 0.5 mm rows x 0.6 mm columns: columns stretched by 1.2 to square 0.5 mm pixels
    assert square_pixels(np.zeros((10, 10), np.uint8), (0.5, 0.6), 1).shape == (10, 12)
    assert square_pixels(np.zeros((10, 10), np.uint8), (0.5, 0.52), 1).shape == (10, 10)
