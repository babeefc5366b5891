"""Physically implausible input is refused (exit 2, one `error:` line naming the file) or warned.

One test per example of issue 28's "Nonsense accepted" and for the neighbours of each kind
(the rule, not the example, is tested): angles in radians, one direction, too narrow a tilt
range, an impossible pixel size or field of view, values that over- or underflow float32,
duplicated atoms and an identification above 100 %, a volume that cannot fit in memory. The
README's "Bad input" table quotes the CLI messages checked here. Valid inputs (the seed
paper's, the bad-input fixtures) still pass without a warning.
"""

import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from aetdask import plausibility as P
from aetdask.cli import main
from aetdask.errors import InputError
from aetdask.evaluate import evaluate
from aetdask.io import read_atoms, read_tilt_series, write_atoms
from aetdask.kernels.atoms.metrics import paper_match
from aetdask.plausibility import PlausibilityWarning
from aetdask.schema import atoms, tilt_series, validate_tilt_series

from ._util import needs_seed, raise_if_dask_computes

NT, N, PIXEL = 8, 16, 0.5
THETA = np.arange(NT) * 20.0 - 70.0          # the bad-input fixtures' angles


def series(theta=THETA, n=N, pixel=PIXEL, values=None, **kw):
    theta = np.asarray(theta, dtype=float)
    data = np.random.default_rng(0).poisson(3.0, (len(theta), n, n)).astype(np.float32) if values is None else values
    return tilt_series(data, theta, pixel, **kw)


def refused(func, *args, match, **kwargs):
    with pytest.raises(InputError, match=match) as e:
        func(*args, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


def cli(args, cwd):
    """Run ``aetdask ARGS`` in ``cwd``; return (exit code, output)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def import_error(files, tilts="tilts.npy", angles="angles.txt", pixel="0.5"):
    """The output of an ``aetdask import`` that must be refused (exit 2)."""
    code, out = cli(["import", tilts, "--angles", angles, "--pixel-size", pixel, "--out", "run.zarr"], files)
    assert code == 2, out
    return out


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "tilts.npy", rng.poisson(3.0, (NT, N, N)).astype(np.float32))
    np.savetxt(tmp_path / "angles.txt", THETA)
    return tmp_path


def no_warning(func, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PlausibilityWarning)
        return func(*args, **kwargs)


# ----------------------------------------------------------------------------- 1. radians
def test_angles_in_radians_are_refused_with_the_hint(files):
    """±1.2 "degrees" over 60 projections: 2.4° of tilt, the signature of radians (→ 137.5°)."""
    np.save(files / "rad.npy", np.random.default_rng(1).poisson(3.0, (60, 64, 64)).astype(np.float32))
    np.savetxt(files / "radians.txt", np.linspace(-1.2, 1.2, 60))
    out = import_error(files, "rad.npy", "radians.txt")
    assert out.count("\n") == 1
    assert out == ("error: radians.txt: the 60 projection directions span only 2.4° (θ -1.2…1.2°); a 3-D reconstruction "
                   "needs them to span at least 20° (over a narrower tilt range the missing wedge stretches every atom "
                   "more than 10× along the beam); these look like radians: read as radians they span 137.5°, so "
                   "give the angles in degrees (× 180/π)\n")
    assert not (files / "run.zarr").exists()


@pytest.mark.parametrize("angles", [
    np.linspace(-1.2, 1.2, NT),                                   # fewer pixels: one direction, same hint
    np.arange(0.0, np.pi, np.pi / NT),                            # 0…π, not symmetric
    np.c_[np.zeros(NT), np.linspace(-1.0, 1.0, NT), np.zeros(NT)],  # (φ, θ, ψ) rows
])
def test_every_radian_series_is_refused(angles):
    message = refused(validate_tilt_series, series(angles), match="look like radians")
    assert "give the angles in degrees" in message


def test_a_narrow_tilt_range_in_degrees_is_refused_without_the_radian_hint():
    message = refused(validate_tilt_series, series(np.linspace(-5, 5, 30), n=128), source="narrow.npy",
                      match=r"narrow.npy: the 30 projection directions span only 10°")
    assert "radians" not in message


@pytest.mark.parametrize("span", [25.0, 60.0])
def test_a_range_wide_enough_but_short_of_usual_is_warned(span):
    with pytest.warns(PlausibilityWarning, match=r"stretches every atom [\d.]+× along the beam"):
        validate_tilt_series(series(np.linspace(-span / 2, span / 2, 20), n=64))


def test_the_limits_follow_from_the_elongation_factor():
    assert P.elongation(P.MIN_COVERAGE) == pytest.approx(P.MAX_ELONGATION, rel=1e-6)
    assert P.elongation(P.WARN_COVERAGE) == pytest.approx(P.WARN_ELONGATION, rel=1e-6)
    assert P.elongation(180.0) == pytest.approx(1.0) and P.elongation(0.0) == float("inf")


def test_angles_beyond_a_full_turn_are_refused():
    refused(validate_tilt_series, series(THETA * 17.5), source="mrad.txt",
            match=r"mrad.txt: theta = -1225° at projection 0 is beyond ±360°.*milliradians")


@pytest.mark.parametrize("angles, pixel, message", [
    (THETA * 17.5, "0.5", "error: mrad.txt: theta = -1225° at projection 0 is beyond ±360°; expected tilt angles in "
     "degrees (a tilt holder turns less than a full turn: milliradians or another unit?)\n"),
    (THETA, "19.5", "error: tilts.npy: pixel_size = 19.5 Å is not the pixel of an ADF-STEM image of atoms; expected 0.01 "
     "to 5 Å per pixel (an atom's image is 0.5–1 Å wide, a few pixels across; atoms are 1.4–5 Å apart); in pm? that "
     "would be 0.195 Å\n"),
    (THETA, "0.1", "error: tilts.npy: the field of view is 16 px × 0.1 Å = 1.6 Å, narrower than 3 Å (two interatomic "
     "distances); expected images that hold the whole particle (is pixel_size in Å?)\n"),
])
def test_the_readme_messages_of_units_and_fields(files, angles, pixel, message):
    np.savetxt(files / "mrad.txt", angles)
    assert import_error(files, angles="mrad.txt", pixel=pixel) == message


# ----------------------------------------------------------------------------- 2. one direction
def test_one_projection_is_refused(files):
    np.save(files / "one.npy", np.load(files / "tilts.npy")[:1])
    np.savetxt(files / "one.txt", [0.0])
    out = import_error(files, "one.npy", "one.txt")
    assert out == ("error: one.txt: one projection (θ = 0°), which holds no depth information; a 3-D reconstruction "
                   "needs projections from at least 2 directions spanning at least 20° (a tilt series)\n")


def test_twelve_projections_at_zero_are_refused(files):
    np.save(files / "tilts12.npy", np.random.default_rng(2).poisson(3.0, (12, N, N)).astype(np.float32))
    np.savetxt(files / "zeros12.txt", np.zeros(12))
    out = import_error(files, "tilts12.npy", "zeros12.txt")
    assert out == ("error: zeros12.txt: all 12 projections look along one direction (θ = 0°; directions closer than "
                   "7.2° give the same 16-pixel image to within a pixel), which holds no depth information; a 3-D "
                   "reconstruction needs projections from at least 2 directions spanning at least 20° (a tilt "
                   "series)\n")


@pytest.mark.parametrize("angles, n", [
    (np.linspace(0.0, 0.5, 12), 128),          # within 2/n rad = 0.9° of each other: the same image
    ([0.0, 180.0, 0.0, 180.0], 64),            # a direction and its opposite: the same projection, mirrored
    (np.c_[np.arange(12) * 30.0, np.zeros(12), np.zeros(12)], 64),  # φ at θ = 0 turns the image, not the beam
])
def test_directions_that_differ_by_less_than_a_pixel_are_one(angles, n):
    refused(validate_tilt_series, series(angles, n=n), match="look along one direction")


def test_distinct_directions_and_coverage():
    assert P.distinct_directions(np.arange(0.0, 180.0, 3.0), 128) == 60
    assert P.distinct_directions([0.0, 0.5, 180.0, 90.0], 128) == 2
    assert P.coverage([-60.0, 0.0, 60.0]) == 120.0
    assert P.coverage([0.0, 10.0, 180.0]) == 10.0
    assert P.coverage(np.arange(0.0, 180.0, 3.0)) == 177.0
    conical = np.c_[np.arange(0.0, 360.0, 30.0), np.full(12, 50.0), np.zeros(12)]  # a cone about z
    assert P.coverage(conical) >= 100.0 - 1e-6 and P.distinct_directions(conical, 64) == 12  # at least the cone's
    dual = np.r_[np.c_[np.zeros(9), np.linspace(-60, 60, 9), np.zeros(9)],   # two tilt axes (θ, then ψ)
                 np.c_[np.zeros(9), np.zeros(9), np.linspace(-60, 60, 9)]]
    assert P.coverage(dual) >= 120.0 - 1e-6 and P.distinct_directions(dual, 64) == 17


def test_few_directions_are_warned_by_crowther():
    with pytest.warns(PlausibilityWarning, match="only 3 distinct projection directions.*Crowther"):
        validate_tilt_series(series([-60.0, 0.0, 60.0]))


# ----------------------------------------------------------------------------- 3. pixel size, field, memory
def test_a_pixel_of_a_millionth_angstrom_is_refused_before_anything_is_computed(files):
    assert import_error(files, pixel="1e-6") == (
        "error: tilts.npy: pixel_size = 1e-06 Å is not the pixel of an ADF-STEM image of atoms; expected "
                   "0.01 to 5 Å per pixel (an atom's image is 0.5–1 Å wide, a few pixels across; atoms are 1.4–5 Å "
                   "apart)\n")


def test_every_stage_refuses_such_a_pixel_before_allocating():
    from aetdask.reconstruct import reconstruct

    refused(reconstruct, series(pixel=1e-6), match="pixel_size = 1e-06 Å")


@pytest.mark.parametrize("pixel, hint", [(19.5, "in pm? that would be 0.195 Å"),
                                         (3.47e-11, "in metres? that would be 0.347 Å"),
                                         (1e-3, None), (500.0, None)])
def test_pixel_sizes_outside_adf_stem_are_refused_naming_the_unit(pixel, hint):
    message = refused(validate_tilt_series, series(pixel=pixel), match="expected 0.01 to 5 Å")
    assert (hint in message) if hint else ("that would be" not in message)


def test_a_field_narrower_than_a_particle_is_refused():
    refused(validate_tilt_series, series(pixel=0.1), source="small.npy",
            match=r"small.npy: the field of view is 16 px × 0.1 Å = 1.6 Å, narrower than 3 Å")


def test_a_coarse_pixel_is_warned():
    with pytest.warns(PlausibilityWarning, match="pixel_size = 2 Å.*Nyquist"):
        validate_tilt_series(series(pixel=2.0))


def test_memory_is_estimated_before_allocating():
    assert P.volume_bytes((512, 512, 512)) == 512**3 * 4
    assert P.volume_bytes((10, 10, 10), "float64") == 8000
    assert P.reconstruction_bytes((60, 256, 256)) == 2 * 4 * 256**3 + 2 * 4 * 60 * 256**2
    limit = P.memory_limit()
    assert limit is not None and limit > 2**20
    # the 466 TiB allocation: a volume of 50,000³ voxels
    refused(P.check_reconstruction_memory, (60, 50_000, 50_000), match=r"reconstruct: the reconstruction of 60 "
            r"projections of 50000×50000 px .* needs at least 911 TiB of memory, more than the .* this machine has")
    refused(P.check_memory, 2**40, "the volume", source="here", limit=2**30, match="1 TiB of memory, more than the 1 GiB")
    with pytest.warns(PlausibilityWarning, match="is free now"):
        P.check_memory(2**30, "the volume", source="here", limit=2**40, available=2**20)
    no_warning(P.check_reconstruction_memory, (60, 64, 64))


# ----------------------------------------------------------------------------- 4. float32 range
def test_values_near_float64_max_are_refused(files):
    np.save(files / "huge.npy", np.load(files / "tilts.npy").astype(np.float64) * 1e307)
    assert import_error(files, "huge.npy") == (
        "error: huge.npy: pixel values reach 1e+308 (tilt 0); aetdask computes in float32, where sums of "
                   "squares of 2048 values that large overflow (largest usable 4.1e+17); expected detector counts or "
                   "intensities: divide the data by a constant (units 'a.u.')\n")


def test_denormal_values_are_refused(files):
    np.save(files / "denormal.npy", np.load(files / "tilts.npy").astype(np.float64) * 1e-310)
    code, out = cli(["import", "denormal.npy", "--angles", "angles.txt", "--pixel-size", "0.5", "--units", "a.u.",
                     "--out", "run.zarr"], files)
    assert code == 2
    assert out == ("error: denormal.npy: the largest pixel value of tilt 0 is 1e-309, so small that its square "
                   "underflows to 0 in float32, the precision aetdask computes in (smallest usable 1.1e-19); expected "
                   "detector counts or intensities: multiply the data by a constant (units 'a.u.')\n")


@pytest.mark.parametrize("scale, tilt, match", [
    (1e20, 3, "pixel values reach .* \\(tilt 3\\).*overflow"),         # beyond float32's √max, though finite in it
    (1e-30, 5, "the largest pixel value of tilt 5 is .* underflows"),   # one projection lost to underflow
])
def test_one_projection_out_of_range_is_refused_and_named(scale, tilt, match):
    values = np.random.default_rng(3).uniform(1, 2, (NT, N, N))
    values[tilt] *= scale
    refused(validate_tilt_series, series(values=values, units="a.u."), match=match)


def test_values_in_range_pass_whatever_their_type():
    rng = np.random.default_rng(4)
    no_warning(validate_tilt_series, series(values=rng.poisson(5.0, (NT, N, N)).astype(np.uint16)))
    tiny_beside_normal = rng.uniform(1, 2, (NT, N, N))
    tiny_beside_normal[:, 0, 0] = 1e-300                       # below float32's resolution of the image: harmless
    no_warning(validate_tilt_series, series(values=tiny_beside_normal, units="a.u."))
    blank = rng.uniform(1, 2, (NT, N, N))
    blank[2] = 0.0                                             # a blank frame is not an underflow
    no_warning(validate_tilt_series, series(values=blank, units="a.u."))


# ----------------------------------------------------------------------------- 5. duplicated atoms
@pytest.fixture
def model():
    from aetdask.simulate import amorphous_particle

    return amorphous_particle(8, species=["Si"], seed=1)


def test_a_duplicated_model_is_refused_when_read(files, model):
    write_atoms(model, files / "model.xyz")
    doubled = atoms(np.vstack([model.position.values] * 2), list(model.species.values) * 2)
    write_atoms(doubled, files / "doubled.xyz")
    code, out = cli(["evaluate", "doubled.xyz", "--truth", "model.xyz", "--cutoff", "0.9"], files)
    assert code == 2
    assert out == ("error: doubled.xyz: atoms 1 and 9 (counting from 1) are 0 Å apart (8 pairs closer than 0.5 Å); "
                   "expected each atom once: no two atoms are closer than the shortest bond, H₂'s 0.74 Å (a "
                   "duplicated model?)\n")
    near = atoms(np.vstack([model.position.values, model.position.values[3] + [0.3, 0, 0]]),
                 list(model.species.values) * 1 + ["Si"])
    write_atoms(near, files / "near.xyz")
    refused(read_atoms, files / "near.xyz", match=r"near.xyz: atoms 4 and 9 .* 0.3 Å apart \(1 pair")


def test_identification_never_exceeds_100_percent(model):
    doubled = atoms(np.vstack([model.position.values] * 2), list(model.species.values) * 2)
    paper = paper_match(doubled.position.values, model.position.values, doubled.species.values,
                        model.species.values, 0.9)
    assert paper["overall"]["identification_pct"] == 200.0 and paper["overall"]["truth_matched"] == 8
    with pytest.warns(PlausibilityWarning) as record:
        result = evaluate(doubled, model, 0.9)
    messages = [str(w.message) for w in record]
    assert any(m.startswith("traced model: atoms 1 and 9") for m in messages)
    assert any(m.startswith("traced model: 8 of its atoms match a truth atom") for m in messages)
    o = result["overall"]
    assert (o["identification_pct"], o["matched"], o["traced_matched"], o["truth"]) == (100.0, 8, 16, 8)
    assert result["species"]["Si"]["identification_pct"] == 100.0
    assert result["strict"]["false_positives"] == 8


def test_two_traced_atoms_on_one_truth_atom_count_once(model):
    extra = atoms(np.vstack([model.position.values, model.position.values[0] + [0.7, 0, 0]]),
                  list(model.species.values) + ["Si"])
    with pytest.warns(PlausibilityWarning, match="traced model: 1 of its atoms match a truth atom that another"):
        o = evaluate(extra, model, 0.9, center=False)["overall"]
    assert o["identification_pct"] == 100.0 and o["traced_matched"] == 9


def test_a_duplicated_truth_is_refused(model):
    doubled = atoms(np.vstack([model.position.values] * 2), list(model.species.values) * 2)
    refused(evaluate, model, doubled, 0.9, match="truth model: atoms 1 and 9")


# ----------------------------------------------------------------------------- valid input still passes
def test_the_bad_input_fixtures_pass_without_a_warning(files):
    ts = no_warning(read_tilt_series, files / "tilts.npy", angles=files / "angles.txt", pixel_size=0.5)
    no_warning(validate_tilt_series, ts, values=False)


def test_the_stage_check_stays_lazy():
    import dask.array as da

    ts = series()
    lazy = ts.copy(data=da.from_array(ts.values, chunks=(1, N, N)))
    with raise_if_dask_computes():
        no_warning(validate_tilt_series, lazy, values=False)
        refused(validate_tilt_series, lazy.assign_attrs(pixel_size=1e-6), values=False, match="pixel_size = 1e-06")


def test_plausible_false_checks_the_form_only():
    validate_tilt_series(series([0.0, 3.0, 6.0], n=8), plausible=False)
    refused(validate_tilt_series, series([0.0, 3.0, 6.0], n=8), match="look along one direction")


@needs_seed
def test_the_seed_papers_data_pass_without_a_warning(seed_dir):
    from aetdask.io import read_angles

    ts = no_warning(read_tilt_series, seed_dir / "aSi_2nmFosCetr_Dose1p6e4_cov35pm_ForBM3D.mat",
                    angles=seed_dir / "Si_Angle.mat", pixel_size=0.195)
    assert ts.shape == (60, 128, 128)
    for name in ("CoPdPt_Angle_Dose1p7e4.mat", "CoPdPt_ExperimentalAngles.mat", "CoPdPt_RefinedAngles.mat"):
        no_warning(P.check_angles, read_angles(seed_dir / name), 256, source=name)
    for name in ("aSi_208atoms_GT.txt", "aSi9nm_model_GT.txt", "aSiGeSn_8nm_GT.mat", "MG_final_atom_coord_inA.mat",
                 "model_GT.mat"):
        no_warning(read_atoms, seed_dir / name)
