"""Image reading, resizing, and the intrinsics/keypoint scaling that goes with it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from imatch_s2ld.data import parse_resize, read_image, resize_image
from imatch_s2ld.data.images import scale_keypoints, unscale_keypoints
from imatch_s2ld.errors import InputError
from imatch_s2ld.geometry.camera import scale_intrinsics


def test_read_image_rgb_and_gray(tmp_path):
    bgr = np.zeros((10, 12, 3), np.uint8)
    bgr[..., 2] = 200  # red in BGR
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    rgb = read_image(tmp_path / "red.png")
    assert rgb.shape == (10, 12, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [200, 0, 0]
    gray = read_image(tmp_path / "red.png", grayscale=True)
    assert gray.shape == (10, 12)


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match=r"missing\.png: image not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"junk\.jpg: cannot read image"):
        read_image(tmp_path / "junk.jpg")


@pytest.mark.parametrize(
    ("resize", "shape", "scale"),
    [
        (None, (683, 1024), (1.0, 1.0)),
        (512, (342, 512), (0.5, 342 / 683)),
        ((640, 480), (480, 640), (0.625, 480 / 683)),
        ("2048", (1366, 2048), (2.0, 2.0)),
    ],
)
def test_resize_image(resize, shape, scale):
    image = np.zeros((683, 1024, 3), np.uint8)
    out, s = resize_image(image, parse_resize(resize))
    assert out.shape[:2] == shape
    np.testing.assert_allclose(s, scale)


def test_parse_resize():
    assert parse_resize("none") is None
    assert parse_resize("640x480") == (640, 480)
    assert parse_resize(840) == 840
    for bad in ("big", "0", "3x", -1):
        with pytest.raises(InputError, match="--resize"):
            parse_resize(bad)


def test_resized_keypoints_agree_with_scaled_intrinsics():
    K = np.array([[900.0, 0, 511.5], [0, 905.0, 341.0], [0, 0, 1]])
    X = np.array([[0.3, -0.2, 4.0], [-1.0, 0.5, 6.0]])
    sx, sy = 0.5, 342 / 683
    p = (X @ K.T)[:, :2] / X[:, 2:]
    K2 = scale_intrinsics(K, sx, sy)
    p2 = (X @ K2.T)[:, :2] / X[:, 2:]
    np.testing.assert_allclose(scale_keypoints(p, (sx, sy)), p2, atol=1e-4)
    np.testing.assert_allclose(unscale_keypoints(p2, (sx, sy)), p, atol=1e-3)


def test_truncated_images_are_refused_by_name(tmp_path):
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (5, 5), 0)
    for ext in (".jpg", ".png"):
        data = cv2.imencode(ext, image)[1].tobytes()
        whole, cut = tmp_path / f"whole{ext}", tmp_path / f"cut{ext}"
        whole.write_bytes(data)
        cut.write_bytes(data[: len(data) // 3])  # an incomplete copy: decoders fill the rest with grey
        assert read_image(whole).shape == (120, 160, 3)
        with pytest.raises(InputError, match=rf"cut\{ext}: truncated image file"):
            read_image(cut)
    extra = tmp_path / "motion_photo.jpg"  # data appended after the image's end (motion photos) is fine
    extra.write_bytes((tmp_path / "whole.jpg").read_bytes() + bytes(500))
    assert read_image(extra).shape == (120, 160, 3)


def test_real_jpegs_are_complete():
    from pathlib import Path

    from imatch_s2ld.data.images import truncated

    strecha = Path(__file__).resolve().parents[2] / "shared" / "data" / "strecha"
    images = sorted(strecha.glob("*/images/*.jpg"))
    if not images:
        pytest.skip("../shared/data/strecha not present")
    assert not any(truncated(p.read_bytes()) for p in images)
    assert all(truncated(p.read_bytes()[: p.stat().st_size // 3]) for p in images[:5])
