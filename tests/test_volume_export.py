"""Volumes out in the formats viewers read: ``aetdask export --volume`` to OME-Zarr (NGFF 0.5) and MRC.

Each written file is opened by independent readers (``mrcfile``; ``zarr`` v3, and ``ome-zarr`` and the
``ome-zarr-models`` validator where installed) and checked for the voxel size, the data and, for OME-Zarr,
the multiscale levels (each half the size of the one before, at twice the scale, the block means of it).
"""

import io
import json

import mrcfile
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from aetdask.cli import main
from aetdask.errors import InputError
from aetdask.io import RunStore
from aetdask.io.volumes import block_means, multiscale_levels, volume_format, write_mrc, write_ome_zarr
from aetdask.schema import volume
from aetdask.simulate import amorphous_particle

VOXEL = 0.35  # Å


def make_volume(shape=(64, 66, 70), seed=0):
    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    return volume(data, VOXEL)


@pytest.fixture
def store(tmp_path):
    """A run store holding only a volume (what `aetdask export --volume` reads)."""
    rs = RunStore(tmp_path / "run.zarr")
    rs.write("volume", make_volume())
    return tmp_path / "run.zarr"


@pytest.fixture
def runner():
    return CliRunner()


# ----------------------------------------------------------------------------- MRC
def test_mrc_opens_with_mrcfile_with_voxel_size_and_data(tmp_path):
    vol = make_volume()
    path = write_mrc(vol, tmp_path / "v.mrc")
    assert mrcfile.validate(str(path), print_file=io.StringIO())
    with mrcfile.open(path) as m:
        assert m.header.mode == 2 and m.data.dtype == np.float32
        assert m.data.shape == (64, 66, 70)  # (sections z, rows y, columns x)
        np.testing.assert_array_equal(m.data, vol.values)
        np.testing.assert_allclose([m.voxel_size.x, m.voxel_size.y, m.voxel_size.z], VOXEL, rtol=1e-6)
        # the origin is the first voxel's position, in Å (aetdask's coordinates: 0 at voxel n // 2)
        np.testing.assert_allclose([m.header.origin.x, m.header.origin.y, m.header.origin.z],
                                   [-35 * VOXEL, -33 * VOXEL, -32 * VOXEL], rtol=1e-6)
        assert m.header.dmax == pytest.approx(vol.values.max()) and m.header.dmean == pytest.approx(vol.values.mean())


def test_mrc_never_over_an_existing_file(tmp_path):
    (tmp_path / "v.mrc").write_text("mine")
    with pytest.raises(FileExistsError):
        write_mrc(make_volume((4, 4, 4)), tmp_path / "v.mrc")
    assert (tmp_path / "v.mrc").read_text() == "mine"


# ----------------------------------------------------------------------------- OME-Zarr
def check_ome_zarr(path, vol):
    group = zarr.open_group(str(path), mode="r")
    assert group.metadata.zarr_format == 3
    ome = group.attrs["ome"]
    assert ome["version"] == "0.5"
    (ms,) = ome["multiscales"]
    assert ms["axes"] == [{"name": d, "type": "space", "unit": "angstrom"} for d in ("z", "y", "x")]
    levels = [group[d["path"]] for d in ms["datasets"]]
    assert len(levels) >= 2  # ≥ 64 voxels on every side: at least one coarser level
    np.testing.assert_array_equal(levels[0][...], vol.values)
    for k, (d, level) in enumerate(zip(ms["datasets"], levels)):
        assert list(level.metadata.dimension_names) == ["z", "y", "x"]
        scale, translation = d["coordinateTransformations"]
        assert scale["type"] == "scale" and translation["type"] == "translation"
        np.testing.assert_allclose(scale["scale"], [VOXEL * 2**k] * 3)
        if k:
            assert level.shape == tuple(s // 2 for s in levels[k - 1].shape)
            np.testing.assert_allclose(level[...], block_means(levels[k - 1][...]), rtol=1e-6)
            # the first block's centre, half a finer voxel past the finer level's first centre
            prev = ms["datasets"][k - 1]["coordinateTransformations"][1]["translation"]
            np.testing.assert_allclose(translation["translation"], np.array(prev) + VOXEL * 2 ** (k - 1) / 2)
    np.testing.assert_allclose(ms["datasets"][0]["coordinateTransformations"][1]["translation"],
                               [vol.z.values[0], vol.y.values[0], vol.x.values[0]])
    return ms


def test_ome_zarr_multiscales_metadata_and_data(tmp_path):
    vol = make_volume()
    check_ome_zarr(write_ome_zarr(vol, tmp_path / "v.ome.zarr"), vol)


def test_ome_zarr_read_by_ome_zarr_readers(tmp_path):
    ome_zarr_reader = pytest.importorskip("ome_zarr.reader")
    from ome_zarr.io import parse_url

    vol = make_volume()
    path = write_ome_zarr(vol, tmp_path / "v.ome.zarr")
    (node,) = list(ome_zarr_reader.Reader(parse_url(str(path)))())
    assert [a["unit"] for a in node.metadata["axes"]] == ["angstrom"] * 3
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales == [[VOXEL] * 3, [2 * VOXEL] * 3]
    np.testing.assert_array_equal(np.asarray(node.data[0]), vol.values)
    models = pytest.importorskip("ome_zarr_models.v05.image")  # the NGFF 0.5 schema, as a validator
    image = models.Image.from_zarr(zarr.open_group(str(path), mode="r"))
    assert [a.unit for a in image.attributes.ome.multiscales[0].axes] == ["angstrom"] * 3


def test_small_volume_has_one_level_and_levels_rule():
    assert [lv.shape for lv in multiscale_levels(np.zeros((32, 40, 40), np.float32))] == [(32, 40, 40)]
    assert [lv.shape for lv in multiscale_levels(np.zeros((128, 128, 129), np.float32))] == [
        (128, 128, 129), (64, 64, 64), (32, 32, 32)]


def test_volume_format_by_name():
    assert volume_format("a/b.ome.zarr") == "ome-zarr" and volume_format("b.mrc") == "mrc"
    with pytest.raises(InputError, match=r"v\.zarr: unknown volume format '\.zarr'; expected a name ending in \.ome\.zarr"):
        volume_format("v.zarr")


# ----------------------------------------------------------------------------- aetdask export --volume
def test_export_volume_to_both_formats(tmp_path, store, runner):
    vol = RunStore(store, create=False).read("volume")
    r = runner.invoke(main, ["export", str(store), "--volume", str(tmp_path / "out" / "v.mrc")])
    assert r.exit_code == 0, r.output
    assert "64×66×70 voxels of 0.35 Å" in r.output
    with mrcfile.open(tmp_path / "out" / "v.mrc") as m:
        np.testing.assert_array_equal(m.data, vol.values)
        assert m.voxel_size.x == pytest.approx(VOXEL)
    r = runner.invoke(main, ["export", str(store), "--volume", str(tmp_path / "v.ome.zarr")])
    assert r.exit_code == 0, r.output
    check_ome_zarr(tmp_path / "v.ome.zarr", vol)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no private folder left behind


def test_export_volume_refusals(tmp_path, store, runner):
    def refused(args, message):
        r = runner.invoke(main, ["export", str(store), *args])
        assert r.exit_code == 2, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.output
        assert message in lines[0], lines[0]

    existing = tmp_path / "v.mrc"
    existing.write_text("mine")
    refused(["--volume", str(existing)], f"--volume {existing}: already exists; expected a new file (pass --overwrite")
    assert existing.read_text() == "mine"
    refused(["--volume", str(store / "v.ome.zarr")], f"--volume {store / 'v.ome.zarr'}: inside the run store")
    assert not (store / "v.ome.zarr").exists()
    refused(["--volume", str(tmp_path / "v.tif")], "v.tif: unknown volume format '.tif'; expected a name ending in "
            ".ome.zarr (OME-Zarr")
    refused([], "export: nothing to write; expected --atoms FILE and/or --volume FILE")
    folder = tmp_path / "mine.ome.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    refused(["--volume", str(folder), "--overwrite"], "an existing folder that is not a Zarr store")
    assert (folder / "notes.txt").read_text() == "keep"
    RunStore(tmp_path / "atoms-only.zarr").write("truth", amorphous_particle(10, seed=0))
    r = runner.invoke(main, ["export", str(tmp_path / "atoms-only.zarr"), "--volume", str(tmp_path / "e.mrc")])
    assert r.exit_code == 2 and "no volume in this store" in r.output, r.output


def test_export_volume_overwrite_replaces(tmp_path, store, runner):
    mrc, ome = tmp_path / "v.mrc", tmp_path / "v.ome.zarr"
    mrc.write_text("old")
    write_ome_zarr(make_volume((8, 8, 8), seed=3), ome)
    for target in (mrc, ome):
        r = runner.invoke(main, ["export", str(store), "--volume", str(target), "--overwrite"])
        assert r.exit_code == 0, r.output
    vol = RunStore(store, create=False).read("volume")
    with mrcfile.open(mrc) as m:
        np.testing.assert_array_equal(m.data, vol.values)
    check_ome_zarr(ome, vol)
    assert json.loads((ome / "zarr.json").read_text())["attributes"]["ome"]["version"] == "0.5"
