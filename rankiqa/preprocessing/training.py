"""Training crops, in the graph: TensorFlow ops that tf.data maps over decoded photos.

slim's ``preprocess_for_train``: `decode_image` (JPEG with the IDCT Pillow uses), `upscale_to`
(bicubic, so the shorter side reaches the crop; the twin of
`rankiqa.preprocessing.preprocess.ensure_min_side`), `random_rescale`, and one stateless
random crop and flip per element (`crop_and_flip`; shared by every level of a ranking group,
`crop_and_flip_group`). Evaluation's views are `rankiqa.preprocessing.views`.
"""

from PIL import Image

from rankiqa.compat import tf
from rankiqa.preprocessing import preprocess


def _pillow_decode(path):
    """Formats TensorFlow has no decoder for (TIFF, say), read as every command reads them."""
    with Image.open(path.decode()) as im:
        return preprocess.to_rgb(im)


def _tf_reads(contents):
    """Whether tf.io.decode_image reads `contents`, by its first bytes: PNG, GIF, BMP, WebP
    (JPEG is tf.io.is_jpeg's). Compared as bytes: a regex would see them as UTF-8 and miss."""
    head = tf.strings.join([tf.strings.substr(contents, 0, 12), "\0" * 12])  # 12 bytes at least
    first4, first2 = tf.strings.substr(head, 0, 4), tf.strings.substr(head, 0, 2)
    webp = tf.logical_and(tf.equal(first4, b"RIFF"),
                          tf.equal(tf.strings.substr(head, 8, 4), b"WEBP"))
    return tf.logical_or(tf.reduce_any(tf.equal(first4, [b"\x89PNG", b"GIF8"])),
                         tf.logical_or(tf.equal(first2, b"BM"), webp))


def decode_image(path):
    """Any image file Pillow reads -> uint8 ``[H, W, 3]``: JPEG, PNG, GIF, BMP and WebP by
    TensorFlow, the rest (TIFF ...) by Pillow in the pipeline's thread."""
    contents = tf.io.read_file(path)

    def other():
        return tf.cond(
            _tf_reads(contents),
            lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
            lambda: tf.numpy_function(_pillow_decode, [path], tf.uint8, stateful=False))

    # JPEG with the accurate integer IDCT, the one Pillow's libjpeg uses: TensorFlow's default
    # (fast) IDCT differs from it by up to 4 grey levels, ~1 on average on BIQ2021's photos, so
    # training would see other pixels than scoring does. Costs nothing measurable next to the net.
    image = tf.cond(
        tf.io.is_jpeg(contents),
        lambda: tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE"),
        other)
    image.set_shape([None, None, 3])
    return image


def upscale_to(image, size):
    """Upscales uint8 ``[H, W, 3]`` (bicubic, aspect kept, rounded) so its shorter side is at
    least `size`; larger images pass unchanged. The TF twin of `ensure_min_side`."""
    shape = tf.shape(image)
    short = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
    scale = tf.maximum(1.0, float(size) / short)
    new = tf.maximum(tf.cast(tf.math.ceil(tf.cast(shape[:2], tf.float32) * scale), tf.int32), size)
    resized = tf.compat.v2.image.resize(image, new, method="bicubic")  # v1: legacy pixel centres
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    return tf.cond(scale > 1.0, lambda: resized, lambda: image)


def random_rescale(image, crop_size, seed):
    """Shrinks ``[H, W, 3]`` by a log-uniform factor between 1 and crop / shorter side (the
    whole picture), drawn from the stateless `seed`: the range of scales ``pyramid`` views
    evaluate."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    smallest = tf.math.log(float(crop_size) / tf.reduce_min(shape))
    scale = tf.exp(tf.random.stateless_uniform([], seed=seed + 2) * smallest)
    new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), crop_size)
    # antialias: shrinking without it would alias away the very detail quality depends on
    resized = tf.compat.v2.image.resize(image, new, antialias=True)  # v1 has no antialias
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _stateless_crop(image, crop_size, seed):
    """A square crop of ``[..., H, W, 3]`` at offsets drawn from the stateless ``[2]`` `seed`
    (the same for every leading index, i.e. every level of a group)."""
    shape = tf.shape(image)
    h, w = shape[-3], shape[-2]
    y = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=h - crop_size + 1,
                                    dtype=tf.int32)
    x = tf.random.stateless_uniform([], seed=seed + 1, minval=0, maxval=w - crop_size + 1,
                                    dtype=tf.int32)
    crop = image[..., y:y + crop_size, x:x + crop_size, :]
    crop.set_shape(image.shape.as_list()[:-3] + [crop_size, crop_size, 3])
    return crop


def _stateless_flip(image, seed):
    flip = tf.random.stateless_uniform([], seed=seed[::-1]) < 0.5
    return tf.cond(flip, lambda: tf.reverse(image, axis=[-2]), lambda: image)


def crop_and_flip(image, crop_size, seed, random_scale=False):
    """Training view of one image ``[H, W, 3]``: upscaled if small, shrunk by a random factor
    with `random_scale`, one random crop and horizontal flip, all drawn from the stateless
    ``[2]`` `seed` (so the result depends on the element, not on which thread drew first)."""
    image = upscale_to(image, crop_size)
    if random_scale:
        image = random_rescale(image, crop_size, seed)
    return _stateless_flip(_stateless_crop(image, crop_size, seed), seed)


def crop_and_flip_group(group, crop_size, seed):
    """Training view of a ranking group ``[levels, H, W, 3]``: the same crop and flip for every
    level, so the ranking is about distortion, not content."""
    crop = _stateless_crop(group, crop_size, seed)
    crop.set_shape([group.shape[0], crop_size, crop_size, 3])
    return _stateless_flip(crop, seed)
