"""tf.data input pipelines for training; the views themselves live in `rankiqa.preprocessing.views`.

Rank batches are *references x levels*: ``images: [references * levels, crop, crop, 3]`` uint8,
level-major within each reference (rows r*L .. r*L+L-1 are reference r, pristine first), so that
``tf.reshape(scores, [references, levels])`` lines the levels up for the ranking operator. Every
level of one reference gets the same crop and flip: the ranking must be about distortion, not
content.
"""

import numpy as np

from rankiqa.compat import tf
from rankiqa.data import images as images_lib
from rankiqa.preprocessing import training
from rankiqa.preprocessing import views
from rankiqa.data.lists import ListError

AUTOTUNE = tf.data.experimental.AUTOTUNE


def check_sizes(groups, crop_size):
    """Raises ListError naming the first pristine image smaller than `crop_size` (header read only)."""
    for g in groups:
        w, h = images_lib.image_size(g.paths[0])
        if min(w, h) < crop_size:
            raise ListError(f"{g.paths[0]} is {w}x{h}, smaller than crop_size {crop_size}; "
                            "lower data.crop_size or use larger references")


def _decode_group(paths):
    # All levels of a group share the reference's size; tf.stack checks it at run time.
    return tf.stack([training.decode_image(paths[k]) for k in range(paths.shape[0])])


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


def rank_dataset(groups, crop_size, references_per_batch, seed=0, cache=True,
                 deterministic=True):
    """Infinite, shuffled rank batches for training.

    Args:
      groups: list of `RankGroup`, all with the same number of levels.
      crop_size: square crop side.
      references_per_batch: groups per batch (each brings all its levels).
      seed: shuffle and crop seed.
      cache: keep decoded groups in memory (decode once; costs H*W*3*levels bytes per group).
      deterministic: keep element order through parallel maps (crops are per-element seeded
        either way), so the same seed gives the same batches.

    Returns:
      ``tf.data.Dataset`` of uint8 ``[references_per_batch * levels, crop, crop, 3]``.
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
    ds = _element_seeds(ds, seed).map(lambda g, s: training.crop_and_flip_group(g, crop_size, s))
    ds = ds.batch(references_per_batch, drop_remainder=True)
    ds = ds.map(lambda b: tf.reshape(b, [references_per_batch * levels, crop_size, crop_size, 3]))
    return _with_single_threaded_ops(ds.prefetch(AUTOTUNE))


def mos_dataset(paths, scores, crop_size, batch_size, seed=0, cache=False, deterministic=True,
                random_scale=False):
    """Infinite shuffled ``(images uint8 [B, crop, crop, 3], scores float32 [B])`` batches:
    one training view per image per visit (`rankiqa.preprocessing.training.crop_and_flip`)."""
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(paths), np.asarray(scores, np.float32)))
    if not cache:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.map(lambda p, s: (training.decode_image(p), s), num_parallel_calls=AUTOTUNE,
                deterministic=deterministic)
    if cache:
        ds = ds.cache().shuffle(len(paths), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = _element_seeds(ds, seed).map(
        lambda item, s: (training.crop_and_flip(item[0], crop_size, s, random_scale), item[1]),
        num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(AUTOTUNE)


def pair_dataset(lefts, rights, outcomes, crop_size, pairs_per_batch, seed=0,
                 deterministic=True, random_scale=False):
    """Infinite shuffled ``(images uint8 [2P, crop, crop, 3], outcomes float32 [P])`` batches
    of P pairs: rows 2p and 2p+1 are pair p's left and right photo, each its own training view
    (the photos differ, so their views need not line up), outcome 1 when left was chosen."""
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(lefts), np.asarray(rights),
                                             np.asarray(outcomes, np.float32)))
    ds = ds.shuffle(len(lefts), seed=seed, reshuffle_each_iteration=True).repeat()

    def views(left, right, outcome, s):
        other = tf.stack([s[0] + 7919, s[1]])  # the right photo's own draw
        return tf.stack([
            training.crop_and_flip(training.decode_image(left), crop_size, s, random_scale),
            training.crop_and_flip(training.decode_image(right), crop_size, other,
                                   random_scale)]), outcome

    ds = _element_seeds(ds, seed).map(lambda item, s: views(*item, s),
                                      num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(pairs_per_batch, drop_remainder=True).map(
        lambda x, o: (tf.reshape(x, [2 * pairs_per_batch, crop_size, crop_size, 3]), o))
    return ds.prefetch(AUTOTUNE)


def teacher_dataset(paths, specs, scores, crop_size, batch_size, seed=0, deterministic=True):
    """Infinite shuffled ``(images uint8 [B, crop, crop, 3], scores float32 [B])``: the views a
    teacher scored (`rankiqa teach`), each placed by its spec ``(scale, y, x, flip)`` from the
    decoded photo (`rankiqa.preprocessing.preprocess.placed_view`), the very pixels the teacher saw."""
    def place(path, spec):
        view = tf.numpy_function(
            lambda p, s: views.spec_views(p.decode("utf-8", "surrogateescape"), [s],
                                          crop_size)[0],
            [path, spec], tf.uint8, stateful=False)
        view.set_shape([crop_size, crop_size, 3])
        return view

    ds = tf.data.Dataset.from_tensor_slices((np.asarray(paths), np.asarray(specs, np.float32),
                                             np.asarray(scores, np.float32)))
    ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.map(lambda p, v, s: (place(p, v), s), num_parallel_calls=AUTOTUNE,
                deterministic=deterministic)
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)
