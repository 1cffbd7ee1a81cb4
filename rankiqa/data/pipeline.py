"""tf.data input pipelines.

Rank batches are *references x levels*: ``images: [references * levels, crop, crop, 3]`` uint8,
level-major within each reference (rows r*L .. r*L+L-1 are reference r, pristine first), so that
``tf.reshape(scores, [references, levels])`` lines the levels up for the ranking operator. Every
level of one reference gets the same crop and flip: the ranking must be about distortion, not
content.
"""

import numpy as np
from PIL import Image

from rankiqa.compat import tf
from rankiqa.data.lists import ListError

AUTOTUNE = tf.data.experimental.AUTOTUNE


def decode_image(path):
    """Any format tf.io.decode_image reads (PNG, JPEG, BMP, GIF) -> uint8 ``[H, W, 3]``."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def check_sizes(groups, crop_size):
    """Raises ListError naming the first pristine image smaller than `crop_size` (header read only)."""
    for g in groups:
        with Image.open(g.paths[0]) as im:
            w, h = im.size
        if min(w, h) < crop_size:
            raise ListError(f"{g.paths[0]} is {w}x{h}, smaller than crop_size {crop_size}; "
                            "lower data.crop_size or use larger references")


def _decode_group(paths):
    # All levels of a group share the reference's size; tf.stack checks it at run time.
    return tf.stack([decode_image(paths[k]) for k in range(paths.shape[0])])


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
    static = image.shape.as_list()[:-3]
    crop.set_shape(static + [crop_size, crop_size, 3])
    return crop


def _random_crop_group(group, crop_size, seed):
    """Same crop and flip for every level; `seed` is a stateless ``[2]`` seed, so the result
    depends on the element, not on which thread of a parallel map drew first."""
    levels = group.shape[0]
    crop = _stateless_crop(group, crop_size, seed)
    crop.set_shape([levels, crop_size, crop_size, 3])
    flip = tf.random.stateless_uniform([], seed=seed[::-1]) < 0.5
    return tf.cond(flip, lambda: tf.reverse(crop, axis=[2]), lambda: crop)


def _element_seeds(ds, seed):
    """Pairs each element with a stateless seed ``[seed, position in the stream]``."""
    return ds.enumerate().map(
        lambda i, x: (x, tf.stack([tf.cast(seed, tf.int64), i])))


def _with_single_threaded_ops(ds):
    """Each tf.data op uses one thread: parallelism comes from parallel maps, and the
    training step's kernels keep the intra-op pool."""
    options = tf.data.Options()
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


def rank_dataset(groups, crop_size, images_per_batch, seed=0, cache=True, deterministic=True):
    """Infinite, shuffled rank batches for training.

    Args:
      groups: list of `RankGroup`, all with the same number of levels.
      crop_size: square crop side.
      images_per_batch: references per batch.
      seed: shuffle and crop seed.
      cache: keep decoded groups in memory (decode once; costs H*W*3*levels bytes per group).
      deterministic: keep element order through parallel maps (crops are per-element seeded
        either way), so the same seed gives the same batches.

    Returns:
      ``tf.data.Dataset`` of uint8 ``[images_per_batch * levels, crop, crop, 3]``.
    """
    levels = len(groups[0].paths)
    paths = np.array([g.paths for g in groups])
    ds = tf.data.Dataset.from_tensor_slices(paths)
    if not cache:
        # shuffle cheap file names before decoding rather than decoded images after it
        ds = ds.shuffle(len(groups), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.map(_decode_group, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if cache:
        ds = ds.cache().shuffle(len(groups), seed=seed, reshuffle_each_iteration=True).repeat()
    # A crop is a slice: cheaper than handing it to another thread, so it runs inline; the
    # training step keeps both cores (on 2 cores a parallel map here cost ~10% of a tiny step).
    ds = _element_seeds(ds, seed).map(lambda g, s: _random_crop_group(g, crop_size, s))
    ds = ds.batch(images_per_batch, drop_remainder=True)
    ds = ds.map(lambda b: tf.reshape(b, [images_per_batch * levels, crop_size, crop_size, 3]))
    return _with_single_threaded_ops(ds.prefetch(AUTOTUNE))


def eval_crops(image_shape, crop_size, crops):
    """Deterministic crop corners ``[(y, x)] * crops``: a centre crop, then a fixed-seed spread.

    The same corners for every level of a group, and for every run.
    """
    h, w = image_shape
    corners = [((h - crop_size) // 2, (w - crop_size) // 2)]
    rng = np.random.default_rng(1234)
    while len(corners) < crops:
        corners.append((int(rng.integers(0, h - crop_size + 1)),
                        int(rng.integers(0, w - crop_size + 1))))
    return corners


def eval_rank_dataset(groups, crop_size, crops):
    """One pass over held-out groups, each as ``[crops * levels, crop, crop, 3]`` (crop-major)."""
    levels = len(groups[0].paths)
    corners = []
    for g in groups:
        with Image.open(g.paths[0]) as im:
            corners.append(eval_crops((im.height, im.width), crop_size, crops))
    paths = np.array([g.paths for g in groups])
    ds = tf.data.Dataset.from_tensor_slices((paths, np.array(corners, dtype=np.int32)))

    def crop_all(paths, corners):
        group = _decode_group(paths)
        stacks = [group[:, corners[c, 0]:corners[c, 0] + crop_size,
                        corners[c, 1]:corners[c, 1] + crop_size] for c in range(crops)]
        return tf.reshape(tf.stack(stacks), [crops * levels, crop_size, crop_size, 3])

    return ds.map(crop_all, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def ensure_min_side(image, size):
    """Upscales ``[H, W, 3]`` so its shorter side is at least `size` (aspect kept); others pass."""
    shape = tf.shape(image)
    short = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
    scale = tf.maximum(1.0, float(size) / short)
    new = tf.cast(tf.math.ceil(tf.cast(shape[:2], tf.float32) * scale), tf.int32)
    resized = tf.cast(tf.clip_by_value(tf.image.resize(image, new), 0, 255), tf.uint8)
    return tf.cond(scale > 1.0, lambda: resized, lambda: image)


def _random_rescale(image, crop_size, seed):
    """Shrinks ``[H, W, 3]`` by a log-uniform factor between 1 and crop / shorter side (the
    whole picture), drawn from the stateless `seed`: the range of scales the ``pyramid`` crop
    mode evaluates."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    smallest = tf.math.log(float(crop_size) / tf.reduce_min(shape))
    scale = tf.exp(tf.random.stateless_uniform([], seed=seed + 2) * smallest)
    new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), crop_size)
    # antialias: shrinking without it would alias away the very detail quality depends on
    resized = tf.compat.v2.image.resize(image, new, antialias=True)  # v1 has no antialias
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def mos_dataset(paths, scores, crop_size, batch_size, seed=0, cache=False, deterministic=True,
                random_scale=False):
    """Infinite shuffled ``(images uint8 [B, crop, crop, 3], scores float32 [B])`` batches:
    one random crop and flip per image per visit (of the image shrunk by a random factor first,
    with `random_scale`)."""
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(paths), np.asarray(scores, np.float32)))
    if not cache:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.map(lambda p, s: (ensure_min_side(decode_image(p), crop_size), s),
                num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if cache:
        ds = ds.cache().shuffle(len(paths), seed=seed, reshuffle_each_iteration=True).repeat()

    def crop(item, element_seed):
        image, score = item
        if random_scale:
            image = _random_rescale(image, crop_size, element_seed)
        image = _stateless_crop(image, crop_size, element_seed)
        flip = tf.random.stateless_uniform([], seed=element_seed[::-1]) < 0.5
        return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image), score

    ds = _element_seeds(ds, seed).map(crop, num_parallel_calls=AUTOTUNE,
                                      deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(AUTOTUNE)
