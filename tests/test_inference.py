import numpy as np
import pytest
from PIL import Image

from rankiqa import inference


def photo(h=96, w=128, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_grid_crops_spread_over_the_image_and_one_is_the_centre():
    assert inference.crop_corners(96, 128, 32, 1) == [(32, 48)]
    assert inference.crop_corners(96, 128, 32, 4) == [(0, 0), (0, 96), (64, 0), (64, 96)]


def test_pyramid_goes_from_native_centre_to_the_whole_picture():
    image = photo(96, 96)
    views = inference.image_crops(image, 32, 3, mode="pyramid")
    assert views.shape == (3, 32, 32, 3) and views.dtype == np.uint8
    np.testing.assert_array_equal(views[0], image[32:64, 32:64])  # native resolution
    whole = np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(views[2], whole)  # shorter side shrunk to the crop
    middle = np.asarray(Image.fromarray(image).resize((55, 55), Image.BILINEAR))  # 96 * (1/3)^.5
    np.testing.assert_array_equal(views[1], middle[11:43, 11:43])
    np.testing.assert_array_equal(inference.image_crops(image, 32, 1, mode="pyramid")[0],
                                  image[32:64, 32:64])


def test_pyramid_keeps_the_aspect_and_upscales_small_images():
    views = inference.image_crops(photo(40, 80), 48, 2, mode="pyramid")
    assert views.shape == (2, 48, 48, 3)


def test_unknown_crop_mode_names_the_choices():
    with pytest.raises(ValueError, match="choose from \\['grid', 'random', 'pyramid'\\]"):
        inference.image_crops(photo(), 32, 2, mode="spiral")
