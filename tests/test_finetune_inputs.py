"""Inputs of fine-tuning on an unlabeled video: frames (folder / video file) and intrinsics."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import raises_one_line
from imatch_s2ld.errors import InputError
from imatch_s2ld.finetune import (
    exif_intrinsics,
    load_intrinsics,
    natural_key,
    open_video,
    open_videos,
    prior_intrinsics,
    resolve_intrinsics,
)
from imatch_s2ld.finetune import video as video_module

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TUM = SHARED / "tum_fr3_sequence"
STRECHA_CAMERAS = SHARED / "strecha" / "fountain-P11" / "sparse" / "cameras.txt"

EXIF_IFD, F35, FOCAL, XRES, UNIT = 0x8769, 0xA405, 0x920A, 0xA20E, 0xA210


def write_frames(folder: Path, names: list[str], size: tuple[int, int] = (32, 24)) -> list[Path]:
    """Frame ``k`` of ``names`` is a constant image of value ``10 * k`` (BGR, ``size`` = (W, H))."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, name in enumerate(names):
        cv2.imwrite(str(folder / name), np.full((size[1], size[0], 3), 10 * k, np.uint8))
        paths.append(folder / name)
    return paths


def write_video(path: Path, n: int, size: tuple[int, int] = (64, 48)) -> Path:
    """MJPG .avi whose frame ``k`` has the constant value ``20 * k``; skips the test without the codec."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    if not writer.isOpened():
        pytest.skip("OpenCV cannot write MJPG .avi here")
    for k in range(n):
        writer.write(np.full((size[1], size[0], 3), 20 * k, np.uint8))
    writer.release()
    return path


def write_jpeg_with_exif(path: Path, size: tuple[int, int], exif_tags: dict[int, object]) -> Path:
    """A JPEG of ``size`` (W, H) whose EXIF sub-IFD holds ``exif_tags``."""
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD).update(exif_tags)
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(path, exif=exif)
    return path


# ---------------------------------------------------------------------------------------------- frames


def test_natural_sort_and_ignored_files(tmp_path):
    write_frames(tmp_path, ["frame10.png", "frame2.png", "frame1.png", "Frame3.JPG", "frame4.jpeg"])
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / ".frame0.jpg").write_bytes(b"macOS resource fork")
    (tmp_path / "sub.png").mkdir()
    src = open_video(tmp_path)
    assert src.names == ("frame1.png", "frame2.png", "Frame3.JPG", "frame4.jpeg", "frame10.png")
    assert src.is_folder and len(src) == 5 and src.original_size == src.image_size == (32, 24)
    assert sorted(["a10", "a9", "b1", "a01b"], key=natural_key) == ["a01b", "a9", "a10", "b1"]


def test_stride_max_frames_and_lazy_frames(tmp_path):
    names = [f"img_{k}.png" for k in range(10)]
    write_frames(tmp_path, names)
    src = open_video(tmp_path, stride=3)
    assert src.names == ("img_0.png", "img_3.png", "img_6.png", "img_9.png")
    assert src.frame_indices == (0, 3, 6, 9)
    src = open_video(tmp_path, stride=3, max_frames=3)
    assert src.names == ("img_0.png", "img_3.png", "img_6.png")
    gray = src.frame(2)
    assert gray.shape == (24, 32) and gray.dtype == np.float32
    np.testing.assert_allclose(gray, 60 / 255, atol=1e-6)
    rgb = src.frame_rgb(1)
    assert rgb.shape == (24, 32, 3) and rgb.dtype == np.uint8 and int(rgb[0, 0, 0]) == 30
    with pytest.raises(IndexError):
        src.frame(3)


@pytest.mark.parametrize(
    ("size", "resize", "expected"),
    [((64, 48), None, (64, 48)), ((64, 48), 32, (32, 24)), ((100, 33), 50, (50, 16)),
     ((33, 100), "50", (16, 50)), ((64, 48), (40, 20), (40, 20)), ((64, 48), "40x20", (40, 20))],
)
def test_resize_rule(tmp_path, size, resize, expected):
    write_frames(tmp_path, ["a.png", "b.png", "c.png"], size)
    src = open_video(tmp_path, resize=resize)
    assert src.original_size == size and src.image_size == expected
    assert src.frame(0).shape == (expected[1], expected[0])
    assert src.scale == (expected[0] / size[0], expected[1] / size[1])


def blob_image(centre: tuple[float, float], size: tuple[int, int], sigma: float = 4.0) -> np.ndarray:
    """(H, W, 3) uint8 with a Gaussian blob at sub-pixel ``centre`` (project pixel convention)."""
    x, y = np.meshgrid(np.arange(size[0]), np.arange(size[1]))
    g = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma**2))
    return np.repeat((255 * g).round().astype(np.uint8)[..., None], 3, axis=2)


def centroid(gray: np.ndarray) -> np.ndarray:
    """Intensity-weighted centroid (x, y) of a (H, W) image."""
    y, x = np.mgrid[: gray.shape[0], : gray.shape[1]]
    w = gray.astype(np.float64)
    return np.array([(w * x).sum(), (w * y).sum()]) / w.sum()


@pytest.mark.parametrize("resize", [80, (96, 40)])
def test_scale_intrinsics_moves_with_the_image(tmp_path, resize):
    K = np.array([[150.0, 0, 79.5], [0, 150.0, 59.5], [0, 0, 1]])
    X = np.array([0.12, -0.05, 1.0])
    p = (K @ X)[:2] / X[2]
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(tmp_path / name), blob_image(tuple(p), (160, 120)))
    src = open_video(tmp_path, resize=resize)
    K_new = src.scale_intrinsics(K)
    expected = (K_new @ X)[:2] / X[2]
    np.testing.assert_allclose(centroid(src.frame(0)), expected, atol=0.05)
    np.testing.assert_allclose(centroid(src.frame(1)), expected, atol=0.05)


def test_video_file_round_trip(tmp_path):
    path = write_video(tmp_path / "clip.avi", 8)
    src = open_video(path)
    assert not src.is_folder and len(src) == 8 and src.files == ()
    assert src.names[0] == "frame_000000" and src.original_size == (64, 48)
    for i in (3, 1, 7, 0):  # backwards reads reopen the file
        assert abs(float(src.frame(i).mean()) * 255 - 20 * i) < 3
    src = open_video(path, stride=2, max_frames=3, resize=32)
    assert src.names == ("frame_000000", "frame_000002", "frame_000004")
    assert src.image_size == (32, 24) and src.frame_rgb(2).shape == (24, 32, 3)
    assert abs(float(src.frame(2).mean()) * 255 - 80) < 3
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.frame(1), src.frame(1))


_REAL_CAPTURE = cv2.VideoCapture


class _CaptureWithCount:
    """Wraps ``cv2.VideoCapture``; the container reports ``COUNT`` frames (0: unknown)."""

    COUNT = 0.0

    def __init__(self, path: str) -> None:
        self._cap = _REAL_CAPTURE(path)

    def __getattr__(self, name: str):
        return getattr(self._cap, name)

    def get(self, prop_id: int) -> float:
        return self.COUNT if prop_id == cv2.CAP_PROP_FRAME_COUNT else self._cap.get(prop_id)


def test_video_frame_count_by_reading(tmp_path, monkeypatch):
    path = write_video(tmp_path / "clip.avi", 7)
    monkeypatch.setattr(video_module.cv2, "VideoCapture", _CaptureWithCount)
    assert len(open_video(path)) == 7


def test_video_decode_failure_names_the_index(tmp_path, monkeypatch):
    path = write_video(tmp_path / "clip.avi", 5)

    class TooMany(_CaptureWithCount):
        COUNT = 9.0  # the container claims more frames than it holds

    monkeypatch.setattr(video_module.cv2, "VideoCapture", TooMany)
    src = open_video(path)
    assert len(src) == 9 and src.frame(4).shape == (48, 64)
    raises_one_line(src.frame, 7, match=r"clip\.avi: cannot decode frame 5 of the video")
    raises_one_line(src.frame, 5, match=r"clip\.avi: cannot decode frame 5 of the video")


def test_frame_errors(tmp_path):
    raises_one_line(open_video, tmp_path / "nowhere", match=r"nowhere: video folder or file not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    raises_one_line(open_video, empty, match=r"empty: no frames in folder")
    two = tmp_path / "two"
    write_frames(two, ["a.png", "b.png"])
    raises_one_line(open_video, two, match=r"two: 2 frame\(s\) selected out of 2 .*at least 3")
    five = tmp_path / "five"
    write_frames(five, [f"f{k}.png" for k in range(5)])
    raises_one_line(open_video, five, stride=2, max_frames=2, match=r"five: 2 frame\(s\) selected out of 5")
    assert len(open_video(five, stride=2)) == 3

    mixed = tmp_path / "mixed"
    write_frames(mixed, ["f1.png", "f2.png"])
    write_frames(mixed, ["f3.png"], size=(30, 24))
    msg = raises_one_line(open_video, mixed,
                          match=r"f3\.png: frame size 30x24 differs from f1\.png \(32x24\)")
    assert "f3.png" in msg and "f1.png" in msg

    bad = tmp_path / "bad"
    write_frames(bad, ["f1.png", "f2.png", "f3.png"])
    (bad / "f2.png").write_bytes(b"this is not a png")
    raises_one_line(open_video, bad, match=r"f2\.png: cannot read frame")

    truncated = tmp_path / "truncated"
    paths = write_frames(truncated, ["f1.png", "f2.png", "f3.png"])
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: data.index(b"IDAT") + 8])  # header intact, image data cut
    src = open_video(truncated)  # headers are fine: the error comes when the frame is read
    raises_one_line(src.frame, 1, match=r"f2\.png: truncated image file")

    raises_one_line(open_video, paths[0], match=r"f1\.png: is a single image")
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"\x00" * 64)
    raises_one_line(open_video, junk, match=r"junk\.avi: (OpenCV cannot open|no readable frames)")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"stride": 0}, "--stride"), ({"stride": 1.5}, "--stride"), ({"max_frames": 0}, "--max-frames"),
     ({"resize": "big"}, "--resize"), ({"min_frames": 0}, "min_frames")],
)
def test_option_errors(tmp_path, kwargs, match):
    write_frames(tmp_path, ["a.png", "b.png", "c.png"])
    raises_one_line(open_video, tmp_path, match=match, **kwargs)


def test_exif_orientation_swaps_the_header_size(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees: OpenCV returns (W, H) = (24, 32)
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / name, exif=exif)
    src = open_video(tmp_path)
    assert src.original_size == (24, 32) and src.frame(0).shape == (32, 24)


def test_tum_sequence():
    if not (TUM / "intrinsics.txt").is_file():
        pytest.skip(f"{TUM} not available")
    src = open_video(TUM, resize=320)
    assert len(src) == 17 and src.original_size == (640, 480) and src.image_size == (320, 240)
    assert list(src.names) == sorted(src.names)
    intr = resolve_intrinsics(src, TUM / "intrinsics.txt")
    assert intr.source == "file" and not intr.refine_focal_suggested
    np.testing.assert_allclose(intr.K[0], [535.4 / 2, 0, (320.1 + 0.5) / 2 - 0.5])
    assert src.frame(16).shape == (240, 320)


# ------------------------------------------------------------------------------------------ intrinsics


def test_load_text_matrix(tmp_path):
    path = tmp_path / "K.txt"
    path.write_text("# fx 0 cx\n500 0 319.5  # row 1\n\n0, 505, 239.5\n0 0 1\n")
    loaded = load_intrinsics(path)
    np.testing.assert_allclose(loaded.K, [[500, 0, 319.5], [0, 505, 239.5], [0, 0, 1]])
    assert loaded.size is None and loaded.kind == "matrix"


def test_load_colmap_cameras(tmp_path):
    path = tmp_path / "cameras.txt"
    path.write_text(
        "# Camera list with one line of data per camera:\n"
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        "3 SIMPLE_RADIAL 640 480 500 320 240 0.01\n"
        "4 PINHOLE 640 480 1 1 1 1\n"
    )
    loaded = load_intrinsics(path)
    np.testing.assert_allclose(loaded.K, [[500, 0, 319.5], [0, 500, 239.5], [0, 0, 1]])
    assert loaded.size == (640, 480) and loaded.kind == "colmap"
    assert "camera 3" in loaded.note and "distortion [0.01] ignored" in loaded.note
    path.write_text("1 OPENCV 100 80 90 91 50 40 0 0 0 0\n")
    loaded = load_intrinsics(path)
    np.testing.assert_allclose(loaded.K, [[90, 0, 49.5], [0, 91, 39.5], [0, 0, 1]])
    assert "ignored" not in loaded.note


def test_load_strecha_cameras():
    if not STRECHA_CAMERAS.is_file():
        pytest.skip(f"{STRECHA_CAMERAS} not available")
    loaded = load_intrinsics(STRECHA_CAMERAS)
    assert loaded.size == (1024, 683)
    np.testing.assert_allclose(loaded.K[0], [919.8266667, 0, 506.8966667 - 0.5])
    np.testing.assert_allclose(loaded.K[1], [0, 921.8365625, 335.7672021 - 0.5])


def test_load_json_both_forms(tmp_path):
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"K": [[500, 0, 319.5], [0, 500, 239.5], [0, 0, 1]]}))
    loaded = load_intrinsics(path)
    assert loaded.kind == "json" and loaded.size is None
    np.testing.assert_allclose(loaded.K[:2, 2], [319.5, 239.5])
    path.write_text(json.dumps({"fx": 400, "fy": 410.5, "cx": 159.5, "cy": 119.5, "width": 320,
                                "height": 240, "comment": "ignored"}))
    loaded = load_intrinsics(path)
    np.testing.assert_allclose(loaded.K, [[400, 0, 159.5], [0, 410.5, 119.5], [0, 0, 1]])
    assert loaded.size == (320, 240)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("K.txt", "500 0 320\n0 500 240\n", r"found 2 rows with 3 \+ 3 numbers; expected a 3x3 K"),
        ("K.txt", "500 0 320 0\n0 500 240\n0 0 1\n", r"expected a 3x3 K"),
        ("K.txt", "500 0 abc\n0 500 240\n0 0 1\n", r"line 1: 'abc' is not a number"),
        ("K.txt", "# only comments\n", r"no data"),
        ("K.txt", "500 0 320\n0 500 240\n0 1 1\n", r"not a pinhole K"),
        ("cameras.txt", "1 FULL_OPENCV 640 480 1 2 3 4 5 6 7 8 9 10 11 12\n", r"FULL_OPENCV is not"),
        ("cameras.txt", "1 PINHOLE 640 480 500 500 320\n", r"line 1: COLMAP model PINHOLE takes parameters"),
        ("cameras.txt", "1 PINHOLE 640.5 480 500 500 320 240\n", r"WIDTH and HEIGHT must be integers"),
        ("k.json", "{\"fx\": 500, \"fy\": 500, \"cx\": 320}", r"JSON lacks \['cy'\]"),
        ("k.json", "{\"K\": [[1, 0, 0], [0, 1, 0]]}", r"'K' must be 3 lists of 3 numbers"),
        ("k.json", "{\"K\": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], \"fx\": 2}", r"both 'K' and fx"),
        ("k.json", "{\"fx\": \"500\", \"fy\": 500, \"cx\": 3, \"cy\": 2}", r"'fx' must be a finite number"),
        ("k.json", "{\"fx\": 5, \"fy\": 5, \"cx\": 3, \"cy\": 2, \"width\": 9}", r"give both width"),
        ("k.json", "{\"f\": 500}", r"neither 'K' nor fx/fy/cx/cy"),
        ("k.json", "{\"K\": [1, 2,", r"invalid JSON"),
        ("k.json", "[1, 2]", r"JSON must be an object"),
    ],
)
def test_load_intrinsics_errors(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    message = raises_one_line(load_intrinsics, path, match=match)
    assert message.startswith(str(path))


def test_load_intrinsics_missing_or_binary(tmp_path):
    raises_one_line(load_intrinsics, tmp_path / "none.txt", match=r"none\.txt: intrinsics file not found")
    (tmp_path / "k.bin").write_bytes(b"\xff\xfe\x00\x81")
    raises_one_line(load_intrinsics, tmp_path / "k.bin", match=r"k\.bin: intrinsics file is not UTF-8 text")


def test_exif_intrinsics(tmp_path):
    path = write_jpeg_with_exif(tmp_path / "f35.jpg", (64, 48), {F35: 28})
    K = exif_intrinsics(path, (64, 48))
    np.testing.assert_allclose(K, [[28 / 36 * 64, 0, 31.5], [0, 28 / 36 * 64, 23.5], [0, 0, 1]])
    np.testing.assert_allclose(exif_intrinsics(path, (32, 24))[0, 0], 28 / 36 * 32)
    # 4 mm lens, 1000 pixels per cm on the focal plane -> 400 px at the stored size
    path = write_jpeg_with_exif(tmp_path / "plane.jpg", (64, 48), {FOCAL: 4.0, XRES: 1000.0, UNIT: 3})
    np.testing.assert_allclose(exif_intrinsics(path, (64, 48))[0, 0], 400.0)
    np.testing.assert_allclose(exif_intrinsics(path, (32, 24))[1, 1], 200.0)
    path = write_jpeg_with_exif(tmp_path / "inch.jpg", (64, 48), {FOCAL: 4.0, XRES: 2540.0})
    np.testing.assert_allclose(exif_intrinsics(path, (64, 48))[0, 0], 400.0)  # unit defaults to inch
    for tags in ({}, {F35: 0}, {FOCAL: 4.0}, {FOCAL: 4.0, XRES: 1000.0, UNIT: 1}):
        path = write_jpeg_with_exif(tmp_path / "none.jpg", (64, 48), tags)
        assert exif_intrinsics(path, (64, 48)) is None
    cv2.imwrite(str(tmp_path / "plain.png"), np.zeros((8, 8), np.uint8))
    assert exif_intrinsics(tmp_path / "plain.png", (8, 8)) is None


def test_prior_intrinsics():
    np.testing.assert_allclose(prior_intrinsics((640, 480)), [[768, 0, 319.5], [0, 768, 239.5], [0, 0, 1]])
    np.testing.assert_allclose(prior_intrinsics((480, 640))[:2, 2], [239.5, 319.5])


def test_resolve_order(tmp_path):
    folder = tmp_path / "exif"
    folder.mkdir()
    for k in range(3):
        write_jpeg_with_exif(folder / f"f{k}.jpg", (64, 48), {F35: 36})
    src = open_video(folder, resize=32)
    exif = resolve_intrinsics(src)
    assert exif.source == "exif" and not exif.refine_focal_suggested
    assert "FocalLengthIn35mmFilm=36" in exif.description and "\n" not in exif.description
    np.testing.assert_allclose(exif.K, src.scale_intrinsics(exif_intrinsics(src.files[0], (64, 48))))
    np.testing.assert_allclose(exif.K[0, 0], 32.0)

    K_file = tmp_path / "K.txt"
    K_file.write_text("50 0 31.5\n0 50 23.5\n0 0 1\n")
    from_file = resolve_intrinsics(src, K_file)
    assert from_file.source == "file" and "K.txt" in from_file.description
    np.testing.assert_allclose(from_file.K, [[25, 0, 15.5], [0, 25, 11.5], [0, 0, 1]])

    plain = tmp_path / "plain"
    write_frames(plain, ["a.png", "b.png", "c.png"], size=(64, 48))
    prior = resolve_intrinsics(open_video(plain, resize=32))
    assert prior.source == "prior" and prior.refine_focal_suggested and "prior" in prior.description
    np.testing.assert_allclose(prior.K, prior_intrinsics((32, 24)))


def test_resolve_video_file_uses_the_prior(tmp_path):
    src = open_video(write_video(tmp_path / "clip.avi", 4))
    intr = resolve_intrinsics(src)
    assert intr.source == "prior" and "video file" in intr.description
    np.testing.assert_allclose(intr.K, prior_intrinsics((64, 48)))


def test_resolve_rescales_a_stated_size(tmp_path):
    plain = tmp_path / "plain"
    write_frames(plain, ["a.png", "b.png", "c.png"], size=(64, 48))
    src = open_video(plain)
    cams = tmp_path / "cameras.txt"
    cams.write_text("1 PINHOLE 128 96 100 100 64 48\n")  # COLMAP centre of a 128x96 image
    intr = resolve_intrinsics(src, cams)
    np.testing.assert_allclose(intr.K, [[50, 0, 31.5], [0, 50, 23.5], [0, 0, 1]])
    assert "rescaled from 128x96 to 64x48" in intr.description

    cams.write_text("1 PINHOLE 128 80 100 100 64 40\n")
    raises_one_line(resolve_intrinsics, src, cams,
                    match=r"cameras\.txt: intrinsics are for 128x80 images .* 64x48")
    K_file = tmp_path / "big.json"
    K_file.write_text(json.dumps({"fx": 500, "fy": 500, "cx": 319.5, "cy": 239.5}))
    raises_one_line(resolve_intrinsics, src, K_file,
                    match=r"big\.json: principal point \(319\.5, 239\.5\) lies outside")
    K_file.write_text(json.dumps({"fx": 500, "fy": 500, "cx": 319.5, "cy": 239.5,
                                  "width": 640, "height": 480}))
    np.testing.assert_allclose(resolve_intrinsics(src, K_file).K[:2, 2], [31.5, 23.5])


# --------------------------------------------------------------------------------------------- windows
def test_windows_of_several_spacings(tmp_path):
    from imatch_s2ld.finetune.data import VideoWindows
    from imatch_s2ld.finetune.inputs import window_spacings

    write_frames(tmp_path, [f"{k:03d}.png" for k in range(10)], size=(40, 32))
    video = open_video(tmp_path)
    single = VideoWindows(video, np.eye(3), length=3, spacing=2)
    assert len(single) == 6 and single.frames(5) == [5, 7, 9]
    both = VideoWindows(video, np.eye(3), length=3, spacing=window_spacings("4,2"))
    assert both.spacings == (2, 4) and len(both) == 6 + 2
    assert both.frames(0) == [0, 2, 4] and both.frames(6) == [0, 4, 8] and both.frames(7) == [1, 5, 9]
    item = both[7]
    assert item["images"].shape == (3, 3, 32, 40) and item["start"] == 7  # frames in colour
    np.testing.assert_allclose(item["images"][:, :, 0, 0].numpy(), np.repeat([[10], [50], [90]], 3, 1) / 255,
                               atol=1e-6)
    with pytest.raises(InputError, match="spaced 5 needs 11"):
        VideoWindows(video, np.eye(3), length=3, spacing=[2, 5])
    for bad in ("0", "2,x", ""):
        with pytest.raises(InputError, match="--window-spacing"):
            window_spacings(bad)


def test_several_videos_windows_stay_inside_each_video(tmp_path):
    from imatch_s2ld.finetune.cli import build_parser, conf_from_args
    from imatch_s2ld.finetune.data import VideoWindows

    write_frames(tmp_path / "a", [f"{k:03d}.png" for k in range(6)], size=(40, 32))
    write_frames(tmp_path / "b", [f"{k:03d}.png" for k in range(5)], size=(40, 32))
    assert isinstance(open_videos([tmp_path / "a"]), video_module.VideoSource)  # one path: a plain video
    both = open_videos([tmp_path / "a", tmp_path / "b"], max_frames=5)  # max_frames: per video
    assert len(both) == 10 and both.segments == ((0, 5), (5, 10)) and both.image_size == (40, 32)
    assert both.names[5] == "b/000.png" and both.path == tmp_path / "a" and len(both.files) == 10
    np.testing.assert_allclose(both.frame(6)[0, 0], 10 / 255, atol=1e-6)  # frame 1 of video b
    for room in ("room_0", "room_1"):  # two folders of the same name: the names stay unique
        write_frames(tmp_path / room / "frames", [f"{k:03d}.png" for k in range(3)], size=(40, 32))
    same = open_videos([tmp_path / "room_0" / "frames", tmp_path / "room_1" / "frames"])
    assert same.names[0] == "room_0/frames/000.png" and same.names[3] == "room_1/frames/000.png"
    windows = VideoWindows(both, np.eye(3), length=3, spacing=2)  # 5 frames a video: windows 0 and 5
    assert [windows.frames(i) for i in range(len(windows))] == [[0, 2, 4], [5, 7, 9]]
    np.testing.assert_allclose(windows[1]["images"][:, 0, 0, 0].numpy(), [0, 20 / 255, 40 / 255], atol=1e-6)
    with pytest.raises(InputError, match=r"b: 5 frames selected, a window of 2 frames spaced 5 needs 6"):
        VideoWindows(open_videos([tmp_path / "a", tmp_path / "b"]), np.eye(3), length=2, spacing=5)
    write_frames(tmp_path / "c", [f"{k:03d}.png" for k in range(5)], size=(48, 32))
    raises_one_line(open_videos, [tmp_path / "a", tmp_path / "c"],
                    match=r"c: frames of 48x32 differ from .*a \(40x32\); several --video must come from one")
    raises_one_line(open_videos, [tmp_path / "a", tmp_path / "a"], match=r"a: given twice \(--video\)")
    args = build_parser().parse_args(["--video", "x", "--video", "y", "--out", "o"])
    assert conf_from_args(args)["video"] == ["x", "y"]
    assert conf_from_args(build_parser().parse_args(["--video", "x", "--out", "o"]))["video"] == "x"


# ------------------------------------------------------------------ configs/finetune_default.yaml

FINETUNE_YAML = Path(__file__).resolve().parents[1] / "configs" / "finetune_default.yaml"


def test_default_yaml_equals_default_conf_and_comments_every_key():
    from imatch_s2ld.conf import merge_conf
    from imatch_s2ld.finetune.run import DEFAULT_CONF
    from imatch_s2ld.train.config import read_yaml

    assert read_yaml(FINETUNE_YAML) == merge_conf(DEFAULT_CONF)  # no key missing or different
    for line in FINETUNE_YAML.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "  # " in line, f"option without a comment: {line!r}"


def test_whole_network_recipe_is_a_valid_partial_config():
    from imatch_s2ld.conf import merge_conf
    from imatch_s2ld.finetune.run import DEFAULT_CONF
    from imatch_s2ld.train.config import read_yaml

    path = FINETUNE_YAML.with_name("finetune_whole_network.yaml")
    conf = merge_conf(DEFAULT_CONF, read_yaml(path))  # strict: a typo in the recipe fails here
    assert conf["model"]["trainable"] == "all" and conf["train"]["lr"] == 3e-5 and conf["eval"]["every"] == 50
    assert conf["model"]["geometry_from"] == "aliked+lightglue" and conf["train"]["max_steps"] == 200
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "  # " in line, f"option without a comment: {line!r}"


def test_config_file_is_read_and_options_and_overrides_win(tmp_path):
    from imatch_s2ld.finetune.cli import build_parser, conf_from_args

    mine = tmp_path / "mine.yaml"
    mine.write_text(FINETUNE_YAML.read_text().replace("stride: 1 ", "stride: 3 ").replace(
        "max_steps: 400", "max_steps: 50").replace("lr: 0.0003", "lr: 0.001"))
    args = build_parser().parse_args(["--video", "v", "--out", "o", "--config", str(mine), "--lr", "2e-4",
                                      "model.loss.track_weight=1"])
    conf = conf_from_args(args)
    assert conf["stride"] == 3 and conf["train"]["max_steps"] == 50  # from the file
    assert conf["train"]["lr"] == 2e-4 and conf["model"]["loss"]["track_weight"] == 1  # options, overrides
    assert conf["video"] == "v"
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_steps: many\n")
    args = build_parser().parse_args(["--video", "v", "--out", "o", "--config", str(bad)])
    with pytest.raises(InputError, match=r"bad.yaml: configuration key 'train.max_steps': expected an int"):
        conf_from_args(args)


def test_windows_carry_colour_and_each_consumer_takes_its_channels(tmp_path):
    """Windows hold the frames in RGB; ``uint8_frames`` gives matchers RGB uint8 (SIFT converts)."""
    from imatch_s2ld.finetune.data import VideoWindows, uint8_frames

    tmp_path.mkdir(exist_ok=True)
    for k in range(3):  # BGR on disk: blue 10k, green 100, red 200
        bgr = np.dstack([np.full((32, 40), v, np.uint8) for v in (10 * k, 100, 200)])
        cv2.imwrite(str(tmp_path / f"{k}.png"), bgr)
    item = VideoWindows(open_video(tmp_path), np.eye(3), length=3, spacing=1)[0]
    np.testing.assert_allclose(item["images"][2, :, 5, 5].numpy(), np.array([200, 100, 20]) / 255, atol=1e-6)
    frames = uint8_frames(item["images"])
    assert frames[2].shape == (32, 40, 3) and frames[2][5, 5].tolist() == [200, 100, 20]
    gray = uint8_frames(item["images"][:, :1])
    assert gray[0].shape == (32, 40) and int(gray[0][0, 0]) == 200
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        uint8_frames(item["images"][:, :2])


def test_fine_tuning_reads_colour_when_asked(tiny_checkpoint):
    """``color``: None keeps the checkpoint's input (the shipped one: gray); True reads RGB frames
    with an ALIKED backbone; a gray-only backbone or a non-boolean value is one line."""
    from imatch_s2ld.finetune.cli import build_parser, conf_from_args
    from imatch_s2ld.finetune.inputs import load_start

    for argv, expected in ((["--color"], True), (["color=false"], False), ([], None)):
        conf = conf_from_args(build_parser().parse_args(["--video", "v", "--out", "o", *argv]))
        assert conf["color"] is expected
    assert load_start(None).in_channels == 1 and load_start(None, True).in_channels == 3
    assert load_start(None, False).in_channels == 1
    with pytest.raises(InputError, match="color: .* reads gray"):
        load_start(str(tiny_checkpoint), True)
    with pytest.raises(InputError, match="color: expected true, false or null"):
        load_start(None, "yes")
