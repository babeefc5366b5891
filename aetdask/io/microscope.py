"""Tilt series from microscope files, with the pixel size and tilt angles their metadata hold.

Gatan DigitalMicrograph (``.dm3``, ``.dm4``), EMD (Velox and Berkeley, ``.emd``), MRC stacks
(``.mrc``, ``.mrcs``, IMOD's ``.st`` and ``.ali``) and TIFF are read through RosettaSciIO
(``rsciio``), the reader HyperSpy uses. From each file aetdask takes

* the pixel size, from the calibration of the two image axes, converted to Å from the unit
  the file states (m, mm, µm, nm, Å, pm); an uncalibrated axis (no unit, or ``px``) says nothing;
* the tilt angles, where the file holds one per projection: a tilt axis calibrated in degrees
  or radians (for Berkeley EMD, the axis's own vector of values), the per-section ``a_tilt`` of
  an MRC stack's FEI extended header, the per-frame stage α of a Velox stack, or the
  ``TiltAngle`` of each section in a SerialEM ``.mdoc`` next to an MRC stack
  (``stack.mrc.mdoc``), which also gives ``PixelSpacing``;
* several frames per tilt (an array ``(tilt, frame, y, x)``), combined into one image per
  tilt by :func:`sum_frames`.

What the file does not say, the caller gives; what the caller gives wins, with a
:class:`MetadataWarning` naming both values where the file disagrees.
:func:`aetdask.io.read_tilt_series` does all of this for these suffixes.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import warnings

import numpy as np

from aetdask.errors import InputError

#: Suffixes read here: DigitalMicrograph, EMD, MRC stacks (IMOD names them .st and .ali) and TIFF.
MICROSCOPE_SUFFIXES = (".dm3", ".dm4", ".emd", ".mrc", ".mrcs", ".st", ".ali", ".tif", ".tiff")

#: Relative difference between the file's pixel size and the given one above which a warning names both.
PIXEL_TOLERANCE = 0.01
#: Largest difference (degrees) between the file's tilt angles and the given ones that passes without a warning.
ANGLE_TOLERANCE = 0.5
#: Drift (pixels, over all frames of a tilt) below which frames are summed as they are, without resampling.
NEGLIGIBLE_DRIFT = 0.1

_FORMATS = {".dm3": "DigitalMicrograph", ".dm4": "DigitalMicrograph", ".emd": "EMD", ".mrc": "MRC", ".mrcs": "MRC",
            ".st": "MRC", ".ali": "MRC", ".tif": "TIFF", ".tiff": "TIFF"}
# Å per unit; the spellings RosettaSciIO (pint), ImageJ and the formats' own metadata use
_LENGTH = {"m": 1e10, "mm": 1e7, "µm": 1e4, "μm": 1e4, "um": 1e4, "micron": 1e4, "microns": 1e4, "\\u00b5m": 1e4,
           "nm": 10.0, "nanometer": 10.0, "nanometre": 10.0, "å": 1.0, "a": 1.0, "angstrom": 1.0, "ang": 1.0,
           "pm": 0.01}
# degrees per unit
_ANGLE = {"deg": 1.0, "°": 1.0, "degree": 1.0, "degrees": 1.0, "rad": float(np.degrees(1.0)),
          "radian": float(np.degrees(1.0)), "mrad": float(np.degrees(1e-3))}


class MetadataWarning(UserWarning):
    """The file's metadata and the value given disagree; the given value is used."""


@dataclasses.dataclass
class MicroscopeStack:
    """What a microscope file holds: the images and what its metadata say about them.

    Attributes
    ----------
    data : ndarray
        ``(tilt, y, x)``, frames already combined.
    pixel_size : float or None
        Å per pixel, if the file says.
    pixel_size_from : str or None
        Where in the file the pixel size was found (with its value in the file's unit).
    theta : ndarray or None
        One tilt angle per projection (degrees), if the file says.
    angles_from : str or None
        Where the angles were found.
    angle_file : str or None
        The file that holds the angles, if it is not the tilt series itself (a ``.mdoc``).
    frames : dict or None
        How frames were combined (:func:`sum_frames`), if there were several per tilt.
    reader : str
        The RosettaSciIO reader and its version.
    """

    data: np.ndarray
    pixel_size: float | None = None
    pixel_size_from: str | None = None
    theta: np.ndarray | None = None
    angles_from: str | None = None
    angle_file: str | None = None
    frames: dict | None = None
    reader: str = ""


def read_microscope(path, var=None) -> MicroscopeStack:
    """Read a tilt series and its metadata from a microscope file.

    Parameters
    ----------
    path : str or Path
        A file with one of :data:`MICROSCOPE_SUFFIXES`: a stack ``(tilt, y, x)`` or
        ``(tilt, frame, y, x)``.
    var : str, optional
        For a file holding several images (a Velox EMD with several detectors), the title of
        the one to read (e.g. ``"HAADF"``, which is taken by default when present).

    Returns
    -------
    MicroscopeStack

    Raises
    ------
    InputError
        A file that cannot be read, holds no stack of images or several without ``var``, or whose
        pixels are not square.
    """
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    kind = _FORMATS.get(suffix)
    if kind is None:
        raise InputError(f"{path}: unknown microscope file format {suffix!r}; expected one of {MICROSCOPE_SUFFIXES}")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    signal, reader, tiff_data = _read_signal(path, suffix, kind, var)
    data = np.asarray(signal["data"]) if tiff_data is None else tiff_data
    axes = sorted(signal.get("axes") or [], key=lambda a: int(a.get("index_in_array", 0)))
    berkeley = suffix == ".emd" and _is_berkeley(path)
    if berkeley:  # RosettaSciIO reverses a Berkeley EMD's axes; its dim1 is the array's first axis
        data, axes = data.transpose(), axes[::-1]
    if tiff_data is not None and [int(a["size"]) for a in axes] != list(data.shape):
        axes = []  # the metadata describe another layout than the pages: take nothing from them
    if len(axes) != data.ndim:
        axes = [{"size": n} for n in data.shape]
    image = _image_axes(axes)
    nav = [i for i in range(data.ndim) if i not in image]
    if not nav:
        raise InputError(f"{path}: one {data.shape[image[0]]}×{data.shape[image[1]]} image; expected a tilt series "
                         "(tilt, y, x), or (tilt, frame, y, x) with several frames per tilt")
    spectral = [axes[i] for i in nav if _unit(axes[i]).lower() in ("ev", "kev", "mev", "1/nm", "1/å")]
    if spectral:
        raise InputError(f"{path}: holds spectra or diffraction (an axis in {_unit(spectral[0])}, shape {data.shape}); "
                         "expected a tilt series of images (tilt, y, x)")
    if len(nav) > 2:
        raise InputError(f"{path}: a {data.ndim}-D array of shape {data.shape}; expected a tilt series (tilt, y, x), or "
                         "(tilt, frame, y, x) with several frames per tilt")
    if len(nav) == 2 and _angle_factor(axes[nav[1]]) and not _angle_factor(axes[nav[0]]):
        nav = nav[::-1]  # the calibrated angle axis is the tilt axis
    data = np.transpose(data, nav + list(image))
    stack = MicroscopeStack(data=data, reader=reader)
    _take_pixel_size(stack, path, [axes[i] for i in image], kind)
    _take_angles(stack, path, axes[nav[0]], berkeley, suffix)
    if data.ndim == 4:
        stack.data, stack.frames = sum_frames(data)
    if data.dtype.kind == "c":
        raise InputError(f"{path}: complex images; expected real intensities (an ADF-STEM or phase image per tilt)")
    return stack


def resolve_pixel_size(stack: MicroscopeStack, given, path) -> tuple[float, str]:
    """The pixel size to use (Å) and where it came from: the given one when there is one (with a
    :class:`MetadataWarning` when the file's differs by more than :data:`PIXEL_TOLERANCE`), else the file's.

    Raises
    ------
    InputError
        When neither the file nor the caller gives one.
    """
    if given is None:
        if stack.pixel_size is None:
            raise InputError(f"{path}: the pixel size in Å is needed and this file's metadata do not hold one (its "
                             "image axes are not calibrated); expected --pixel-size (pixel_size=... in Python)")
        return stack.pixel_size, stack.pixel_size_from
    given = float(given)
    if stack.pixel_size is not None and abs(stack.pixel_size - given) > PIXEL_TOLERANCE * given:
        warnings.warn(f"{path}: the file gives a pixel size of {stack.pixel_size:.4g} Å ({stack.pixel_size_from}), "
                      f"but {given:g} Å was given ({abs(stack.pixel_size / given - 1):.1%} apart); using the given "
                      f"{given:g} Å", MetadataWarning, stacklevel=3)
    return given, "given" + (f" (the file: {stack.pixel_size:.4g} Å, {stack.pixel_size_from})"
                             if stack.pixel_size is not None else "")


def compare_angles(stack: MicroscopeStack, euler: np.ndarray, given_name: str, path) -> None:
    """Warn (:class:`MetadataWarning`) when the file's tilt angles differ from the given ``euler`` θ by more
    than :data:`ANGLE_TOLERANCE`, naming both; the given ones are used."""
    if stack.theta is None or len(stack.theta) != len(euler):
        return
    diff = np.abs(stack.theta - euler[:, 1])
    k = int(np.argmax(diff))
    if diff[k] > ANGLE_TOLERANCE:
        warnings.warn(f"{path}: the file's tilt angles ({stack.angles_from}: θ {stack.theta.min():g}…"
                      f"{stack.theta.max():g}°) differ from the given ones ({given_name}: θ {euler[:, 1].min():g}…"
                      f"{euler[:, 1].max():g}°) by up to {diff[k]:.3g}° (projection {k}: {stack.theta[k]:g}° against "
                      f"{euler[k, 1]:g}°); using the given ones", MetadataWarning, stacklevel=3)


def sum_frames(frames) -> tuple[np.ndarray, dict]:
    """Combine ``(tilt, frame, y, x)`` into ``(tilt, y, x)``: the sum of each tilt's frames.

    Each tilt's frames go through :func:`aetdask.kernels.preprocessing.align.drift_correct` (registration to
    the first frame, a linear drift fitted and undone, raster shear included). Where the drift
    over all frames stays under :data:`NEGLIGIBLE_DRIFT` px, the frames are summed as they are
    (counts stay exact); otherwise the drift-corrected average times the number of frames, with
    the few negative values the resampling leaves next to zero-count pixels set to 0.

    Returns
    -------
    summed : ndarray
        ``(tilt, y, x)``.
    record : dict
        ``n_frames``, the drift velocity of each tilt (px per frame, (y, x)), which tilts were
        resampled, and how many negative values were set to 0.

    Examples
    --------
    >>> yy, xx = np.mgrid[:32, :32]
    >>> image = np.round(100 * np.exp(-((yy - 16) ** 2 + (xx - 15) ** 2) / 8.0))
    >>> summed, record = sum_frames(np.broadcast_to(image, (2, 3, 32, 32)))  # 2 tilts of 3 frames, no drift
    >>> summed.shape, bool(np.array_equal(summed[0], 3 * image)), record["resampled"]
    ((2, 32, 32), True, [])
    """
    from aetdask.kernels.preprocessing.align import drift_correct

    frames = np.asarray(frames)
    n_tilt, n_frames = frames.shape[:2]
    if n_frames == 1:
        return frames[:, 0], {"n_frames": 1, "method": "one frame per tilt"}
    out, velocity, resampled, clipped = [], [], [], 0
    for k in range(n_tilt):
        if np.ptp(frames[k]) == 0:  # nothing to register
            velocity.append([0.0, 0.0])
            out.append(frames[k].sum(axis=0, dtype=np.float64))
            continue
        average, shifts = drift_correct(frames[k].astype(np.float64))
        v = -shifts[1]
        velocity.append([round(float(c), 4) for c in v])
        if float(np.hypot(*v)) * (n_frames - 1) < NEGLIGIBLE_DRIFT:
            out.append(frames[k].sum(axis=0, dtype=np.float64))
        else:
            total = average * n_frames
            clipped += int((total < 0).sum())
            out.append(np.maximum(total, 0.0))
            resampled.append(k)
    summed = np.stack(out)
    if summed.size and np.array_equal(summed, np.round(summed)) and frames.dtype.kind in "biu":
        summed = summed.astype(np.int64)
    return summed, {"n_frames": int(n_frames), "method": "aetdask.kernels.preprocessing.align.drift_correct, summed",
                    "drift_px_per_frame": velocity, "resampled": resampled, "negative_set_to_zero": clipped}


# ----------------------------------------------------------------------------- reading
def _read_signal(path: pathlib.Path, suffix: str, kind: str, var):
    """The one image signal of the file (RosettaSciIO's dictionary), the reader's name, and for TIFF the pages
    as tifffile reads them (RosettaSciIO gives only their metadata there)."""
    import rsciio

    reader = f"rosettasciio {rsciio.__version__}"
    tiff_data = None
    try:
        if kind == "DigitalMicrograph":
            from rsciio.digitalmicrograph import file_reader
            signals = file_reader(str(path))
        elif kind == "EMD":
            from rsciio.emd import file_reader
            signals = file_reader(str(path), select_type="images") if not _is_berkeley(path) else file_reader(str(path))
        elif kind == "MRC":
            from rsciio.mrc import file_reader
            signals = file_reader(str(path), metadata_file=None)
        else:
            import tifffile

            tiff_data = tifffile.imread(path)
            try:
                from rsciio.tiff import file_reader
                signals = file_reader(str(path), lazy=True)
            except Exception:  # noqa: BLE001 - the pages are read; metadata RosettaSciIO cannot parse are none
                signals = [{"data": tiff_data, "axes": []}]
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a damaged or foreign file makes a reader raise
        raise InputError(f"{path}: cannot read this {kind} file; is it truncated or not {kind}? "
                         f"({type(exc).__name__}: {exc})") from None
    reader += f" ({kind})"
    images = [s for s in signals if np.ndim(s.get("data")) >= 2]
    if not images:
        raise InputError(f"{path}: no images in this {kind} file; expected a tilt series")
    if kind == "TIFF":
        images = images[:1]
    titles = [str(((s.get("metadata") or {}).get("General") or {}).get("title", "")) for s in images]
    if var is not None:
        chosen = [s for s, t in zip(images, titles) if t == var]
        if not chosen:
            raise InputError(f"{path}: no image titled {var!r}; it holds {titles}")
        return chosen[0], reader, tiff_data
    if len(images) > 1:
        haadf = [s for s, t in zip(images, titles) if "HAADF" in t.upper()]
        if len(haadf) == 1:
            return haadf[0], reader, tiff_data
        raise InputError(f"{path}: holds {len(images)} images {titles}; expected one, or name it (var=... in Python, "
                         "--var on the command line)")
    return images[0], reader, tiff_data


def _is_berkeley(path: pathlib.Path) -> bool:
    """Whether an ``.emd`` is of the Berkeley layout (EMD 0.2: groups with ``emd_group_type``), not Velox."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "version_major" in f.attrs and "Version" not in f
    except OSError:
        return False


def _unit(axis) -> str:
    u = axis.get("units")
    return "" if u is None else str(u).strip()


def _length_factor(axis) -> float | None:
    return _LENGTH.get(_unit(axis)) or _LENGTH.get(_unit(axis).lower())


def _angle_factor(axis) -> float | None:
    return _ANGLE.get(_unit(axis).lower())


def _image_axes(axes) -> list[int]:
    """Indices of the (y, x) axes: the last two calibrated in a length, else the last two signal axes, else the
    last two."""
    length = [i for i, a in enumerate(axes) if _length_factor(a)]
    if len(length) >= 2:
        return length[-2:]
    signal = [i for i, a in enumerate(axes) if a.get("navigate") is False]
    if len(signal) == 2:
        return signal
    return [len(axes) - 2, len(axes) - 1]


def _take_pixel_size(stack: MicroscopeStack, path: pathlib.Path, image_axes, kind: str) -> None:
    found = None
    factors = [_length_factor(a) for a in image_axes]
    scales = [float(a.get("scale", 0) or 0) for a in image_axes]
    if all(factors) and all(s > 0 for s in scales):
        sizes = [s * f for s, f in zip(scales, factors)]
        found = (sizes, f"{path.name}: image axes calibrated {scales[0]:.6g} × {scales[1]:.6g} {_unit(image_axes[0])}")
    elif kind == "TIFF":
        found = _tiff_pixel(path)
    if found is None and path.with_name(path.name + ".mdoc").is_file():
        found = _mdoc(path.with_name(path.name + ".mdoc"))[1]
    if found is None:
        return
    (py, px), where = found
    if abs(py - px) > PIXEL_TOLERANCE * max(py, px):
        raise InputError(f"{path}: pixels of {py:.4g} × {px:.4g} Å (y × x) in its metadata ({where}); expected square "
                         "pixels (resample the images to one pixel size)")
    if px >= 1e4:  # a micrometre or more: a display resolution (TIFF's 72 dpi, say), not a calibration
        return
    stack.pixel_size, stack.pixel_size_from = float(px), where


def _tiff_pixel(path: pathlib.Path):
    """Pixel size (y, x) in Å from a TIFF's ImageJ unit and resolution, or its resolution unit (cm, inch)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            tags = page.tags
            xres, yres = tags.get("XResolution"), tags.get("YResolution")
            if xres is None or yres is None:
                return None
            per = [v.value[0] / v.value[1] if v.value[1] else 0.0 for v in (yres, xres)]  # pixels per unit
            if not all(p > 0 for p in per):
                return None
            ij = tif.imagej_metadata or {}
            unit = str(ij.get("unit", "")).strip()
            factor = _LENGTH.get(unit) or _LENGTH.get(unit.lower())
            where = f"{path.name}: ImageJ unit {unit!r} and resolution {per[1]:.6g} px per {unit}"
            if factor is None:
                resunit = tags.get("ResolutionUnit")
                resunit = int(resunit.value) if resunit is not None else 1
                factor = {2: 2.54e8, 3: 1e8}.get(resunit)  # Å per inch, per cm
                where = f"{path.name}: resolution {per[1]:.6g} px per {'inch' if resunit == 2 else 'cm'}"
            if factor is None:
                return None
            return [factor / p for p in per], where
    except Exception:  # noqa: BLE001 - no readable calibration is no calibration
        return None


def _take_angles(stack: MicroscopeStack, path: pathlib.Path, tilt_axis, berkeley: bool, suffix: str) -> None:
    n = stack.data.shape[0]
    factor = _angle_factor(tilt_axis)
    theta, where, source = None, None, None
    if factor:
        if berkeley:
            theta = _berkeley_axis(path, stack, n)
        if theta is None:
            theta = (float(tilt_axis.get("offset", 0) or 0) + float(tilt_axis.get("scale", 1) or 1) * np.arange(n))
        theta, where = np.asarray(theta, float) * factor, f"{path.name}: tilt axis in {_unit(tilt_axis)}"
    elif suffix in (".mrc", ".mrcs", ".st", ".ali"):
        theta, where = _fei_tilts(path, n), f"{path.name}: FEI extended header a_tilt"
        mdoc = path.with_name(path.name + ".mdoc")
        if theta is None and mdoc.is_file():
            theta, where = _mdoc(mdoc)[0], f"{mdoc.name}: TiltAngle of each section"
            source = str(mdoc)
            if theta is not None and len(theta) != n:
                raise InputError(f"{mdoc}: {len(theta)} TiltAngle entries for the {n} sections of {path}; expected "
                                 "one per section")
    elif suffix == ".emd":
        theta, where = _velox_tilts(path, n), f"{path.name}: stage α of each frame"
    if theta is None or len(theta) != n:
        return
    if n > 1 and np.ptp(theta) == 0:  # one stage position for every image: frames, not a tilt series
        return
    stack.theta, stack.angles_from, stack.angle_file = np.asarray(theta, float), where, source


def _berkeley_axis(path: pathlib.Path, stack: MicroscopeStack, n: int):
    """The full vector of a Berkeley EMD's angle axis (RosettaSciIO keeps only its first value and mean step)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            for group in _emd_groups(f):
                dim = group.get("dim1")
                if (dim is not None and dim.ndim == 1 and len(dim) == n and group["data"].shape[0] == n
                        and _ANGLE.get(_attr(dim, "units").lower())):
                    return np.asarray(dim[()], float)
    except (OSError, KeyError, ValueError, TypeError):
        return None
    return None


def _emd_groups(f):
    found = []
    f.visititems(lambda name, obj: found.append(obj) if getattr(obj, "attrs", {}).get("emd_group_type") == 1
                 and "data" in obj else None)
    return found


def _attr(obj, key) -> str:
    value = obj.attrs.get(key, "")
    return (value.decode() if isinstance(value, bytes) else str(value)).strip().strip("[]")


def _fei_tilts(path: pathlib.Path, n: int):
    """The α tilt of each section from an MRC stack's FEI extended header (``a_tilt``, degrees), if it has one."""
    from rsciio.mrc import file_reader

    try:
        header = file_reader(str(path), lazy=True, metadata_file=None)[0]["original_metadata"].get("fei_header")
    except Exception:  # noqa: BLE001 - the data were read; a header without tilts says nothing
        return None
    if not header or "a_tilt" not in header:
        return None
    tilts = np.atleast_1d(np.asarray(header["a_tilt"], float))[:n]
    return tilts if len(tilts) == n and np.all(np.isfinite(tilts)) else None


def _velox_tilts(path: pathlib.Path, n: int):
    """The stage α of each frame of a Velox EMD image stack (``Stage.AlphaTilt``, radians), if stored per frame."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            for key in f.get("Data/Image", {}):
                meta = f[f"Data/Image/{key}"].get("Metadata")
                if meta is None or meta.ndim != 2 or meta.shape[1] != n:
                    continue
                alpha = []
                for k in range(n):
                    text = bytes(meta[:, k]).rstrip(b"\x00").decode("utf-8", "replace")
                    alpha.append(float(json.loads(text)["Stage"]["AlphaTilt"]))
                return np.degrees(alpha)
    except (OSError, KeyError, ValueError, TypeError):
        return None
    return None


def _mdoc(path: pathlib.Path):
    """``(θ per section or None, ((pixel, pixel), where) or None)`` from a SerialEM ``.mdoc``."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None, None
    sections: dict[int, float] = {}
    current = None
    pixel = None
    for line in text.splitlines():
        m = re.match(r"\s*\[ZValue\s*=\s*(\d+)\s*\]", line)
        if m:
            current = int(m.group(1))
            continue
        m = re.match(r"\s*(\w+)\s*=\s*(\S+)", line)
        if not m:
            continue
        key, value = m.groups()
        try:
            if key == "TiltAngle" and current is not None:
                sections[current] = float(value)
            elif key == "PixelSpacing" and pixel is None:
                pixel = float(value)  # Å
        except ValueError:
            continue
    theta = np.array([sections[k] for k in sorted(sections)]) if sections else None
    found = (([pixel, pixel], f"{path.name}: PixelSpacing {pixel:g} Å") if pixel and pixel > 0 else None)
    return theta, found
