"""A stand-in for real opinion scores when no IQA dataset is at hand.

Each distorted image of a rank list is scored by MS-SSIM (``tf.image.ssim_multiscale``) against
its own pristine reference: a *full-reference metric*, not human opinion. It lets the demo run
stage two end to end on a new machine; its figures say that the chain works, not how well a model
agrees with people.
"""

import numpy as np

from rankiqa.compat import tf
from rankiqa.data import mos
from rankiqa.preprocessing import training

STANDIN_NAME = "MS-SSIM stand-in (full-reference metric, not human opinion)"


def msssim_items(groups):
    """ScoredImages for every image of `groups` (level 0 scores 1.0 by definition)."""
    items, seen_pristine = [], set()
    with tf.Graph().as_default():
        reference = tf.placeholder(tf.string, [])
        distorted = tf.placeholder(tf.string, [])
        ref_image = tf.cast(training.decode_image(reference), tf.float32)
        dist_image = tf.cast(training.decode_image(distorted), tf.float32)
        score = tf.image.ssim_multiscale(ref_image, dist_image, max_val=255.0)
        with tf.Session() as sess:
            for g in groups:
                for level, path in enumerate(g.paths):
                    if level == 0:
                        if path in seen_pristine:
                            continue  # one pristine row per reference, not one per family
                        seen_pristine.add(path)
                    value = 1.0 if level == 0 else float(
                        sess.run(score, {reference: g.paths[0], distorted: path}))
                    items.append(mos.ScoredImage(path, float(np.clip(value, 0, 1)), value,
                                                 g.reference, g.distortion if level else "pristine"))
    return items
