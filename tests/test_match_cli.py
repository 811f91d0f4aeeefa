"""``imatch match``: SIFT and a random tiny S2LD checkpoint on a generated pair, outputs in original
pixels (also with --resize), and one-line errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import imatch_s2ld
from imatch_s2ld.cli import main as imatch_main
from imatch_s2ld.errors import InputError
from imatch_s2ld.match_cli import main

W, H = 320, 240
H_TRUE = np.array([[0.96, 0.07, 10.0], [-0.05, 0.98, 6.0], [1e-4, -5e-5, 1.0]])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two PNGs: a blurred-noise texture and its warp by :data:`H_TRUE`."""
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (H // 4, W // 4, 3)).astype(np.uint8), (W, H),
                      interpolation=cv2.INTER_CUBIC)
    image0 = cv2.GaussianBlur(cv2.addWeighted(base, 0.7, rng.integers(0, 256, (H, W, 3)).astype(np.uint8),
                                              0.3, 0), (3, 3), 0.8)
    image1 = cv2.warpPerspective(image0, H_TRUE, (W, H))
    folder = tmp_path_factory.mktemp("pair")
    paths = folder / "a.png", folder / "b.png"
    for path, image in zip(paths, (image0, image1)):
        cv2.imwrite(str(path), image)
    return tuple(str(p) for p in paths)


def _median_error(kpts0: np.ndarray, kpts1: np.ndarray) -> float:
    """Median distance (px) between kpts1 and kpts0 mapped by :data:`H_TRUE`."""
    proj = cv2.perspectiveTransform(kpts0.reshape(-1, 1, 2).astype(np.float64), H_TRUE)[:, 0]
    return float(np.median(np.linalg.norm(proj - kpts1, axis=1)))


def test_sift_draws_and_saves_npz(pair, tmp_path, capsys):
    out, npz = tmp_path / "viz" / "m.png", tmp_path / "m.npz"
    assert main([*pair, "--matcher", "sift", "--out", str(out), "--save-matches", str(npz)]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and line.startswith("sift: ") and " matches in " in line
    picture = cv2.imread(str(out))
    assert picture.shape[1] == 2 * W and picture.shape[0] > H
    data = np.load(npz)
    assert set(data.files) == {"kpts0", "kpts1", "confidence"}
    n = len(data["confidence"])
    assert n > 50 and f"sift: {n} matches" in line
    assert data["kpts0"].shape == data["kpts1"].shape == (n, 2) and data["kpts0"].dtype == np.float32
    assert _median_error(data["kpts0"], data["kpts1"]) < 1.0


def test_resize_saves_original_pixels_txt(pair, tmp_path, capsys):
    txt = tmp_path / "m.txt"
    code = main([*pair, "--matcher", "sift", "--resize", "240", "--save-matches", str(txt),
                 "--out", str(tmp_path / "m.png"), "--color", "plain", "--max-draw", "20"])
    assert code == 0
    assert "matched at 240x180" in capsys.readouterr().out
    rows = np.loadtxt(txt, ndmin=2)
    assert rows.shape[1] == 5 and len(rows) > 30
    assert rows[:, :4].max() > 240  # original 320x240 pixels, not the resized ones
    assert _median_error(rows[:, :2], rows[:, 2:4]) < 1.5


def test_s2ld_checkpoint(pair, tiny_checkpoint, tmp_path, capsys):
    out, npz = tmp_path / "s2ld.png", tmp_path / "s2ld.npz"
    code = main([*pair, "--matcher", f"s2ld:{tiny_checkpoint}", "--resize", "160x120",
                 "--out", str(out), "--save-matches", str(npz), "--max-draw", "5"])
    assert code == 0
    assert capsys.readouterr().out.startswith(f"s2ld:{tiny_checkpoint}: ")
    assert out.is_file() and len(np.load(npz)["kpts0"].shape) == 2


def test_default_matcher_is_s2ld(pair, tmp_path, capsys):
    """The default checkpoint runs when installed; otherwise its loader error is passed through."""
    try:
        imatch_s2ld.load_matcher("s2ld")
    except InputError as err:
        assert main([*pair, "--out", str(tmp_path / "m.png")]) == 2
        assert capsys.readouterr().err.strip() == f"imatch match: error: {err}"
    else:
        assert main([*pair, "--resize", "160x120", "--out", str(tmp_path / "m.png")]) == 0
        assert capsys.readouterr().out.startswith("s2ld: ")


def _expect_error(argv: list[str], capsys, *fragments: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("imatch match: error: "), err
    for fragment in fragments:
        assert fragment in err, err


def test_errors_name_the_file_or_argument(pair, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    sift = ["--matcher", "sift"]
    _expect_error([str(tmp_path / "missing.png"), pair[1], *sift], capsys, "missing.png", "not found")
    _expect_error([pair[0], str(corrupt), *sift], capsys, "corrupt.png", "cannot read")
    data = Path(pair[0]).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    _expect_error([str(tmp_path / "cut.png"), pair[1], *sift], capsys, "cut.png", "truncated image file")
    cv2.imwrite(str(tmp_path / "dot.png"), np.zeros((1, 1, 3), np.uint8))
    _expect_error([pair[0], str(tmp_path / "dot.png"), *sift], capsys, "dot.png", "1x1 image is too small")
    _expect_error([*pair, "--matcher", "nosuch"], capsys, "--matcher", "nosuch")
    _expect_error([*pair, *sift, "--out", str(blocker / "m.png")], capsys, "--out", "a_file")
    _expect_error([*pair, *sift, "--out", str(tmp_path / "m.gif")], capsys, "--out", "m.gif")
    _expect_error([*pair, *sift, "--save-matches", str(tmp_path / "m.csv")], capsys, "--save-matches")
    _expect_error([*pair, *sift, "--resize", "big"], capsys, "--resize")
    _expect_error([*pair, *sift, "--max-draw", "-1"], capsys, "--max-draw")
    _expect_error([*pair, "--color", "pink"], capsys, "--color")
    _expect_error([pair[0]], capsys, "image1")


def test_registered_in_imatch(capsys):
    assert imatch_main(["match", "--help"]) == 0
    assert "--save-matches" in capsys.readouterr().out
