"""`aetdask view`: the store's volume and atoms as napari layers, and one error line without napari."""

import sys
import types

import numpy as np
from click.testing import CliRunner

from aetdask.cli import main
from aetdask.io import RunStore
from aetdask.schema import atoms, volume


def _store(tmp_path):
    rs = RunStore(tmp_path / "run.zarr")
    rs.write("volume", volume(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32), 0.5))
    rs.write("truth", atoms([[1.0, 2.0, 3.0], [-1.0, 0.0, 0.5], [0.0, 0.0, 0.0]], ["Si", "Ge", "Si"]))
    return rs.path


def test_layers_put_the_volume_and_the_atoms_on_the_same_axes_in_angstrom(tmp_path):
    from aetdask.view import layers

    (vol, vk, vkind), (pts, pk, pkind) = layers(_store(tmp_path))
    assert vkind == "image" and pkind == "points" and vol.shape == (8, 8, 8)
    assert vk["scale"] == (0.5, 0.5, 0.5) and vk["translate"] == [-2.0, -2.0, -2.0]  # index N//2 is the origin
    np.testing.assert_allclose(pts[0], [3.0, 2.0, 1.0])  # (x, y, z) → (z, y, x)
    assert pk["features"]["species"].tolist() == ["Si", "Ge", "Si"]
    assert pk["face_color"][0] == pk["face_color"][2] != pk["face_color"][1]  # one colour per species


def test_view_opens_napari_with_the_layers(tmp_path, monkeypatch):
    calls = []

    class Viewer:
        def __init__(self, title):
            calls.append(("viewer", title))
            self.dims = types.SimpleNamespace(axis_labels=None)

        def add_image(self, data, **kwargs):
            calls.append(("image", kwargs["name"]))

        def add_points(self, data, **kwargs):
            calls.append(("points", kwargs["name"], len(data)))

    fake = types.SimpleNamespace(Viewer=Viewer, run=lambda: calls.append(("run",)))
    monkeypatch.setitem(sys.modules, "napari", fake)
    result = CliRunner().invoke(main, ["view", str(_store(tmp_path))])
    assert result.exit_code == 0, result.output
    assert [c[0] for c in calls] == ["viewer", "image", "points", "run"] and calls[2] == ("points", "atoms (truth)", 3)


def test_without_napari_one_error_line_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "napari", None)  # import napari raises ImportError
    result = CliRunner().invoke(main, ["view", str(_store(tmp_path))])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: aetdask view: napari is not installed")
    assert "aetdask[view]" in lines[0]


def test_a_folder_that_is_not_a_store_is_named_before_napari_is_looked_for(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "napari", None)
    (tmp_path / "notes").mkdir()
    result = CliRunner().invoke(main, ["view", str(tmp_path / "notes")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {tmp_path / 'notes'}: no aetdask run store here"]
