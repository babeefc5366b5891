import dask.array as da
import numpy as np
import pytest

from aetdask.errors import InputError
from aetdask.schema import (
    add_provenance, as_euler, atoms, normalize_species, tilt_series, validate_atoms,
    validate_tilt_series, volume,
)


def good(n=3, size=8):
    return tilt_series(np.ones((n, size, size)), np.arange(n) * 3.0, 0.5)


def test_tilt_series_coords_and_attrs():
    ts = good()
    assert ts.dims == ("tilt", "y", "x")
    assert ts.theta.values.tolist() == [0.0, 3.0, 6.0] and ts.phi.values.tolist() == [0, 0, 0]
    assert ts.x.values[4] == 0.0 and ts.x.values[0] == -2.0 and ts.x.attrs["units"] == "Å"
    assert ts.attrs["pixel_size"] == 0.5 and ts.attrs["units"] == "counts"
    lazy = tilt_series(da.ones((3, 8, 8), chunks=(1, 8, 8)), [0, 1, 2], 0.5)
    assert lazy.chunks == ((1, 1, 1), (8,), (8,))


def test_as_euler_shapes():
    assert as_euler([1, 2]).tolist() == [[0, 1, 0], [0, 2, 0]]
    assert as_euler(np.array([[1, 2, 3], [4, 5, 6]])).tolist() == [[1, 2, 3], [4, 5, 6]]
    assert as_euler(np.arange(12).reshape(3, 4)).shape == (4, 3)
    with pytest.raises(InputError, match="3 angles for 4 projections"):
        as_euler([1, 2, 3], 4)
    with pytest.raises(InputError, match="NaN"):
        as_euler([1, np.nan])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: good().where(good().tilt != 1), "NaN or Inf"),
        (lambda: good() * -1, "negative values in count data"),
        (lambda: good() * 0, "every pixel is zero"),
        (lambda: tilt_series(np.ones((2, 8, 6)), [0, 1], 0.5), "must be square"),
        (lambda: tilt_series(np.ones((0, 8, 8)), [], 0.5), "empty"),
        (lambda: good().transpose("y", "tilt", "x"), "dims must be"),
        (lambda: good().assign_attrs(units="volts"), "units"),
    ],
)
def test_validate_tilt_series_rejects(make, message):
    with pytest.raises(InputError, match=message):
        validate_tilt_series(make(), source="my.mat")


def test_negative_values_fine_for_arbitrary_units():
    ts = (good() - 2).assign_attrs(units="a.u.")
    validate_tilt_series(ts, plausible=False)  # the form only: three views over 6° are no tilt series


def test_bad_constructor_input():
    with pytest.raises(InputError, match="pixel_size"):
        tilt_series(np.ones((1, 4, 4)), [0], -1)
    with pytest.raises(InputError, match="3-D"):
        tilt_series(np.ones((4, 4)), [0], 1)
    with pytest.raises(InputError, match="2 angles for 1 projections"):
        tilt_series(np.ones((1, 4, 4)), [0, 1], 1)


def test_atoms_and_species():
    ds = atoms(np.zeros((3, 3)), ["si", "Ge", "Si"])
    assert ds.species.values.tolist() == ["Si", "Ge", "Si"]
    assert ds.position.dims == ("atom", "xyz") and ds.xyz.values.tolist() == ["x", "y", "z"]
    assert normalize_species([14, 8]).tolist() == ["Si", "O"]
    with pytest.raises(InputError, match="unknown species 'Qq'"):
        atoms(np.zeros((1, 3)), ["Qq"])
    with pytest.raises(InputError, match="2 species for 3 positions"):
        atoms(np.zeros((3, 3)), ["Si", "O"])
    bad = ds.copy(deep=True)
    bad["position"][0, 0] = np.inf
    with pytest.raises(InputError, match="NaN or Inf"):
        validate_atoms(bad)


def test_volume_and_provenance():
    v = volume(np.zeros((4, 6, 6)), 0.5)
    assert v.dims == ("z", "y", "x") and v.z.values[2] == 0.0
    v2 = add_provenance(v, "test", {"n": np.int64(3), "a": np.arange(2)}, ["in.zarr"])
    rec = v2.attrs["provenance"][-1]
    assert rec["stage"] == "test" and rec["params"] == {"n": 3, "a": [0, 1]} and rec["inputs"] == ["in.zarr"]
    assert type(rec["params"]["n"]) is int and v.attrs["provenance"] == []
