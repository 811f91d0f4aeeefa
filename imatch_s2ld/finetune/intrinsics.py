"""Intrinsics of an unlabeled video: from a file, else from EXIF, else a prior.

All matrices are (3, 3) pinhole ``K`` in the project's pixel convention (:mod:`imatch_s2ld.conventions`:
the top-left pixel centre is ``(0, 0)``). Lens distortion is never modelled here: the frames are
assumed undistorted.

:func:`resolve_intrinsics` order: ``--intrinsics`` file, then EXIF of the first frame (folders of
frames only), then :func:`prior_intrinsics` (focal ``1.2 x`` the longer side, principal point at the
centre; ``refine_focal_suggested`` is True so that the caller can refine the focal length in BA).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pycolmap
from PIL import Image

from ..data.colmap import colmap_intrinsics
from ..data.sample import check_intrinsics
from ..errors import InputError, first_line
from ..geometry.camera import scale_intrinsics
from .video import PIL_ERRORS, VideoSource

PRIOR_FOCAL_FACTOR = 1.2
"""Prior focal length in pixels, as a multiple of the longer image side."""

COLMAP_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
"""COLMAP camera models read from ``cameras.txt`` (distortion parameters are ignored)."""

ASPECT_TOLERANCE = 0.01
"""Largest relative aspect-ratio difference between the size an intrinsics file states and the frames."""

_EXPECTED = (
    "expected a 3x3 K (3 rows of 3 numbers), a COLMAP cameras.txt or JSON "
    '({"K": [[...], [...], [...]]} or {"fx", "fy", "cx", "cy"})'
)

# EXIF tags (numbers from the EXIF 2.3 standard).
_EXIF_IFD = 0x8769
_FOCAL_35MM = 0xA405  # FocalLengthIn35mmFilm, mm; 0 = unknown
_FOCAL_LENGTH = 0x920A  # FocalLength, mm (rational)
_FOCAL_PLANE_XRES = 0xA20E  # FocalPlaneXResolution, pixels per unit (rational)
_FOCAL_PLANE_UNIT = 0xA210  # FocalPlaneResolutionUnit: 2 inch (default), 3 cm, 4 mm, 5 um
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}


@dataclass(frozen=True, eq=False)
class FileIntrinsics:
    """What :func:`load_intrinsics` read.

    Attributes:
        K: (3, 3) intrinsics in the project's convention.
        size: ``(W, H)`` the file states K is for (COLMAP, JSON with width/height), else None.
        kind: ``"matrix"`` (3x3 text), ``"colmap"`` or ``"json"``.
        note: details for logs (COLMAP camera id/model, ignored distortion), may be empty.
    """

    K: np.ndarray
    size: tuple[int, int] | None
    kind: str
    note: str = ""


@dataclass(frozen=True, eq=False)
class Intrinsics:
    """Intrinsics for the (resized) frames of a :class:`VideoSource`.

    Attributes:
        K: (3, 3) for ``video.image_size``, in the project's convention.
        source: ``"file"``, ``"exif"`` or ``"prior"``.
        refine_focal_suggested: True when K is only the prior (refine the focal length in BA).
        description: one line for logs: where K comes from and its values.
    """

    K: np.ndarray
    source: str
    refine_focal_suggested: bool
    description: str


def load_intrinsics(path: str | os.PathLike) -> FileIntrinsics:
    """Read intrinsics from a text 3x3, a COLMAP ``cameras.txt`` or a JSON file (``--intrinsics``).

    Formats (``#`` starts a comment in the text formats):

    - **3x3 text**: 3 rows of 3 numbers (spaces or commas), pixels in the project's convention, for
      the frames as stored (no size stated).
    - **COLMAP cameras.txt**: the first camera line ``ID MODEL WIDTH HEIGHT PARAMS...``, model one of
      :data:`COLMAP_MODELS`. COLMAP's principal point is shifted by -0.5 into the project's convention;
      distortion parameters are ignored (reported in ``note``); ``size`` is ``(WIDTH, HEIGHT)``.
    - **JSON** (``.json`` or text starting with ``{``): ``{"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]}``
      or ``{"fx": ..., "fy": ..., "cx": ..., "cy": ...}``, optionally with integer ``"width"`` and
      ``"height"`` (both or neither); other keys are ignored. ``cx, cy`` are taken as they are, i.e.
      in the project's convention (top-left pixel centre ``(0, 0)``), not COLMAP's.

    Raises:
        InputError: missing file, wrong format or not a pinhole K (one line naming the file and what
            was expected).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: intrinsics file not found (--intrinsics)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: intrinsics file is not UTF-8 text; {_EXPECTED}") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        loaded = _parse_json(path, text)
    else:
        rows = _data_rows(text)
        if not rows:
            raise InputError(f"{path}: intrinsics file has no data; {_EXPECTED}")
        first = rows[0][1]
        is_colmap = len(first) >= 2 and first[1].isidentifier() and first[1].lower() not in ("nan", "inf")
        loaded = _parse_colmap(path, rows) if is_colmap else _parse_matrix(path, rows)
    check_intrinsics(loaded.K, str(path))
    return loaded


def _data_rows(text: str) -> list[tuple[int, list[str]]]:
    """``(line number, tokens)`` of the non-empty lines, ``#`` comments removed, commas = spaces."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split("#", 1)[0].replace(",", " ").split()
        if tokens:
            rows.append((lineno, tokens))
    return rows


def _number(path: Path, lineno: int, token: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise InputError(f"{path}: line {lineno}: {token!r} is not a number; {_EXPECTED}") from None
    if not math.isfinite(value):
        raise InputError(f"{path}: line {lineno}: {token!r} is not a finite number")
    return value


def _parse_matrix(path: Path, rows: list[tuple[int, list[str]]]) -> FileIntrinsics:
    if len(rows) != 3 or any(len(tokens) != 3 for _, tokens in rows):
        shape = " + ".join(str(len(tokens)) for _, tokens in rows[:6])
        raise InputError(f"{path}: found {len(rows)} rows with {shape} numbers; {_EXPECTED}")
    K = np.array([[_number(path, lineno, t) for t in tokens] for lineno, tokens in rows])
    return FileIntrinsics(K=K, size=None, kind="matrix")


def _parse_colmap(path: Path, rows: list[tuple[int, list[str]]]) -> FileIntrinsics:
    lineno, tokens = rows[0]
    where = f"{path}: line {lineno}"
    if len(tokens) < 5:
        raise InputError(f"{where}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...' (COLMAP cameras.txt)")
    model = tokens[1]
    if model not in COLMAP_MODELS:
        raise InputError(
            f"{where}: COLMAP camera model {model} is not supported (use one of {list(COLMAP_MODELS)})"
        )
    try:
        camera_id, width, height = int(tokens[0]), int(tokens[2]), int(tokens[3])
    except ValueError:
        raise InputError(
            f"{where}: CAMERA_ID, WIDTH and HEIGHT must be integers (COLMAP cameras.txt)"
        ) from None
    if width <= 0 or height <= 0:
        raise InputError(f"{where}: WIDTH and HEIGHT must be positive, got {width}x{height}")
    params = [_number(path, lineno, t) for t in tokens[4:]]
    camera = pycolmap.Camera(model=model, width=width, height=height, params=params)
    if not camera.verify_params():
        raise InputError(
            f"{where}: COLMAP model {model} takes parameters ({camera.params_info}), "
            f"got {len(params)} numbers"
        )
    camera.camera_id = camera_id
    extra = list(camera.extra_params_idxs())
    distortion = np.asarray(camera.params)[extra].tolist()
    undistorted = np.asarray(camera.params, dtype=np.float64).copy()
    undistorted[extra] = 0.0
    camera.params = undistorted
    note = f"COLMAP camera {camera_id} ({model} {width}x{height}"
    note += f", first of {len(rows)} cameras" if len(rows) > 1 else ""
    note += f", distortion {distortion} ignored)" if any(distortion) else ")"
    K = colmap_intrinsics(camera, str(path))
    return FileIntrinsics(K=K, size=(width, height), kind="colmap", note=note)


def _json_number(path: Path, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{path}: JSON key {key!r} must be a finite number, got {value!r}")
    return float(value)


def _json_size(path: Path, data: dict[str, Any]) -> tuple[int, int] | None:
    present = [k for k in ("width", "height") if k in data]
    if not present:
        return None
    if len(present) == 1:
        raise InputError(f"{path}: JSON gives {present[0]!r} without the other; give both width and height")
    size = (data["width"], data["height"])
    if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in size):
        raise InputError(f"{path}: JSON width and height must be positive integers, got {size}")
    return size


def _parse_json(path: Path, text: str) -> FileIntrinsics:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: invalid JSON ({err.msg} at line {err.lineno}); {_EXPECTED}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: JSON must be an object; {_EXPECTED}")
    keys = ("fx", "fy", "cx", "cy")
    has_K, has_params = "K" in data, any(k in data for k in keys)
    if has_K and has_params:
        raise InputError(f"{path}: JSON gives both 'K' and fx/fy/cx/cy; give one of them")
    if has_K:
        rows = data["K"]
        if not (isinstance(rows, list) and len(rows) == 3
                and all(isinstance(r, list) and len(r) == 3 for r in rows)):
            raise InputError(f"{path}: JSON 'K' must be 3 lists of 3 numbers; {_EXPECTED}")
        K = np.array([[_json_number(path, "K", v) for v in r] for r in rows])
    elif has_params:
        missing = [k for k in keys if k not in data]
        if missing:
            raise InputError(f"{path}: JSON lacks {missing}; {_EXPECTED}")
        fx, fy, cx, cy = (_json_number(path, k, data[k]) for k in keys)
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    else:
        raise InputError(f"{path}: JSON has neither 'K' nor fx/fy/cx/cy; {_EXPECTED}")
    return FileIntrinsics(K=K, size=_json_size(path, data), kind="json")


def _positive(value: Any) -> float | None:
    """``float(value)`` when it is a finite positive number, else None (missing, 0 = unknown, malformed)."""
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _exif_focal(image_path: Path, image_size: tuple[int, int]) -> tuple[float, str] | None:
    """Focal length in pixels of an image of ``image_size`` from EXIF, and the tags used; None if absent."""
    try:
        with Image.open(image_path) as im:
            exif = im.getexif()
            stored_size = im.size
            tags = {**dict(exif), **dict(exif.get_ifd(_EXIF_IFD))}
    except PIL_ERRORS as err:
        raise InputError(f"{image_path}: cannot read EXIF ({first_line(err)})") from None
    longer = max(image_size)
    f35 = _positive(tags.get(_FOCAL_35MM))
    if f35 is not None:
        return f35 / 36.0 * longer, f"EXIF FocalLengthIn35mmFilm={f35:g} mm"
    focal_mm = _positive(tags.get(_FOCAL_LENGTH))
    xres = _positive(tags.get(_FOCAL_PLANE_XRES))
    unit_mm = _UNIT_MM.get(tags.get(_FOCAL_PLANE_UNIT, 2))
    if focal_mm is None or xres is None or unit_mm is None:
        return None
    focal_stored = focal_mm * xres / unit_mm  # pixels of the image as stored
    return (
        focal_stored * longer / max(stored_size),
        f"EXIF FocalLength={focal_mm:g} mm x FocalPlaneXResolution={xres:g}/{unit_mm:g} mm",
    )


def _centred_K(focal: float, image_size: tuple[int, int]) -> np.ndarray:
    w, h = image_size
    return np.array([[focal, 0.0, (w - 1) / 2], [0.0, focal, (h - 1) / 2], [0.0, 0.0, 1.0]])


def exif_intrinsics(image_path: str | os.PathLike, image_size: tuple[int, int]) -> np.ndarray | None:
    """(3, 3) K for an image of ``image_size`` ``(W, H)`` from the EXIF of ``image_path``, or None.

    Tags, looked up in the EXIF sub-IFD (values there win) and in IFD0:

    1. ``FocalLengthIn35mmFilm`` (0xA405): ``focal_px = f35 / 36 * max(W, H)``.
    2. else ``FocalLength`` (0x920A, mm) with ``FocalPlaneXResolution`` (0xA20E, pixels per unit) and
       ``FocalPlaneResolutionUnit`` (0xA210; 2 inch, the default when absent; 3 cm; 4 mm; 5 um):
       ``focal_px = FocalLength * XRes / unit_mm`` in pixels of the image as stored, times
       ``max(W, H) / max(stored W, H)``.

    Square pixels (``fx = fy``); principal point at the centre ``((W - 1) / 2, (H - 1) / 2)``.
    Missing tags, zero ("unknown"), non-positive or malformed values, or unit 1 (none) give None.

    Raises:
        InputError: the image cannot be opened (names the file).
    """
    found = _exif_focal(Path(image_path), image_size)
    return None if found is None else _centred_K(found[0], image_size)


def prior_intrinsics(image_size: tuple[int, int]) -> np.ndarray:
    """(3, 3) prior K for ``image_size`` ``(W, H)``.

    Focal length ``1.2 * max(W, H)`` (fx = fy), principal point ``((W - 1) / 2, (H - 1) / 2)`` (the
    image centre in the project's convention).
    """
    return _centred_K(PRIOR_FOCAL_FACTOR * max(image_size), image_size)


def _file_K(path: Path, frame_size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """K of the original frames from an intrinsics file, rescaled when the file states another size."""
    loaded = load_intrinsics(path)
    K, w, h = loaded.K, frame_size[0], frame_size[1]
    what = f"{path.name} ({loaded.note or loaded.kind})"
    if loaded.size is not None and loaded.size != frame_size:
        fw, fh = loaded.size
        if abs((fw / fh) / (w / h) - 1) > ASPECT_TOLERANCE:
            raise InputError(
                f"{path}: intrinsics are for {fw}x{fh} images but the frames are {w}x{h}; "
                f"the aspect ratios differ by more than {ASPECT_TOLERANCE:.0%}, cannot rescale"
            )
        K = scale_intrinsics(K, w / fw, h / fh)
        what += f" rescaled from {fw}x{fh} to {w}x{h}"
    cx, cy = K[0, 2], K[1, 2]
    if not (-0.5 <= cx <= w - 0.5 and -0.5 <= cy <= h - 0.5):
        raise InputError(
            f"{path}: principal point ({cx:.1f}, {cy:.1f}) lies outside the {w}x{h} frames; "
            "is K for another image size? (state width/height in JSON, or use COLMAP cameras.txt)"
        )
    return K, what


def resolve_intrinsics(video: VideoSource, path: str | os.PathLike | None = None) -> Intrinsics:
    """Intrinsics of the resized frames of ``video``: file, else EXIF (folders), else the prior.

    File intrinsics are for the frames as stored (rescaled first when the file states another size with
    the same aspect ratio within 1%); EXIF is read from the first selected frame; the prior is
    :func:`prior_intrinsics` of the original size. The result is mapped to ``video.image_size`` with
    :meth:`VideoSource.scale_intrinsics`.

    Raises:
        InputError: bad intrinsics file (see :func:`load_intrinsics`), a stated size of another aspect
            ratio, or a principal point outside the frames.
    """
    size = video.original_size
    exif = None if path is not None or not video.is_folder else _exif_focal(video.files[0], size)
    if path is not None:
        K, what = _file_K(Path(path), size)
        source = "file"
    elif exif is not None:
        K, what = _centred_K(exif[0], size), f"{exif[1]} of {video.files[0].name}"
        source = "exif"
    else:
        K = prior_intrinsics(size)
        where = "no EXIF focal length" if video.is_folder else "video file"
        what = (f"prior ({where}: focal {PRIOR_FOCAL_FACTOR:g} x {max(size)} px, "
                "principal point at the centre)")
        source = "prior"
    K = video.scale_intrinsics(K)
    w, h = video.image_size
    description = (
        f"intrinsics from {what}: fx={K[0, 0]:.2f} fy={K[1, 1]:.2f} cx={K[0, 2]:.2f} cy={K[1, 2]:.2f} "
        f"for {w}x{h} frames"
    )
    return Intrinsics(K=K, source=source, refine_focal_suggested=source == "prior", description=description)
