"""The built-in sample photos: natural images that scikit-image ships inside its wheel.

They let the main job and the tests run with no user data and no download. Grey-level photos are
stored as RGB; colour-only families (saturation) leave those unchanged and are skipped for them.
"""

import os

from PIL import Image

# Natural photographs among scikit-image's bundled files (synthetic charts and binary masks left
# out: they rank by artefacts no real photo has).
SAMPLE_PHOTOS = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
    "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "camera.png", "brick.png", "grass.png",
    "gravel.png", "moon.png", "coins.png", "cell.png", "clock_motion.png",
)


def skimage_data_dir():
    try:
        import skimage
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise RuntimeError("the sample photos come with scikit-image: pip install scikit-image") from e
    return os.path.join(os.path.dirname(skimage.__file__), "data")


def write_sample_photos(dest_dir, max_side=512):
    """Writes the sample photos as RGB PNGs into `dest_dir`, longest side at most `max_side`.

    Returns:
      list of written paths, sorted.
    """
    src = skimage_data_dir()
    os.makedirs(dest_dir, exist_ok=True)
    written = []
    for name in SAMPLE_PHOTOS:
        with Image.open(os.path.join(src, name)) as im:
            im = im.convert("RGB")
            if max(im.size) > max_side:
                scale = max_side / max(im.size)
                im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
            out = os.path.join(dest_dir, os.path.splitext(name)[0] + ".png")
            im.save(out)
            written.append(out)
    return sorted(written)
