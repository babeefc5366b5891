"""Microscope files read with their metadata (aetdask.io.microscope through aetdask.io.read_tilt_series).

Every file here is written by an independent writer — ``mrcfile`` (MRC, with the voxel size in its header, an
FEI extended header, a SerialEM ``.mdoc``), ``tifffile`` (TIFF with ImageJ or TIFF resolution metadata) and
``h5py`` (EMD in the Berkeley layout) — and read back through RosettaSciIO: the pixel size in Å from files
calibrated in nm, µm, pm or metres, the tilt angles from the file or from an IMOD ``.tlt``/``.rawtlt``, several
frames per tilt summed, a pixel size that contradicts the given one warned about, and a file that says nothing
refused in one line. Real DigitalMicrograph files are read when some are at hand: RosettaSciIO's own test data
in its installed package, or a folder named by ``AETDASK_DM_DIR`` (e.g. ``rsciio/tests/data/digitalmicrograph``
of a RosettaSciIO checkout); the test is skipped otherwise.
"""

import os
import pathlib
import warnings

import h5py
import mrcfile
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from aetdask.cli import main
from aetdask.errors import InputError
from aetdask.io import read_angles, read_tilt_series
from aetdask.io.microscope import MetadataWarning, read_microscope, sum_frames

N = 32
THETA = np.array([-60.0, -45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0, 60.0])
NT = len(THETA)


def blobs(n=N, nt=NT, seed=0, shift=(0.0, 0.0)):
    """A (tilt, y, x) series of Poisson counts of a few Gaussian blobs (moved by ``shift`` px)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n].astype(float)
    img = 2.0 + sum(60 * np.exp(-((yy - cy - shift[0]) ** 2 + (xx - cx - shift[1]) ** 2) / 6.0)
                    for cy, cx in ((12, 13), (19, 18), (15, 21)))
    return rng.poisson(np.repeat(img[None], nt, axis=0)).astype(np.float32)


def quiet(func, *args, **kwargs):
    """``func(...)`` with the plausibility warnings of a tiny synthetic series silenced; MetadataWarnings raise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", MetadataWarning)
        return func(*args, **kwargs)


def write_mrc(path, data, voxel=None, extended=None):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        if voxel is not None:
            m.voxel_size = voxel
        if extended is not None:
            m.set_extended_header(extended)
    return path


def write_berkeley_emd(path, data, dims):
    """EMD 0.2 (Berkeley): one emd_group_type 1 group with ``data`` and ``dim1…dimN`` (name, units)."""
    with h5py.File(path, "w") as f:
        f.attrs["version_major"], f.attrs["version_minor"] = 0, 2
        group = f.create_group("data/tilt_series")
        group.attrs["emd_group_type"] = 1
        group.create_dataset("data", data=data)
        for i, (name, units, values) in enumerate(dims, 1):
            dim = group.create_dataset(f"dim{i}", data=np.asarray(values, float))
            dim.attrs["name"], dim.attrs["units"] = name, units
    return path


def write_tlt(path, theta):
    path.write_text("".join(f"{t:8.2f}\n" for t in theta))  # IMOD: one angle per line, degrees
    return path


# ----------------------------------------------------------------------------- MRC
def test_mrc_voxel_size_from_header_and_tlt_angles(tmp_path):
    data = blobs()
    f = write_mrc(tmp_path / "series.mrc", data, voxel=0.4)
    tlt = write_tlt(tmp_path / "series.tlt", THETA)
    ts = quiet(read_tilt_series, f, angles=tlt)
    assert ts.dims == ("tilt", "y", "x") and ts.attrs["pixel_size"] == pytest.approx(0.4)
    np.testing.assert_array_equal(ts.values, data)
    np.testing.assert_allclose(ts.theta.values, THETA)
    record = ts.attrs["provenance"][-1]
    assert "series.mrc" in record["params"]["pixel_size_from"] and "nm" in record["params"]["pixel_size_from"]
    assert record["params"]["angles_from"] == "given" and str(tlt) in record["inputs"]
    assert record["params"]["reader"].startswith("rosettasciio")


@pytest.mark.parametrize("suffix", [".st", ".ali", ".mrcs"])
def test_imod_stack_names_and_rawtlt(tmp_path, suffix):
    data = blobs()
    f = write_mrc(tmp_path / f"series{suffix}", data, voxel=0.3)
    rawtlt = write_tlt(tmp_path / "series.rawtlt", THETA)
    ts = quiet(read_tilt_series, f, angles=rawtlt)
    assert ts.attrs["pixel_size"] == pytest.approx(0.3)
    np.testing.assert_allclose(ts.theta.values, THETA)


def test_tlt_angles_are_theta_per_line(tmp_path):
    euler = read_angles(write_tlt(tmp_path / "a.tlt", THETA))
    assert euler.shape == (NT, 3)
    np.testing.assert_allclose(euler[:, 1], THETA)
    np.testing.assert_array_equal(euler[:, [0, 2]], 0)


def test_mrc_fei_extended_header_gives_angles_and_pixel(tmp_path):
    # the FEI extended header of a Thermo Fisher tomography stack: 1024 records of 128 bytes, the first 13 floats
    fei = np.dtype([("a_tilt", "<f4"), ("b_tilt", "<f4"), ("x_stage", "<f4"), ("y_stage", "<f4"),
                    ("z_stage", "<f4"), ("x_shift", "<f4"), ("y_shift", "<f4"), ("defocus", "<f4"),
                    ("exp_time", "<f4"), ("mean_int", "<f4"), ("tilt_axis", "<f4"), ("pixel_size", "<f4"),
                    ("magnification", "<f4"), ("empty", "V76")])
    ext = np.zeros(1024, dtype=fei)
    ext["a_tilt"][:NT] = THETA
    ext["pixel_size"][:NT] = 0.35e-10  # metres
    f = write_mrc(tmp_path / "fei.mrc", blobs(), extended=ext)
    ts = quiet(read_tilt_series, f)
    assert ts.attrs["pixel_size"] == pytest.approx(0.35, rel=1e-5)
    np.testing.assert_allclose(ts.theta.values, THETA, atol=1e-5)
    assert "FEI extended header" in ts.attrs["provenance"][-1]["params"]["angles_from"]


def test_serialem_mdoc_beside_the_stack(tmp_path):
    f = write_mrc(tmp_path / "tomo.mrc", blobs())  # no voxel size in the header
    lines = ["PixelSpacing = 0.45", "ImageFile = tomo.mrc", ""]
    for k, t in enumerate(THETA):
        lines += [f"[ZValue = {k}]", f"TiltAngle = {t:.2f}", "ExposureTime = 0.5", ""]
    (tmp_path / "tomo.mrc.mdoc").write_text("\n".join(lines))
    ts = quiet(read_tilt_series, f)
    assert ts.attrs["pixel_size"] == pytest.approx(0.45)
    np.testing.assert_allclose(ts.theta.values, THETA)
    assert str(tmp_path / "tomo.mrc.mdoc") in ts.attrs["provenance"][-1]["inputs"]


def test_garbage_mrc_is_refused(tmp_path):
    f = tmp_path / "junk.mrc"
    f.write_bytes(b"not an MRC file" * 4)
    with pytest.raises(InputError, match="junk.mrc: cannot read this MRC file"):
        read_tilt_series(f, THETA, 0.4)


# ----------------------------------------------------------------------------- TIFF
def test_tiff_imagej_resolution_in_nm(tmp_path):
    data = blobs()
    f = tmp_path / "series.tif"
    tifffile.imwrite(f, data, imagej=True, resolution=(1 / 0.025, 1 / 0.025), metadata={"unit": "nm"})
    ts = quiet(read_tilt_series, f, angles=THETA)
    assert ts.attrs["pixel_size"] == pytest.approx(0.25)
    np.testing.assert_array_equal(ts.values, data)


def test_tiff_resolution_in_cm_and_display_resolution_ignored(tmp_path):
    f = tmp_path / "cm.tif"
    tifffile.imwrite(f, blobs(), resolution=(1e8 / 0.3, 1e8 / 0.3), resolutionunit="CENTIMETER")  # 0.3 Å per px
    assert quiet(read_tilt_series, f, angles=THETA).attrs["pixel_size"] == pytest.approx(0.3)
    g = tmp_path / "dpi.tif"
    tifffile.imwrite(g, blobs(), resolution=(72, 72), resolutionunit="INCH")  # a screen's 72 dpi says nothing
    assert read_microscope(g).pixel_size is None


# ----------------------------------------------------------------------------- EMD (Berkeley)
@pytest.mark.parametrize("unit, scale, expected", [("nm", 0.025, 0.25), ("µm", 3e-5, 0.3), ("pm", 35.0, 0.35),
                                                   ("m", 2e-11, 0.2)])
def test_berkeley_emd_pixel_size_in_angstrom_and_angles(tmp_path, unit, scale, expected):
    data = blobs()
    theta = THETA + np.array([0, 0.3, 0, -0.2, 0, 0, 0.1, 0, 0])  # not evenly spaced: the axis vector is taken
    f = write_berkeley_emd(tmp_path / "series.emd", data, [("tilt", "deg", theta), ("y", unit, np.arange(N) * scale),
                                                          ("x", unit, np.arange(N) * scale)])
    ts = quiet(read_tilt_series, f)
    assert ts.attrs["pixel_size"] == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(ts.theta.values, theta)
    np.testing.assert_array_equal(ts.values, data)  # (tilt, y, x) as the file's dim1, dim2, dim3
    params = ts.attrs["provenance"][-1]["params"]
    assert "tilt axis in deg" in params["angles_from"] and unit in params["pixel_size_from"]


def test_multi_frame_stack_is_summed(tmp_path):
    data = blobs(nt=NT * 4, seed=1).reshape(NT, 4, N, N).astype(np.uint16)  # no drift: 4 frames per tilt
    f = write_berkeley_emd(tmp_path / "frames.emd", data, [("tilt", "deg", THETA), ("frame", "", np.arange(4)),
                                                           ("y", "nm", np.arange(N) * 0.03),
                                                           ("x", "nm", np.arange(N) * 0.03)])
    ts = quiet(read_tilt_series, f)
    assert ts.shape == (NT, N, N) and ts.attrs["pixel_size"] == pytest.approx(0.3)
    frames = ts.attrs["provenance"][-1]["params"]["frames"]
    assert frames["n_frames"] == 4 and len(frames["drift_px_per_frame"]) == NT
    summed_exactly = [k for k in range(NT) if k not in frames["resampled"]]
    np.testing.assert_array_equal(ts.values[summed_exactly], data.sum(axis=1)[summed_exactly])
    np.testing.assert_allclose(ts.values.sum(), data.sum(), rtol=1e-3)


def centroid(image):
    above = np.clip(image - np.median(image), 0, None)
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    return np.array([(above * yy).sum(), (above * xx).sum()]) / above.sum()


def test_drifting_frames_are_aligned_before_summing():
    frames = np.stack([blobs(nt=1, seed=f, shift=(0.8 * f, -0.5 * f))[0] for f in range(5)])[None]
    summed, record = sum_frames(frames)
    assert record["resampled"] == [0] and record["n_frames"] == 5
    np.testing.assert_allclose(record["drift_px_per_frame"][0], [0.8, -0.5], atol=0.2)
    reference = np.sum([blobs(nt=1, seed=f)[0] for f in range(5)], axis=0)  # the sample where the first frame saw it
    plain = frames[0].sum(axis=0)
    np.testing.assert_allclose(centroid(summed[0]), centroid(reference), atol=0.3)
    assert np.abs(centroid(plain) - centroid(reference)).max() > 1.0  # what summing without alignment would give
    assert np.corrcoef(summed[0].ravel(), reference.ravel())[0, 1] > 0.97 > np.corrcoef(plain.ravel(),
                                                                                        reference.ravel())[0, 1]
    assert summed.min() >= 0 and summed.sum() == pytest.approx(frames.sum(), rel=0.02)


# ----------------------------------------------------------------------------- what the user gives
def test_contradicting_pixel_size_warns_and_the_given_one_wins(tmp_path):
    f = write_mrc(tmp_path / "series.mrc", blobs(), voxel=0.4)
    with pytest.warns(MetadataWarning, match=r"series\.mrc: the file gives a pixel size of 0\.4 Å .* but 0\.5 Å was "
                                             r"given \(20\.0% apart\); using the given 0\.5 Å"):
        ts = read_tilt_series(f, angles=THETA, pixel_size=0.5)
    assert ts.attrs["pixel_size"] == 0.5
    assert "the file: 0.4 Å" in ts.attrs["provenance"][-1]["params"]["pixel_size_from"]
    assert quiet(read_tilt_series, f, angles=THETA, pixel_size=0.402).attrs["pixel_size"] == 0.402  # within 1 %


def test_contradicting_angles_warn_and_the_given_ones_win(tmp_path):
    f = write_berkeley_emd(tmp_path / "series.emd", blobs(), [("tilt", "deg", THETA), ("y", "nm", np.arange(N) * 0.04),
                                                              ("x", "nm", np.arange(N) * 0.04)])
    given = THETA.copy()
    given[2] += 2.0
    with pytest.warns(MetadataWarning, match=r"by up to 2° \(projection 2: -30° against -28°\); using the given ones"):
        ts = read_tilt_series(f, angles=given)
    np.testing.assert_allclose(ts.theta.values, given)


def test_no_pixel_size_and_none_given_is_refused_in_one_line(tmp_path):
    f = tmp_path / "bare.tif"
    tifffile.imwrite(f, blobs())
    with pytest.raises(InputError) as e:
        read_tilt_series(f, angles=THETA)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{f}: the pixel size in Å is needed and this file's metadata do not "
                                              "hold one")
    assert "--pixel-size" in msg
    with pytest.raises(InputError, match=r"bare\.tif: the tilt angles are needed and this file's metadata do not "
                                         r"hold them; expected --angles FILE"):
        read_tilt_series(f, pixel_size=0.3)


def test_plain_tiff_reads_as_before(tmp_path):
    data = blobs()
    f = tmp_path / "plain.TIFF"
    tifffile.imwrite(f, data)
    ts = quiet(read_tilt_series, f, THETA, 0.3)
    np.testing.assert_array_equal(ts.values, data)
    assert ts.attrs["pixel_size"] == 0.3


# ----------------------------------------------------------------------------- the command line
def test_import_takes_pixel_size_from_the_file_and_refuses_without(tmp_path):
    runner = CliRunner()
    f = write_mrc(tmp_path / "series.mrc", blobs(), voxel=0.4)
    tlt = write_tlt(tmp_path / "series.tlt", THETA)
    r = runner.invoke(main, ["import", str(f), "--angles", str(tlt), "--out", str(tmp_path / "run.zarr")])
    assert r.exit_code == 0, r.output
    assert "pixel 0.4" in r.output
    bare = write_mrc(tmp_path / "bare.mrc", blobs())
    r = runner.invoke(main, ["import", str(bare), "--angles", str(tlt), "--out", str(tmp_path / "new.zarr")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    (line,) = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: {bare}: the pixel size in Å is needed") and not (tmp_path / "new.zarr").exists()
    r = runner.invoke(main, ["run", str(bare), "--angles", str(tlt), "--species", "Si", "--out",
                             str(tmp_path / "new.zarr")])
    assert r.exit_code == 2 and f"error: {bare}: the pixel size in Å is needed" in r.output, r.output


# ----------------------------------------------------------------------------- DigitalMicrograph
def _dm_samples():
    import rsciio

    roots = [pathlib.Path(rsciio.__file__).parent]
    if os.environ.get("AETDASK_DM_DIR"):
        roots.append(pathlib.Path(os.environ["AETDASK_DM_DIR"]))
    return sorted(p for root in roots for suffix in ("*.dm3", "*.dm4") for p in root.rglob(suffix))


def test_real_digitalmicrograph_stacks():
    from rsciio.digitalmicrograph import file_reader

    samples = _dm_samples()
    if not samples:
        pytest.skip("no DigitalMicrograph sample at hand (RosettaSciIO's wheel ships no test data; set AETDASK_DM_DIR)")
    read = 0
    for path in samples:
        try:
            signal = file_reader(str(path))[0]
        except Exception:  # noqa: BLE001 - RosettaSciIO's own corner cases (spectra, complex FFTs)
            continue
        axes = signal["axes"]
        if any(a["units"] in ("eV", "keV") for a in axes):  # a spectrum image is refused, not read as tilts
            with pytest.raises(InputError, match="holds spectra or diffraction|no images"):
                read_microscope(path)
            continue
        if np.ndim(signal["data"]) != 3 or np.iscomplexobj(signal["data"]) or [a["navigate"] for a in axes] != [
                True, False, False]:
            continue
        stack = read_microscope(path)
        np.testing.assert_array_equal(stack.data, signal["data"])
        factor = {"nm": 10.0, "µm": 1e4, "pm": 0.01, "Å": 1.0}.get(axes[2]["units"])
        if factor:
            assert stack.pixel_size == pytest.approx(axes[2]["scale"] * factor)
        else:
            assert stack.pixel_size is None
        read += 1
    assert read, "none of the DigitalMicrograph samples is an image stack"


@pytest.mark.slow
def test_run_accepts_an_mrc_stack_directly(tmp_path):
    """`aetdask run series.mrc --angles series.tlt` with the pixel size from the header, then the volume out."""
    from aetdask.simulate import amorphous_particle, linear

    theta = np.linspace(-70, 70, 15)
    ts = linear(amorphous_particle(30, species=["Si"], seed=1), angles=theta, pixel_size=0.4, shape=40, dose=2e4,
                seed=0).compute()
    f = write_mrc(tmp_path / "series.mrc", ts.values.astype(np.float32), voxel=0.4)
    tlt = write_tlt(tmp_path / "series.tlt", theta)
    runner = CliRunner()
    r = runner.invoke(main, ["run", str(f), "--angles", str(tlt), "--species", "Si", "--out", str(tmp_path / "r.zarr"),
                             "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["export", str(tmp_path / "r.zarr"), "--volume", str(tmp_path / "v.mrc")])
    assert r.exit_code == 0, r.output
    with mrcfile.open(tmp_path / "v.mrc") as m:
        assert m.data.shape == (40, 40, 40) and m.voxel_size.x == pytest.approx(0.4)
