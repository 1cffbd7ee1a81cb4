import numpy as np
import pytest
from PIL import Image

from rankiqa.data import distortions


@pytest.fixture(scope="module")
def photo():
    """A 256² real photo: JPEG 2000's strongest ratios saturate on thumbnails."""
    import os

    from rankiqa.data import samples
    with Image.open(os.path.join(samples.skimage_data_dir(), "astronaut.png")) as im:
        return np.asarray(im.convert("RGB").resize((256, 256), Image.LANCZOS))


@pytest.mark.parametrize("kind", sorted(distortions.DISTORTIONS))
def test_every_family_gets_monotonically_worse(kind, photo):
    """Error against the pristine image grows with the level (quality falls monotonically)."""
    errors = []
    for level in range(distortions.LEVELS):
        out = distortions.distort(photo, kind, level, np.random.default_rng(0))
        assert out.dtype == np.uint8 and out.shape == photo.shape
        errors.append(np.mean((out.astype(np.float64) - photo) ** 2))
    assert errors[0] == 0
    assert all(a < b for a, b in zip(errors, errors[1:])), errors


def test_paper_levels_for_live():
    assert distortions.DISTORTIONS["gblur"][1] == (1.2, 2.5, 6.5, 15.2, 33.2)
    assert distortions.DISTORTIONS["wn"][1] == (0.001, 0.006, 0.022, 0.088, 1.0)
    assert distortions.DISTORTIONS["jpeg"][1] == (43, 12, 7, 4, 1)
    assert distortions.DISTORTIONS["jp2k"][1] == (52, 150, 343, 600, 1200)
    assert len(distortions.DISTORTIONS) - len(distortions.LIVE_DISTORTIONS) >= 6


def test_noise_is_deterministic_per_generator(photo):
    a = distortions.distort(photo, "wn", 3, np.random.default_rng(5))
    b = distortions.distort(photo, "wn", 3, np.random.default_rng(5))
    c = distortions.distort(photo, "wn", 3, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_white_noise_variance_is_on_unit_range():
    flat = np.full((200, 200, 3), 128, np.uint8)
    out = distortions.white_noise(flat, 0.001, np.random.default_rng(0)).astype(np.float64) / 255
    assert np.var(out) == pytest.approx(0.001, rel=0.1)


def test_unknown_family_and_level():
    with pytest.raises(ValueError, match="unknown distortion 'fog'"):
        distortions.distort(np.zeros((8, 8, 3), np.uint8), "fog", 1, None)
    with pytest.raises(ValueError, match="level must be in 0..5"):
        distortions.distort(np.zeros((8, 8, 3), np.uint8), "gblur", 6, None)


def test_family_sets_name_kadids_25_and_lists_are_checked():
    assert len(distortions.KADID_DISTORTIONS) == len(set(distortions.KADID_DISTORTIONS)) == 25
    assert distortions.parse_families("live") == ("gblur", "wn", "jpeg", "jp2k")
    assert distortions.parse_families("jpeg, kadid")[:3] == ("jpeg", "gblur", "lens_blur")
    assert len(distortions.parse_families("jpeg,kadid")) == 25  # each family once
    with pytest.raises(ValueError, match=r"unknown distortion 'fog'.*a set: \['all', 'camera', 'datasets', 'kadid', 'live'\]"):
        distortions.parse_families("gblur,fog")
    with pytest.raises(ValueError, match="no distortion family"):
        distortions.parse_families(" , ")


def test_camera_families_act_as_a_sensor_and_an_exposure_do():
    """Sensor noise is correlated between neighbouring pixels (demosaicing) and grows with the
    signal in linear light; too little light darkens and adds noise; too much clips."""
    rng = np.random.default_rng(0)
    flat = np.full((128, 128, 3), 128, np.uint8)
    noise = distortions.sensor_noise(flat, 0.01, rng).astype(np.float64)[..., 1] - 128
    neighbours = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]
    assert 0.2 < neighbours < 0.9
    dark, bright = (distortions._sensor_noise(np.full((64, 64, 3), v, np.float32), 0.01, rng)
                    for v in (0.05, 0.5))
    assert 2 < dark.std() ** -1 * bright.std() < 4  # shot noise: sd ~ sqrt(signal)
    gradient = np.tile(np.linspace(0, 255, 128, dtype=np.float32), (128, 1))
    ramp = np.repeat(gradient[..., None], 3, axis=2).astype(np.uint8)
    low = distortions.low_light(ramp, 3.0, rng).astype(np.float64)
    assert low.mean() < ramp.mean() - 10 and np.std(np.diff(low[:, 64:, 0], axis=0)) > 1
    over = distortions.overexposure(ramp, 2.0, rng)
    assert (over == 255).mean() > 0.3 and (ramp == 255).mean() < 0.02
    assert distortions.parse_families("camera") == distortions.CAMERA_DISTORTIONS
    # the datasets' families: what `all` named before the camera's own were added
    assert len(distortions.DATASET_DISTORTIONS) == 26
    assert set(distortions.DATASET_DISTORTIONS) == set(distortions.KADID_DISTORTIONS) | {"cnoise"}
