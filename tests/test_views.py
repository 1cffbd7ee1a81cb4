import os

import numpy as np
import pytest
from PIL import Image, ImageFilter

from rankiqa.data import samples
from rankiqa.data import images as images_lib
from rankiqa.preprocessing import training
from rankiqa.preprocessing import preprocess
from rankiqa.preprocessing import views
from rankiqa.preprocessing.views import Views


def photo(h=96, w=128, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_grid_crops_spread_over_the_image_and_one_is_the_centre():
    assert preprocess.crop_corners(96, 128, 32, 1) == [(32, 48)]
    assert preprocess.crop_corners(96, 128, 32, 4) == [(0, 0), (0, 96), (64, 0), (64, 96)]


def test_pyramid_goes_from_native_centre_to_the_whole_picture():
    image = photo(96, 96)
    out = views.image_crops(image, 32, 3, mode="pyramid")
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], image[32:64, 32:64])  # native resolution
    whole = np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(out[2], whole)  # shorter side shrunk to the crop
    middle = np.asarray(Image.fromarray(image).resize((55, 55), Image.BILINEAR))  # 96 * (1/3)^.5
    np.testing.assert_array_equal(out[1], middle[11:43, 11:43])
    np.testing.assert_array_equal(views.image_crops(image, 32, 1, mode="pyramid")[0],
                                  image[32:64, 32:64])


def test_pyramid_keeps_the_aspect_and_upscales_small_images():
    assert views.image_crops(photo(40, 80), 48, 2, mode="pyramid").shape == (2, 48, 48, 3)


def test_unknown_view_mode_and_empty_views_are_refused():
    with pytest.raises(ValueError, match="choose from \\['grid', 'random', 'pyramid', 'centre_random'\\]"):
        views.image_crops(photo(), 32, 2, mode="spiral")
    with pytest.raises(ValueError, match="unknown view mode 'spiral'"):
        Views(32, 2, "spiral")
    with pytest.raises(ValueError, match="at least one crop"):
        Views(32, 0)


def test_centre_random_starts_at_the_centre_and_is_seeded():
    corners = preprocess.crop_corners(96, 128, 32, 3, "centre_random", seed=1234)
    assert corners[0] == (32, 48)
    assert corners == preprocess.crop_corners(96, 128, 32, 3, "centre_random", seed=1234)
    assert corners[1:] != preprocess.crop_corners(96, 128, 32, 3, "centre_random", seed=1)[1:]
    # random mode draws the same corners as centre_random after its centre
    assert preprocess.crop_corners(96, 128, 32, 2, "random", seed=5) == \
        preprocess.crop_corners(96, 128, 32, 3, "centre_random", seed=5)[1:]


def test_views_batch_files_with_the_one_view_seed(tmp_path):
    paths = []
    for k in range(2):
        paths.append(str(tmp_path / f"p{k}.png"))
        Image.fromarray(photo(seed=k)).save(paths[-1])
    batch = Views(32, 3, "random").batch(paths)
    assert batch.shape == (6, 32, 32, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[3:], Views(32, 3, "random").apply(
        photo(seed=1), seed=views.VIEW_SEED))
    assert not np.array_equal(Views(32, 3, "random").apply(photo(seed=1), seed=1),
                              batch[3:].astype(np.uint8))  # the seed matters: it is the one


def test_load_image_names_bad_files_and_shrinks(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(images_lib.BadImageError, match=r"bad\.jpg: not a readable image"):
        images_lib.load_image(str(tmp_path / "bad.jpg"))
    Image.fromarray(photo(60, 120)).save(tmp_path / "big.png")
    assert images_lib.load_image(str(tmp_path / "big.png"), max_side=40).shape == (20, 40, 3)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.png").write_bytes(b"")
    files, problems = images_lib.list_files([str(tmp_path), str(tmp_path / "nope.png")])
    assert [os.path.basename(f) for f in files] == ["bad.jpg", "big.png"]
    assert problems == [f"{tmp_path / 'nope.png'}: no such file or folder"]


def test_training_and_evaluation_upscale_alike():
    """The TF upscaling of the training path and PIL's of the evaluation path (both bicubic with
    half-pixel centres, shorter side to the crop) agree on a photo to within one grey level but
    for a few values at sharp edges, where their kernels' overshoot is rounded and clipped
    differently."""
    from rankiqa.compat import tf

    with Image.open(os.path.join(samples.skimage_data_dir(), samples.SAMPLE_PHOTOS[0])) as im:
        im = im.convert("RGB")
        im.thumbnail((30, 30))
        image = np.asarray(im)[:20]
    with tf.Graph().as_default(), tf.Session() as sess:
        trained = sess.run(training.upscale_to(tf.constant(image), 40))
        large = sess.run(training.upscale_to(tf.constant(photo(50, 60)), 40))
    evaluated = views.ensure_min_side(image, 40)
    assert trained.shape == evaluated.shape == (40, 60, 3) and trained.dtype == np.uint8
    differences = np.abs(trained.astype(int) - evaluated.astype(int))
    assert (differences > 1).mean() < 0.005 and differences.max() <= 6
    np.testing.assert_array_equal(large, photo(50, 60))  # large enough: unchanged


EVERY_MODE = ("g16.png", "l.png", "p.png", "la.png", "rgba.png", "rgb.jpg", "progressive.jpg",
              "l.jpg", "cmyk.jpg", "rotated.jpg", "rgb.tif", "rgb.webp", "rgb.bmp")


def every_mode(tmp_path, h=24, w=30):
    """Writes `EVERY_MODE` into `tmp_path`, each an `h` x `w` image (16-bit grey a third)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BICUBIC).filter(
        ImageFilter.GaussianBlur(2)))  # JPEG's IDCT rounding shows on smooth areas
    Image.fromarray(rng.integers(0, 65536, (h // 3, w // 3)).astype(np.uint16)).save(
        tmp_path / "g16.png")
    Image.fromarray(rgb).convert("L").save(tmp_path / "l.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    Image.fromarray(rgb).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(smooth).save(tmp_path / "rgb.jpg", quality=75)
    Image.fromarray(smooth).save(tmp_path / "progressive.jpg", quality=75, progressive=True)
    Image.fromarray(smooth).convert("L").save(tmp_path / "l.jpg", quality=75)
    Image.fromarray(smooth).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=75)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    Image.fromarray(rgb).save(tmp_path / "rgb.tif")  # no TensorFlow decoder: Pillow's
    Image.fromarray(rgb).save(tmp_path / "rgb.webp", lossless=True)
    Image.fromarray(rgb).save(tmp_path / "rgb.bmp")


def test_scoring_and_training_decode_every_mode_to_the_same_pixels(tmp_path):
    """The Pillow path (scoring, make-rank-data) and TensorFlow's (training) give identical
    pixels for 8/16-bit grey, palette, alpha, RGB/grey/CMYK/progressive JPEG, WebP, BMP and TIFF
    (which TensorFlow cannot decode: Pillow inside the pipeline); EXIF orientation
    is applied by neither."""
    from rankiqa.compat import tf

    every_mode(tmp_path)
    with tf.Graph().as_default(), tf.Session() as sess:
        path = tf.placeholder(tf.string)
        decoded = training.decode_image(path)
        for name in EVERY_MODE:
            ours = images_lib.load_image(str(tmp_path / name))
            theirs = sess.run(decoded, {path: str(tmp_path / name)})
            np.testing.assert_array_equal(ours, theirs, err_msg=name)
        # TensorFlow's default (fast) IDCT is what the training path must not use
        fast = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        assert np.any(sess.run(fast, {path: str(tmp_path / "rgb.jpg")})
                      != images_lib.load_image(str(tmp_path / "rgb.jpg")))
    assert images_lib.load_image(str(tmp_path / "rotated.jpg")).shape == (24, 30, 3)  # not rotated
    grey = images_lib.load_image(str(tmp_path / "g16.png"))
    with Image.open(tmp_path / "g16.png") as im:
        g16 = np.asarray(im).astype(np.int64)
    np.testing.assert_array_equal(grey, np.repeat((g16 >> 8)[..., None], 3, axis=-1).astype(
        np.uint8))  # the top 8 bits, not clipped to white


@pytest.mark.parametrize("size", [(24, 30), (90, 130)])  # upscaled to the crop; shrunk
def test_views_cut_from_pillow_images_are_the_views_of_arrays(tmp_path, size):
    """The scoring loop cuts views from the decoded Pillow image (`load_rgb_image`), everything
    else from arrays (`load_image`): the same pixels, for every mode, placement and size."""
    every_mode(tmp_path, *size)
    placed = views.PlacedViews(32, ((0.0, 0.5, 0.5, 0.0), (0.4, 0.1, 0.9, 1.0),
                                    (1.0, 0.5, 0.5, 1.0)))
    every_views = [Views(32, 2, "pyramid"), Views(32, 3, "pyramid"), Views(16, 3, "pyramid"),
                   Views(16, 4, "grid"), Views(16, 3, "random"), Views(16, 3, "centre_random"),
                   placed]
    for name in EVERY_MODE:
        array = images_lib.load_image(str(tmp_path / name))
        image = images_lib.load_rgb_image(str(tmp_path / name))
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), array, err_msg=name)
        for v in every_views:
            np.testing.assert_array_equal(v.apply(image), v.apply(array), err_msg=f"{name} {v}")
    with Image.open(tmp_path / "cmyk.jpg") as im:  # a PIL image given, not a path
        np.testing.assert_array_equal(np.asarray(images_lib.as_image(im, pillow=True)),
                                      images_lib.as_image(im))
    spec = {"views": {"crop": 32, "count": 2, "mode": "pyramid", "seed": 0}}
    served = preprocess.batch([str(tmp_path / "rgb.jpg")], spec)
    np.testing.assert_array_equal(served, Views(32, 2, "pyramid").apply(
        images_lib.load_image(str(tmp_path / "rgb.jpg"))).astype(np.float32))


def test_decompression_bombs_are_bad_images(tmp_path, monkeypatch):
    Image.fromarray(photo(60, 80)).save(tmp_path / "big.png")
    monkeypatch.setattr(images_lib, "MAX_PIXELS", 1000)
    with pytest.raises(images_lib.BadImageError, match=r"big.png: 80x60 pixels, over the limit of "
                                                  r"1,000 \(--max-pixels\)"):
        images_lib.load_image(str(tmp_path / "big.png"))


def test_the_image_check_cache_of_a_test_run_is_its_own():
    """The tests write their caches under their own XDG_CACHE_HOME (conftest), never a
    user's ~/.cache."""
    home_cache = os.path.join(os.path.expanduser("~"), ".cache")
    assert images_lib._cache_file("list.csv").startswith(os.environ["XDG_CACHE_HOME"] + os.sep)
    assert not images_lib._cache_file("list.csv").startswith(home_cache + os.sep)


def test_training_decodes_what_tensorflow_reads_without_pillow(tmp_path, monkeypatch):
    """PNG, GIF, BMP and WebP (and JPEG) stay in TensorFlow's decoders, outside the GIL; only
    the rest (TIFF) takes the Pillow path."""
    from rankiqa.compat import tf

    through_pillow = []
    decode = training._pillow_decode
    monkeypatch.setattr(training, "_pillow_decode",
                        lambda path: through_pillow.append(path) or decode(path))
    rgb = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    names = ["rgb.png", "rgb.gif", "rgb.bmp", "rgb.webp", "rgb.jpg", "rgb.tif"]
    for name in names:
        Image.fromarray(rgb).save(tmp_path / name)
    with tf.Graph().as_default(), tf.Session() as sess:
        path = tf.placeholder(tf.string)
        decoded = training.decode_image(path)
        for name in names:
            sess.run(decoded, {path: str(tmp_path / name)})
    assert [os.path.basename(p.decode()) for p in through_pillow] == ["rgb.tif"]
