"""Tests of aetdask.io.store.RunStore: layout, round trips, atomic publish, versioning."""

import json
import os
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from aetdask.errors import StoreError
from aetdask.io import RunStore
from aetdask.schema import atoms, provenance_record, tilt_series

NT, N, PIXEL = 6, 8, 0.5
PHI = np.linspace(-1.0, 1.5, NT)
THETA = np.linspace(-60.0, 60.0, NT)
PSI = np.linspace(0.25, -0.75, NT)


def values(nt=NT, n=N, offset=0.0):
    return (np.arange(nt * n * n, dtype=np.float32).reshape(nt, n, n) + offset)


def lazy_tilt_series(data=None, provenance=None):
    data = values() if data is None else data
    d = da.from_array(data, chunks=(1, data.shape[1], data.shape[2]))  # one projection per chunk
    euler = np.stack([PHI, THETA, PSI], axis=1)[: data.shape[0]]
    prov = provenance if provenance is not None else [
        provenance_record("io.read_tilt_series", {"pixel_size": PIXEL, "var": None}, ["ts.mat", "angles.mat"])
    ]
    return tilt_series(d, euler, PIXEL, units="counts", dose=1.6e4, provenance=prov)


@pytest.fixture
def truth():
    rng = np.random.default_rng(0)
    return atoms(rng.normal(scale=5.0, size=(7, 3)), ["Si", "Ge", "Sn", "Si", "O", "Pt", "Co"],
                 intensity=np.arange(7.0), provenance=[provenance_record("io.read_atoms", {}, ["gt.txt"])])


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "run.zarr")


def leftovers(store):
    """Hidden temporary or old directories left in the store root."""
    return sorted(p for p in os.listdir(store.path) if ".tmp" in p or ".old" in p)


def failing(data, bad_block, store, seen):
    """A lazy tilt series whose computation raises on one projection.

    Just before raising it records in ``seen`` the store root's listing and the
    projections already written in the temporary directory (as ``"CHUNKS:<n>"``).
    """

    def fn(block, block_info=None):
        k = block_info[0]["chunk-location"][0]
        if k == bad_block:
            seen.extend(os.listdir(store.path))
            for tmp in store.path.glob(".*.tmp*"):
                done = [c for c in os.listdir(tmp / "tilt_series") if not c.startswith(".")]
                seen.append(f"CHUNKS:{len(done)}")
            raise RuntimeError(f"simulated failure in block {k}")
        return block

    d = da.from_array(data, chunks=(1, data.shape[1], data.shape[2])).map_blocks(fn, dtype=data.dtype)
    return tilt_series(d, np.stack([PHI, THETA, PSI], axis=1)[: data.shape[0]], PIXEL)


def written(seen):
    """Projections already in the temporary directory when the failure happened."""
    (n,) = [int(s.split(":")[1]) for s in seen if s.startswith("CHUNKS:")]
    return n


# ----------------------------------------------------------------------------- layout and reading
def test_write_and_open_with_xarray_without_warnings(store, truth):
    ts = lazy_tilt_series()
    assert isinstance(ts.data, da.Array) and ts.data.chunks[0] == (1,) * NT
    store.write("raw", ts)
    store.write("truth", truth)
    assert store.products() == ["raw", "truth"]
    assert "raw" in store and "volume" not in store

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw = xr.open_zarr(store.path, group="raw")
        gt = xr.open_zarr(store.path, group="truth")
        assert "tilt_series" in raw.data_vars
        var = raw["tilt_series"]
        assert var.dims == ("tilt", "y", "x") and var.shape == (NT, N, N)
        assert var.attrs["pixel_size"] == PIXEL
        assert var.attrs["units"] == "counts"
        assert var.attrs["dose"] == 1.6e4
        prov = var.attrs["provenance"]
        assert isinstance(prov, list) and all(isinstance(p, dict) for p in prov)
        assert prov == ts.attrs["provenance"]
        assert prov[0]["stage"] == "io.read_tilt_series" and prov[0]["inputs"] == ["ts.mat", "angles.mat"]
        np.testing.assert_array_equal(var.values, values())
        assert "position" in gt.data_vars and "species" in gt.data_vars
        assert gt.position.dims == ("atom", "xyz")
        np.testing.assert_array_equal(gt.position.values, truth.position.values)
        assert gt.species.values.tolist() == truth.species.values.tolist()
        assert gt.attrs["frame"] == "sample"
    assert leftovers(store) == []


def test_every_per_tilt_coordinate_and_atom_variable_carries_units_and_a_description(store, truth):
    ts = lazy_tilt_series().assign_coords(shift_y=("tilt", np.zeros(NT)), noise_alpha=("tilt", np.ones(NT)),
                                          preprocessed_scale=("tilt", np.ones(NT)))
    model = truth.assign(position_sigma=(("atom", "xyz"), np.full(truth.position.shape, 0.1)))
    store.write("raw", ts)
    store.write("truth", model)
    raw = xr.open_zarr(store.path, group="raw")
    gt = xr.open_zarr(store.path, group="truth")
    assert raw.shift_y.attrs["units"] == "px" and "shift" in raw.shift_y.attrs["description"]
    assert raw.noise_alpha.attrs["units"] == "1" and raw.theta.attrs["units"] == "deg"
    assert "as preprocessing recorded it" in raw.preprocessed_scale.attrs["description"]
    assert gt.position.attrs["units"] == "Å" and gt.position_sigma.attrs["units"] == "Å"
    assert gt.species.attrs["description"] == "element symbol"
    assert "units" not in ts.shift_y.attrs  # the caller's object is left as it was


def test_read_round_trip(store, truth):
    ts = lazy_tilt_series()
    store.write("raw", ts)
    store.write("truth", truth)

    back = store.read("raw")
    assert isinstance(back, xr.DataArray) and back.name == "tilt_series"
    assert back.dims == ("tilt", "y", "x")
    np.testing.assert_array_equal(back.values, values())
    np.testing.assert_array_equal(back.phi.values, PHI)
    np.testing.assert_array_equal(back.theta.values, THETA)
    np.testing.assert_array_equal(back.psi.values, PSI)
    np.testing.assert_array_equal(back.x.values, ts.x.values)
    np.testing.assert_array_equal(back.y.values, ts.y.values)
    assert back.x.values[N // 2] == 0.0
    assert back.attrs["pixel_size"] == PIXEL and back.attrs["provenance"] == ts.attrs["provenance"]

    gt = store.read("truth")
    assert isinstance(gt, xr.Dataset)
    np.testing.assert_array_equal(gt.position.values, truth.position.values)
    np.testing.assert_array_equal(gt.species.values, truth.species.values)
    np.testing.assert_array_equal(gt.intensity.values, truth.intensity.values)
    assert gt.attrs["provenance"] == truth.attrs["provenance"]

    reopened = RunStore(store.path, create=False)
    assert reopened.products() == ["raw", "truth"]
    np.testing.assert_array_equal(reopened.read("raw").values, values())


def test_numpy_volume_product(store):
    from aetdask.schema import volume

    vol = volume(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), 0.25)
    store.write("volume", vol)
    back = store.read("volume")
    assert back.dims == ("z", "y", "x") and back.shape == (4, 5, 6)
    np.testing.assert_array_equal(back.values, vol.values)
    assert back.attrs["voxel_size"] == 0.25


def test_read_errors(store, truth):
    with pytest.raises(StoreError, match="unknown product 'bogus'"):
        store.read("bogus")
    with pytest.raises(StoreError, match="'raw' is not in this store") as e:
        store.read("raw")
    assert str(store.path) in str(e.value)
    with pytest.raises(StoreError, match="must be a DataArray"):
        store.write("raw", truth)
    with pytest.raises(StoreError, match="must be a Dataset"):
        store.write("truth", lazy_tilt_series())
    with pytest.raises(StoreError, match="unknown product"):
        store.write("bogus", truth)
    assert store.products() == []


# ----------------------------------------------------------------------------- atomic publish
def test_failed_write_leaves_nothing_and_keeps_old_product(store):
    good = values(offset=0.5)
    store.write("raw", lazy_tilt_series(good))

    seen = []
    bad = failing(values(offset=100.0), 3, store, seen)
    with dask.config.set(scheduler="synchronous"):  # some blocks are written before block 3 fails
        with pytest.raises(RuntimeError, match="simulated failure in block 3"):
            store.write("raw", bad)
    # the write really was in progress in a hidden temporary directory
    assert any(p.startswith(".raw.tmp") for p in seen), seen
    assert 1 <= written(seen) < NT, seen  # a half-written product existed at the moment of failure
    assert leftovers(store) == []
    assert store.products() == ["raw"]
    np.testing.assert_array_equal(store.read("raw").values, good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(xr.open_zarr(store.path, group="raw")["tilt_series"].values, good)

    # a product that never existed does not appear after a failed write
    seen.clear()
    bad2 = failing(values(offset=100.0), 2, store, seen)
    with dask.config.set(scheduler="synchronous"), pytest.raises(RuntimeError, match="simulated failure"):
        store.write("preprocessed", bad2)
    assert any(p.startswith(".preprocessed.tmp") for p in seen), seen
    assert 1 <= written(seen) < NT, seen
    assert store.products() == ["raw"]
    assert "preprocessed" not in store
    assert not (store.path / "preprocessed").exists()
    assert leftovers(store) == []
    with pytest.raises(StoreError, match="not in this store"):
        store.read("preprocessed")
    assert RunStore(store.path).products() == ["raw"]


def test_overwrite_replaces_completely(store):
    store.write("raw", lazy_tilt_series(values()))
    new = values(nt=3, n=16, offset=7.0)
    store.write("raw", lazy_tilt_series(new))
    assert store.products() == ["raw"]
    assert leftovers(store) == []
    back = store.read("raw")
    assert back.shape == (3, 16, 16)
    np.testing.assert_array_equal(back.values, new)
    np.testing.assert_array_equal(back.theta.values, THETA[:3])
    assert back.x.shape == (16,) and back.x.values[8] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for consolidated in (None, True, False):
            opened = xr.open_zarr(store.path, group="raw", consolidated=consolidated)["tilt_series"]
            assert opened.shape == (3, 16, 16)
            np.testing.assert_array_equal(opened.values, new)
    # the old arrays' chunk files are gone (6 projections of 8×8 → 3 of 16×16)
    chunk_dir = store.path / "raw" / "tilt_series"
    chunks = [p for p in os.listdir(chunk_dir) if not p.startswith(".")]
    assert sorted(chunks) == ["0.0.0", "1.0.0", "2.0.0"]


# ----------------------------------------------------------------------------- opening stores
def test_newer_store_version_raises(store):
    store.write("raw", lazy_tilt_series())
    root = zarr.open_group(str(store.path), mode="r+")
    root.attrs["aetdask"] = {"store_version": 99, "version": "9.9.0"}
    with pytest.raises(StoreError, match="(?i)upgrad") as e:
        RunStore(store.path)
    assert "99" in str(e.value) and str(store.path) in str(e.value)
    with pytest.raises(StoreError, match="(?i)upgrad"):
        RunStore(store.path, create=False)


def test_zarr_store_that_is_not_a_run_store(tmp_path):
    path = tmp_path / "other.zarr"
    zarr.open_group(str(path), mode="w", zarr_format=2).attrs["something"] = 1
    with pytest.raises(StoreError, match="not an aetdask run store"):
        RunStore(path)


def test_non_empty_directory_is_refused(tmp_path):
    d = tmp_path / "mydata"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not an aetdask run store") as e:
        RunStore(d)
    assert str(d) in str(e.value)
    assert (d / "notes.txt").read_text() == "keep me"
    assert sorted(os.listdir(d)) == ["notes.txt"]


def test_empty_directory_becomes_a_store(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    s = RunStore(d)
    assert s.products() == []
    assert zarr.open_group(str(d), mode="r").attrs["aetdask"]["store_version"] == 1


def test_create_false_on_missing_store(tmp_path):
    with pytest.raises(StoreError, match="no aetdask run store") as e:
        RunStore(tmp_path / "missing.zarr", create=False)
    assert str(tmp_path / "missing.zarr") in str(e.value)
    assert not (tmp_path / "missing.zarr").exists()


# ----------------------------------------------------------------------------- JSON side files
def test_json_round_trip(store):
    data = {"identification": {"Si": 0.957, "all": 0.99}, "precision_pm": [28.9, 17.3], "n": 208,
            "ok": True, "note": "Å", "missing": None, "nan": float("nan")}
    path = store.write_json("metrics.json", data)
    assert path == store.path / "metrics.json"
    back = store.read_json("metrics.json")
    nan = back.pop("nan")
    assert np.isnan(nan)
    assert back == {k: v for k, v in data.items() if k != "nan"}
    assert json.loads(path.read_text())["n"] == 208
    store.write_json("metrics.json", {"n": 1})  # replaced, not merged
    assert store.read_json("metrics.json") == {"n": 1}
    assert store.read_json("absent.json") is None
    assert leftovers(store) == []


def test_interrupted_replacement_is_restored_by_the_next_writer_not_by_a_reader(tmp_path):
    from aetdask.schema import tilt_series

    store = RunStore(tmp_path / "r.zarr")
    store.write("raw", tilt_series(np.full((2, 4, 4), 3.0), [0, 90], 0.5))
    os.replace(store.path / "raw", store.path / ".raw.old-deadbeef")  # crash between the two renames
    reader = RunStore(store.path, create=False)
    assert reader.products() == [] and (store.path / ".raw.old-deadbeef").is_dir()  # reading changes nothing
    with reader.lock("next run"):  # the next writer puts it back before it does anything else
        assert reader.products() == ["raw"] and float(reader.read("raw").mean()) == 3.0
    assert not list(store.path.glob(".raw.old-*"))
