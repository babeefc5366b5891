"""Tests of aetdask.io: tilt-series, tilt-angle and atomic-model readers and writers.

Synthetic files (all small, in tmp_path) check every layout, the orientation of
the arrays and the error messages; the seed paper's own files are checked when
``../shared/reference/seed-paper`` is present.
"""

import pathlib
import re

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile

from aetdask.errors import InputError
from aetdask.io import read_angles, read_atoms, read_tilt_series, write_atoms
from aetdask.schema import atoms as make_atoms

SEED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed-paper"
needs_seed = pytest.mark.skipif(not SEED.is_dir(), reason="seed-paper data not present")

N = 8          # image side (square)
NT = 5         # projections
PIXEL = 0.5    # Å
THETA = np.array([-60.0, -30.0, 0.0, 30.0, 60.0])


# ----------------------------------------------------------------------------- helpers
def pattern(n=N, nt=NT):
    """MATLAB-order (dim1, dim2, angle) stack whose every value encodes its (i, j, k) index."""
    i, j, k = np.meshgrid(np.arange(n), np.arange(n), np.arange(nt), indexing="ij")
    return (1000 * i + 10 * j + k + 1).astype(np.float64)  # > 0, all distinct, not symmetric


def write_v73(path, **arrays):
    """Write a .mat the way MATLAB -v7.3 does: HDF5, 512-byte user block, arrays transposed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in arrays.items():
            f.create_dataset(name, data=np.asarray(arr).T)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116, b" "))
    return path


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def input_error(path, pattern, func, *args, **kwargs):
    """``func(*args, **kwargs)`` must raise InputError naming ``path``.

    ``pattern`` is searched in the message with every file path blanked out, so
    it cannot match by accident inside a tmp_path (which holds the test's name).
    """
    with pytest.raises(InputError) as e:
        func(*args, **kwargs)
    msg = str(e.value)
    assert str(path) in msg, msg
    bare = re.sub(r"/[^\s:'\",()\]]+", "<path>", msg)
    assert re.search(pattern, bare), f"{pattern!r} not found in {bare!r}"
    return msg


def assert_orientation(ts, arr):
    """ts is (tilt, y, x) with ts[k, i, j] == arr[i, j, k] for MATLAB-order arr."""
    n1, n2, nt = arr.shape
    assert ts.dims == ("tilt", "y", "x")
    assert ts.shape == (nt, n1, n2)
    np.testing.assert_array_equal(ts.values, np.moveaxis(arr, 2, 0))
    # spot checks that fail for a transposed image or a reversed tilt axis
    assert ts.values[1, 2, 5] == arr[2, 5, 1] == 2000 + 50 + 1 + 1
    assert ts.values[1, 2, 5] != arr[5, 2, 1]
    assert ts.values[nt - 1, 0, 0] == arr[0, 0, nt - 1] == nt


@pytest.fixture
def angle_file(tmp_path):
    p = tmp_path / "angles.txt"
    p.write_text("\n".join(f"{t:g}" for t in THETA) + "\n")
    return p


# ----------------------------------------------------------------------------- tilt series
class TestReadTiltSeries:
    def test_mat_v5_orientation_coords_attrs(self, tmp_path):
        arr = pattern()
        f = tmp_path / "ts.mat"
        scipy.io.savemat(f, {"P": arr})
        euler = np.stack([np.full(NT, 1.5), THETA, np.full(NT, -2.5)], axis=1)
        np.save(tmp_path / "euler.npy", euler)
        ts = read_tilt_series(f, tmp_path / "euler.npy", PIXEL)
        assert_orientation(ts, arr)
        np.testing.assert_array_equal(ts.phi.values, np.full(NT, 1.5))
        np.testing.assert_array_equal(ts.theta.values, THETA)
        np.testing.assert_array_equal(ts.psi.values, np.full(NT, -2.5))
        assert ts.phi.dims == ts.theta.dims == ts.psi.dims == ("tilt",)
        assert ts.attrs["pixel_size"] == PIXEL
        assert ts.attrs["units"] == "counts"
        # origin at index N // 2, spacing = pixel size
        np.testing.assert_allclose(ts.x.values, (np.arange(N) - N // 2) * PIXEL)
        np.testing.assert_allclose(ts.y.values, (np.arange(N) - N // 2) * PIXEL)
        assert ts.x.values[4] == 0.0 and ts.y.values[4] == 0.0
        assert ts.x.values[0] == -2.0 and ts.x.values[-1] == 1.5
        prov = ts.attrs["provenance"]
        assert isinstance(prov, list) and prov[-1]["stage"] == "io.read_tilt_series"
        assert str(f) in prov[-1]["inputs"]

    def test_mat_v5_integer_data_become_float(self, tmp_path):
        arr = pattern().astype(np.uint16)
        f = tmp_path / "ts.mat"
        scipy.io.savemat(f, {"P": arr})
        ts = read_tilt_series(f, THETA, PIXEL)
        assert ts.dtype == np.float32
        assert_orientation(ts, arr.astype(np.float64))

    def test_mat_v73_same_as_v5(self, tmp_path):
        arr = pattern()
        v5, v73 = tmp_path / "v5.mat", tmp_path / "v73.mat"
        scipy.io.savemat(v5, {"P": arr})
        write_v73(v73, P=arr)
        assert h5py.is_hdf5(v73)
        with h5py.File(v73, "r") as f:  # stored reversed, as MATLAB does
            assert f["P"].shape == (NT, N, N)
        a = read_tilt_series(v5, THETA, PIXEL)
        b = read_tilt_series(v73, THETA, PIXEL)
        assert_orientation(b, arr)
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.theta.values, b.theta.values)

    def test_npy_tilt_y_x(self, tmp_path):
        stack = np.moveaxis(pattern(), 2, 0).copy()  # (tilt, y, x)
        f = tmp_path / "ts.npy"
        np.save(f, stack)
        ts = read_tilt_series(f, THETA, PIXEL)
        assert ts.shape == (NT, N, N)
        np.testing.assert_array_equal(ts.values, stack)
        assert ts.values[1, 2, 5] == 2052

    def test_multipage_tiff(self, tmp_path):
        stack = np.moveaxis(pattern(), 2, 0).astype(np.float32)
        f = tmp_path / "ts.tif"
        tifffile.imwrite(f, stack)
        ts = read_tilt_series(f, THETA, PIXEL)
        assert ts.shape == (NT, N, N)
        np.testing.assert_array_equal(ts.values, stack)
        assert ts.values[1, 2, 5] == 2052
        f2 = tmp_path / "ts.TIFF"  # suffix is case-insensitive
        tifffile.imwrite(f2, stack)
        np.testing.assert_array_equal(read_tilt_series(f2, THETA, PIXEL).values, stack)

    def test_var_selects_array(self, tmp_path):
        a, b = pattern(), pattern() + 7
        f = tmp_path / "two.mat"
        scipy.io.savemat(f, {"first": a, "second": b, "pixel": np.array([[0.5]])})
        np.testing.assert_array_equal(read_tilt_series(f, THETA, PIXEL, var="second").values,
                                      np.moveaxis(b, 2, 0))
        np.testing.assert_array_equal(read_tilt_series(f, THETA, PIXEL, var="first").values,
                                      np.moveaxis(a, 2, 0))
        input_error(f, r"exactly one 3-D array, found \['first', 'second'\].*var=", read_tilt_series, f, THETA, PIXEL)
        input_error(f, r"no numeric variable 'nope'.*'first'", read_tilt_series, f, THETA, PIXEL, var="nope")
        input_error(f, r"'pixel' is not 3-D", read_tilt_series, f, THETA, PIXEL, var="pixel")

    def test_var_selects_array_v73(self, tmp_path):
        a, b = pattern(), pattern() + 7
        f = write_v73(tmp_path / "two73.mat", first=a, second=b)
        np.testing.assert_array_equal(read_tilt_series(f, THETA, PIXEL, var="second").values,
                                      np.moveaxis(b, 2, 0))
        input_error(f, r"\['first', 'second'\]", read_tilt_series, f, THETA, PIXEL)

    def test_angles_as_array_and_units_dose(self, tmp_path):
        f = tmp_path / "ts.npy"
        np.save(f, np.moveaxis(pattern(), 2, 0))
        euler = np.stack([np.zeros(NT), THETA, np.ones(NT)])  # (3, n)
        ts = read_tilt_series(f, euler, PIXEL, units="a.u.", dose=1.6e4)
        np.testing.assert_array_equal(ts.theta.values, THETA)
        np.testing.assert_array_equal(ts.psi.values, np.ones(NT))
        assert ts.attrs["units"] == "a.u." and ts.attrs["dose"] == 1.6e4


# ----------------------------------------------------------------------------- angles
class TestReadAngles:
    def test_mat_uint8_like_si_angle(self, tmp_path):
        theta = np.arange(0, 180, 3)
        angle = np.stack([np.zeros(60), theta, np.zeros(60)], axis=1).astype(np.uint8)
        f = tmp_path / "Si_Angle.mat"
        scipy.io.savemat(f, {"Angle": angle})
        e = read_angles(f)
        assert e.shape == (60, 3) and e.dtype == np.float64
        np.testing.assert_array_equal(e[:, 1], theta)
        assert not e[:, 0].any() and not e[:, 2].any()

    def test_npy_theta_only(self, tmp_path):
        f = tmp_path / "t.npy"
        np.save(f, THETA)
        e = read_angles(f)
        np.testing.assert_array_equal(e, np.stack([np.zeros(NT), THETA, np.zeros(NT)], axis=1))

    def test_text_theta_per_line(self, angle_file):
        e = read_angles(angle_file)
        assert e.shape == (NT, 3)
        np.testing.assert_array_equal(e[:, 1], THETA)
        assert not e[:, [0, 2]].any()

    def test_text_euler_rows_with_comments(self, tmp_path):
        f = tmp_path / "euler.txt"
        f.write_text(
            "# phi theta psi (degrees)\n"
            "% MATLAB-style comment\n"
            "1.0  -60  0.5\n"
            "\n"
            "2.0, -30, 0.25   # trailing comment\n"
            "3.0\t0\t-0.5 % another\n"
        )
        e = read_angles(f)
        np.testing.assert_array_equal(e, [[1.0, -60, 0.5], [2.0, -30, 0.25], [3.0, 0, -0.5]])

    def test_transposed_3_by_n(self, tmp_path):
        euler = np.stack([np.arange(NT) + 0.5, THETA, -np.arange(NT) - 0.5], axis=1)  # (n, 3)
        np.save(tmp_path / "t.npy", euler.T)
        np.testing.assert_array_equal(read_angles(tmp_path / "t.npy"), euler)
        scipy.io.savemat(tmp_path / "t.mat", {"A": euler.T})
        np.testing.assert_array_equal(read_angles(tmp_path / "t.mat"), euler)

    def test_v73_angles_beside_other_arrays(self, tmp_path):
        """Like CoPdPt_RefinedAngles.mat: Angle_OPT (n×3) next to R_OPT (7) and scalars."""
        euler = np.stack([np.full(NT, 0.1), THETA, np.full(NT, -0.2)], axis=1).astype(np.float32)
        f = write_v73(tmp_path / "refined.mat", Angle_OPT=euler, R_OPT=np.full((7, 1), 0.038),
                      dk=np.array([[0.025]]), n=np.array([[7.0]]))
        np.testing.assert_allclose(read_angles(f), euler)
        np.testing.assert_allclose(read_angles(f, var="R_OPT")[:, 1], np.full(7, 0.038), rtol=1e-6)

    def test_errors(self, tmp_path):
        missing = tmp_path / "missing.txt"
        input_error(missing, "no such file", read_angles, missing)
        bad = tmp_path / "bad.txt"
        bad.write_text("phi theta psi\n0 1 2\n")
        input_error(bad, "text numbers", read_angles, bad)
        ragged = tmp_path / "ragged.txt"
        ragged.write_text("0 1 2\n0 3\n")
        input_error(ragged, "text numbers", read_angles, ragged)
        empty = tmp_path / "empty.txt"
        empty.write_text("# nothing here\n")
        input_error(empty, "no angles", read_angles, empty)
        nan = tmp_path / "nan.npy"
        np.save(nan, np.array([0.0, np.nan, 3.0]))
        input_error(nan, "NaN", read_angles, nan)
        two = tmp_path / "two.mat"
        scipy.io.savemat(two, {"a": THETA, "b": THETA + 1})
        input_error(two, r"exactly one angle array, found \['a', 'b'\]", read_angles, two)


# ----------------------------------------------------------------------------- tilt-series errors
class TestTiltSeriesErrors:
    def check(self, path, match, *args, **kwargs):
        return input_error(path, match, read_tilt_series, path, *args, **kwargs)

    def test_truncated_mat_v5(self, tmp_path):
        f = tmp_path / "cut.mat"
        scipy.io.savemat(f, {"P": pattern()})
        self.check(truncate(f), "truncated", THETA, PIXEL)

    def test_truncated_mat_v73(self, tmp_path):
        f = write_v73(tmp_path / "cut73.mat", P=pattern())
        self.check(truncate(f), r"v7\.3 \(HDF5\)", THETA, PIXEL)

    def test_truncated_npy(self, tmp_path):
        f = tmp_path / "cut.npy"
        np.save(f, np.moveaxis(pattern(), 2, 0))
        self.check(truncate(f), "truncated", THETA, PIXEL)

    def test_garbage_tif(self, tmp_path):
        f = tmp_path / "junk.tif"
        f.write_bytes(b"this is not a TIFF file at all \x00\x01\x02" * 8)
        self.check(f, "cannot read this TIFF", THETA, PIXEL)

    def test_angle_count_mismatch(self, tmp_path, angle_file):
        f = tmp_path / "ts.npy"
        np.save(f, np.moveaxis(pattern(nt=NT + 1), 2, 0))
        msg = self.check(f, f"{NT + 1} projections but {NT} angles", angle_file, PIXEL)
        assert str(angle_file) in msg
        self.check(f, f"{NT + 1} projections but {NT} angles", THETA, PIXEL)

    def test_nan(self, tmp_path):
        stack = np.moveaxis(pattern(), 2, 0).copy()
        stack[3, 1, 1] = np.nan
        f = tmp_path / "nan.npy"
        np.save(f, stack)
        self.check(f, r"NaN or Inf \(first at tilt 3\)", THETA, PIXEL)

    def test_negative_counts(self, tmp_path):
        stack = np.moveaxis(pattern(), 2, 0).copy()
        stack[2, 0, 3] = -4.0
        f = tmp_path / "neg.npy"
        np.save(f, stack)
        self.check(f, r"negative values in count data \(tilt 2, min -4\).*units='a\.u\.'", THETA, PIXEL)
        self.check(f, "negative values", THETA, PIXEL, units="counts")
        ts = read_tilt_series(f, THETA, PIXEL, units="a.u.")
        assert ts.attrs["units"] == "a.u." and ts.values[2, 0, 3] == -4.0

    def test_non_square(self, tmp_path):
        f = tmp_path / "rect.mat"
        scipy.io.savemat(f, {"P": np.ones((8, 6, NT))})
        self.check(f, "images must be square, got 8×6", THETA, PIXEL)

    def test_all_zero(self, tmp_path):
        f = tmp_path / "zero.npy"
        np.save(f, np.zeros((NT, N, N)))
        self.check(f, "every pixel is zero", THETA, PIXEL)

    def test_missing_pixel_size_and_angles(self, tmp_path):
        f = tmp_path / "ts.npy"
        np.save(f, np.moveaxis(pattern(), 2, 0))
        self.check(f, "pixel size", THETA)
        self.check(f, "pixel size", THETA, None)
        self.check(f, "tilt angles are needed", None, PIXEL)

    def test_not_3d(self, tmp_path):
        f = tmp_path / "img.npy"
        np.save(f, np.ones((N, N)))
        self.check(f, "3-D", THETA, PIXEL)

    def test_unknown_suffix(self, tmp_path):
        f = tmp_path / "ts.h5"
        f.write_bytes(b"\x00" * 64)
        msg = self.check(f, "unknown tilt-series format", THETA, PIXEL)
        assert "'.h5'" in msg and ".npy" in msg

    def test_missing_file(self, tmp_path):
        self.check(tmp_path / "nothere.mat", "no such file", THETA, PIXEL)

    def test_missing_angle_file(self, tmp_path):
        f = tmp_path / "ts.npy"
        np.save(f, np.moveaxis(pattern(), 2, 0))
        missing = tmp_path / "noangles.txt"
        input_error(missing, "no such file", read_tilt_series, f, missing, PIXEL)


@needs_seed
@pytest.mark.seed
def test_seed_tilt_series():
    f = SEED / "aSi_2nmFosCetr_Dose1p6e4_cov35pm_ForBM3D.mat"
    ts = read_tilt_series(f, SEED / "Si_Angle.mat", 0.195)
    assert ts.dims == ("tilt", "y", "x") and ts.shape == (60, 128, 128)
    np.testing.assert_array_equal(ts.theta.values, np.arange(0, 180, 3))
    assert not ts.phi.values.any() and not ts.psi.values.any()
    v = ts.values
    assert v.min() == 0 and v.max() == 12
    np.testing.assert_array_equal(v, np.round(v))
    assert float(v.mean()) == pytest.approx(1.36, abs=0.005)
    assert ts.attrs["pixel_size"] == 0.195
    assert ts.x.values[64] == 0.0 and ts.x.values[0] == pytest.approx(-64 * 0.195)
    raw = scipy.io.loadmat(f)["Trunc_projections_forBM3D"]
    for k in (0, 17, 59):  # projection k is MATLAB P(:, :, k+1), not transposed
        np.testing.assert_array_equal(v[k], raw[:, :, k])


@needs_seed
@pytest.mark.seed
def test_seed_angle_files():
    np.testing.assert_array_equal(read_angles(SEED / "SiGeSn_Angle.mat")[:, 1], np.arange(0, 180, 3))
    true = read_angles(SEED / "CoPdPt_Angle_Dose1p7e4.mat")
    assert true.shape == (55, 3)
    assert true[:4, 1] == pytest.approx([-68.786, -63.638, -66.1, -70.2], abs=0.05)
    assert true[:, 1].min() == pytest.approx(-70.2, abs=0.05) and true[:, 1].max() == pytest.approx(75.0, abs=0.05)
    exp = read_angles(SEED / "CoPdPt_ExperimentalAngles.mat")
    assert exp.shape == (55, 3) and not exp[:, 0].any() and not exp[:, 2].any()
    refined = read_angles(SEED / "CoPdPt_RefinedAngles.mat")  # v7.3, Angle_OPT beside R_OPT
    assert refined.shape == (55, 3)
    with h5py.File(SEED / "CoPdPt_RefinedAngles.mat", "r") as f:
        np.testing.assert_array_equal(refined, f["Angle_OPT"][()].T)


# ----------------------------------------------------------------------------- atoms: seed files
def counts(ds):
    sp, n = np.unique(ds.species.values, return_counts=True)
    return dict(zip(sp.tolist(), n.tolist()))


@needs_seed
@pytest.mark.seed
class TestSeedAtoms:
    def test_si_208(self):
        f = SEED / "aSi_208atoms_GT.txt"
        ds = read_atoms(f)
        assert counts(ds) == {"Si": 208}
        assert ds.position.dims == ("atom", "xyz") and ds.position.shape == (208, 3)
        pos = ds.position.values
        np.testing.assert_allclose(pos.mean(axis=0), 0, atol=1e-3)
        assert np.abs(pos).max() == pytest.approx(9.6, abs=0.05)
        np.testing.assert_array_equal(pos, np.loadtxt(f, comments="%")[:, 1:4])

    def test_si_19993(self):
        ds = read_atoms(SEED / "aSi9nm_model_GT.txt")
        assert counts(ds) == {"Si": 19993}
        np.testing.assert_allclose(ds.position.values.mean(axis=0), [61.9, -54.0, -69.1], atol=0.1)

    def test_sigesn(self):
        f = SEED / "aSiGeSn_8nm_GT.mat"
        ds = read_atoms(f)
        assert counts(ds) == {"Si": 4610, "Ge": 4709, "Sn": 4663}
        m = scipy.io.loadmat(f)
        np.testing.assert_array_equal(ds.position.values, m["si_40radius_3Atoms_xyz"])
        codes = m["si_40radius_3Atoms_type"].ravel()
        assert set(ds.species.values[codes == 3]) == {"Sn"}

    def test_copdpt(self):
        f = SEED / "MG_final_atom_coord_inA.mat"
        ds = read_atoms(f)  # finds MG_final_atom_types.mat beside it
        assert counts(ds) == {"Co": 8322, "Pd": 6896, "Pt": 3138}
        stored = scipy.io.loadmat(f)["final_atom_coord_inAngstrom"]  # (3, n) = (dim1, dim2, dim3)
        pos = ds.position.values
        np.testing.assert_array_equal(pos[:, 0], stored[1])  # x = dim2
        np.testing.assert_array_equal(pos[:, 1], stored[0])  # y = dim1
        np.testing.assert_array_equal(pos[:, 2], stored[2])
        types = scipy.io.loadmat(SEED / "MG_final_atom_types.mat")["final_atom_types"].ravel()
        assert set(ds.species.values[types == 2]) == {"Pd"}

    def test_sio2(self):
        ds = read_atoms(SEED / "model_GT.mat")
        assert counts(ds) == {"Si": 2603, "O": 5101}
        assert np.linalg.norm(ds.position.values, axis=1).max() == pytest.approx(30.1, abs=0.2)


# ----------------------------------------------------------------------------- atoms: synthetic layouts
POS = np.array([[0.0, 0.0, 0.0], [2.35, 0.1, -0.2], [-1.0, 2.0, 3.5], [4.25, -3.5, 1.125], [0.5, 0.25, -4.0]])


def write_percent_text(path, codes, pos=POS):
    lines = [f"% {len(pos)}", '% Properties=species:S:1:pos:R:3 pbc="F F F"']
    lines += [f"{c} {x:.6f} {y:.6f} {z:.6f}" for c, (x, y, z) in zip(codes, pos)]
    path.write_text("\n".join(lines) + "\n")
    return path


class TestSyntheticAtoms:
    def test_percent_text(self, tmp_path):
        f = write_percent_text(tmp_path / "m.txt", [1] * 5)
        ds = read_atoms(f)
        assert ds.species.values.tolist() == ["Si"] * 5
        np.testing.assert_allclose(ds.position.values, POS, atol=1e-9)
        assert ds.attrs["frame"] == "sample"

    def test_percent_text_species_override(self, tmp_path):
        f = write_percent_text(tmp_path / "m.txt", [1, 2, 2, 1, 2])
        assert read_atoms(f, species=["Ge", "Sn"]).species.values.tolist() == ["Ge", "Sn", "Sn", "Ge", "Sn"]
        # a NumPy array of symbols works too (not only a list)
        got = read_atoms(f, species=np.array(["C", "O"])).species.values.tolist()
        assert got == ["C", "O", "O", "C", "O"]

    def test_percent_text_code_out_of_range(self, tmp_path):
        f = write_percent_text(tmp_path / "m.txt", [1, 2, 1, 1, 1])
        # the default table is ("Si",)
        input_error(f, r"type codes run from 1 to 2 .*\['Si'\].*species=", read_atoms, f)
        f0 = write_percent_text(tmp_path / "m0.txt", [0, 1, 1, 1, 1])
        input_error(f0, "type codes run from 0 to 1", read_atoms, f0)

    def test_tab_text_atomic_numbers(self, tmp_path):
        f = tmp_path / "model.txt"
        z = [14, 8, 8, 14, 32]
        rows = ["\t".join([str(zi), *(f"{v:.6f}" for v in p), "1", "0"]) for zi, p in zip(z, POS)]
        f.write_text("\n".join(rows))  # no newline at the end, as in aSi9nm_model_GT.txt
        ds = read_atoms(f)
        assert ds.species.values.tolist() == ["Si", "O", "O", "Si", "Ge"]
        np.testing.assert_allclose(ds.position.values, POS, atol=1e-9)

    def test_symbol_text(self, tmp_path):
        f = tmp_path / "sym.txt"
        f.write_text("# symbols\n" + "\n".join(f"{s} {x} {y} {z}" for s, (x, y, z) in zip(
            ["si", "Ge", "SN", "O", "Pt"], POS)))
        assert read_atoms(f).species.values.tolist() == ["Si", "Ge", "Sn", "O", "Pt"]

    def test_sigesn_mat(self, tmp_path):
        f = tmp_path / "sigesn.mat"
        codes = np.array([[1], [2], [3], [3], [2]], dtype=np.uint8)
        scipy.io.savemat(f, {"si_40radius_3Atoms_xyz": POS, "si_40radius_3Atoms_type": codes})
        ds = read_atoms(f)
        assert ds.species.values.tolist() == ["Si", "Ge", "Sn", "Sn", "Ge"]
        np.testing.assert_array_equal(ds.position.values, POS)
        assert read_atoms(f, species=["C", "N", "O"]).species.values.tolist() == ["C", "N", "O", "O", "N"]
        input_error(f, "type codes run from 1 to 3", read_atoms, f, species=["C", "N"])
        bad = tmp_path / "sigesn4.mat"
        scipy.io.savemat(bad, {"si_40radius_3Atoms_xyz": POS,
                               "si_40radius_3Atoms_type": np.array([[1], [2], [4], [3], [2]], np.uint8)})
        input_error(bad, "si_40radius_3Atoms_type type codes run from 1 to 4", read_atoms, bad)

    def test_mat_unknown_type_table_needs_species(self, tmp_path):
        f = tmp_path / "other.mat"
        scipy.io.savemat(f, {"xyz": POS, "atom_type": np.array([[1, 2, 1, 2, 1]], np.uint8)})
        input_error(f, r"type codes in 'atom_type'; pass species=", read_atoms, f)
        assert read_atoms(f, species=["Cu", "Zr"]).species.values.tolist() == ["Cu", "Zr", "Cu", "Zr", "Cu"]

    def test_mg_layout(self, tmp_path):
        d = tmp_path / "mg"
        d.mkdir()
        f = d / "MG_final_atom_coord_inA.mat"
        stored = POS.T.astype(np.float32)  # (3, n) = (dim1, dim2, dim3) = (y, x, z)
        scipy.io.savemat(f, {"final_atom_coord_inAngstrom": stored})
        scipy.io.savemat(d / "MG_final_atom_types.mat",
                         {"final_atom_types": np.array([[1, 2, 3, 1, 3]], np.uint8)})
        ds = read_atoms(f)
        assert ds.species.values.tolist() == ["Co", "Pd", "Pt", "Co", "Pt"]
        pos = ds.position.values
        np.testing.assert_array_equal(pos[:, 0], stored[1])
        np.testing.assert_array_equal(pos[:, 1], stored[0])
        np.testing.assert_array_equal(pos[:, 2], stored[2])
        assert pos[1, 0] == np.float32(0.1) and pos[1, 1] == np.float32(2.35)
        assert read_atoms(f, species=["Cu", "Zr", "Al"]).species.values.tolist() == ["Cu", "Zr", "Al", "Cu", "Al"]

    def test_mg_layout_explicit_types_and_missing_types(self, tmp_path):
        d = tmp_path / "coords"
        d.mkdir()
        f = d / "coords.mat"
        scipy.io.savemat(f, {"final_atom_coord_inAngstrom": POS.T})
        input_error(f, r"final_atom_types, 5 values\) were not found .*types=FILE", read_atoms, f)
        elsewhere = tmp_path / "t.mat"
        scipy.io.savemat(elsewhere, {"final_atom_types": np.array([[3, 3, 2, 1, 1]], np.uint8)})
        assert read_atoms(f, types=elsewhere).species.values.tolist() == ["Pt", "Pt", "Pd", "Co", "Co"]
        wrong_n = tmp_path / "t4.mat"
        scipy.io.savemat(wrong_n, {"final_atom_types": np.array([[3, 3, 2, 1]], np.uint8)})
        msg = input_error(f, r"final_atom_types, 5 values\) were not found in", read_atoms, f, types=wrong_n)
        assert str(wrong_n) in msg

    def test_sio2_mat(self, tmp_path):
        f = tmp_path / "model_GT.mat"
        scipy.io.savemat(f, {"pos": POS, "atomic_number": np.array([[14.0, 8, 8, 14, 8]])})
        ds = read_atoms(f)
        assert ds.species.values.tolist() == ["Si", "O", "O", "Si", "O"]
        np.testing.assert_array_equal(ds.position.values, POS)

    def test_mat_positions_stored_3_by_n(self, tmp_path):
        f = tmp_path / "posT.mat"
        scipy.io.savemat(f, {"pos": POS.T, "atomic_number": np.array([[14.0, 8, 8, 14, 8]])})
        ds = read_atoms(f)
        np.testing.assert_array_equal(ds.position.values, POS)
        assert ds.species.values.tolist() == ["Si", "O", "O", "Si", "O"]

    def test_v73_atoms(self, tmp_path):
        f = write_v73(tmp_path / "m73.mat", pos=POS, atomic_number=np.array([[14.0, 8, 8, 14, 8]]))
        ds = read_atoms(f)
        assert ds.species.values.tolist() == ["Si", "O", "O", "Si", "O"]
        np.testing.assert_array_equal(ds.position.values, POS)

    def test_unknown_element(self, tmp_path):
        f = tmp_path / "bad.txt"
        f.write_text("Si 0 0 0\nQq 1 1 1\n")
        input_error(f, "unknown species 'Qq'", read_atoms, f)
        g = write_percent_text(tmp_path / "m.txt", [1, 2, 1, 1, 1])
        input_error(g, "unknown species 'Zz'", read_atoms, g, species=["Si", "Zz"])
        c = tmp_path / "bad.csv"
        c.write_text("species,x,y,z\nSi,0,0,0\nXy,1,1,1\n")
        input_error(c, "unknown species 'Xy'", read_atoms, c)

    def test_truncated_text(self, tmp_path):
        f = write_percent_text(tmp_path / "m.txt", [1] * 5)
        text = f.read_text()
        f.write_text(text[: len(text) - 12])  # cut inside the last row: "1 0.500000 0.25000"
        assert f.read_text().splitlines()[-1].split() == ["1", "0.500000", "0.25000"]
        input_error(f, r"rows with \[3, 4\] columns \(truncated file\?\)", read_atoms, f)

    def test_ragged_csv_and_bad_numbers(self, tmp_path):
        c = tmp_path / "ragged.csv"
        c.write_text("species,x,y,z\nSi,0,0,0\nSi,1,1\n")
        input_error(c, r"every CSV row needs 4 fields \(truncated file\?\)", read_atoms, c)
        t = tmp_path / "nan.txt"
        t.write_text("Si 0 0 0\nSi 1 abc 1\n")
        input_error(t, "positions must be numbers", read_atoms, t)
        h = tmp_path / "nohead.csv"
        h.write_text("element,x,y,z\nSi,0,0,0\n")
        input_error(h, "CSV header must name columns species, x, y, z", read_atoms, h)

    def test_missing_and_empty(self, tmp_path):
        nope = tmp_path / "nope.xyz"
        input_error(nope, "no such file", read_atoms, nope)
        e_ = tmp_path / "empty.txt"
        e_.write_text("% 0\n")
        input_error(e_, "no atom rows found", read_atoms, e_)
        junk = tmp_path / "junk.mat"
        scipy.io.savemat(junk, {"P": pattern()})
        truncate(junk)
        input_error(junk, "cannot read this MATLAB file", read_atoms, junk)


# ----------------------------------------------------------------------------- write/read round trip
@pytest.fixture
def model():
    rng = np.random.default_rng(3)
    pos = rng.normal(scale=7.0, size=(12, 3))
    species = rng.choice(["Si", "Ge", "Sn", "O", "Pt"], 12)
    intensity = rng.uniform(0.5, 9.5, 12).round(3)
    return make_atoms(pos, species, intensity=intensity)


def test_round_trip_extxyz(tmp_path, model):
    f = write_atoms(model, tmp_path / "out" / "model.xyz")
    assert f == tmp_path / "out" / "model.xyz" and f.exists()
    lines = f.read_text().splitlines()
    assert lines[0].strip() == "12"
    assert "Properties=species:S:1:pos:R:3" in lines[1] and "intensity" in lines[1]
    back = read_atoms(f)
    np.testing.assert_allclose(back.position.values, model.position.values, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(back.species.values, model.species.values)


def test_round_trip_csv(tmp_path, model):
    f = write_atoms(model, tmp_path / "model.csv")
    lines = f.read_text().splitlines()
    assert lines[0] == "species,x,y,z,intensity"
    assert len(lines) == 13
    written = np.array([float(line.split(",")[4]) for line in lines[1:]])
    np.testing.assert_allclose(written, model.intensity.values, rtol=1e-6)
    assert [line.split(",")[0] for line in lines[1:]] == model.species.values.tolist()
    back = read_atoms(f)
    np.testing.assert_allclose(back.position.values, model.position.values, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(back.species.values, model.species.values)
    np.testing.assert_allclose(back.intensity.values, model.intensity.values, rtol=1e-5)


def test_round_trip_csv_with_flag(tmp_path):
    ds = make_atoms(POS, ["Si"] * 5, intensity=np.arange(5.0), flag=[0, 1, 0, 1, 1])
    f = write_atoms(ds, tmp_path / "flags.csv")
    lines = f.read_text().splitlines()
    assert lines[0] == "species,x,y,z,intensity,flag"
    assert [line.split(",")[5] for line in lines[1:]] == ["0", "1", "0", "1", "1"]
    np.testing.assert_allclose(read_atoms(f).position.values, POS, atol=1e-6)
