import dask
import pytest

from aetdask import config
from aetdask.errors import ConfigTypeError


def test_defaults_are_in_dask_config():
    assert dask.config.get("aetdask.simulate.energy") == 200000.0
    assert config.get("device") == "cpu"


def test_set_is_read_at_call_time_and_scoped():
    with config.set({"simulate.semiangle": 21.4}):
        assert config.get("simulate.semiangle") == 21.4
    assert config.get("simulate.semiangle") == 17.5
    with config.set(simulate__blur=0.5):
        assert config.get("aetdask.simulate.blur") == 0.5


def test_unknown_key_names_allowed_ones():
    with pytest.raises(KeyError, match="simulate.energy"):
        config.set({"simulate.energie": 3})
    with pytest.raises(KeyError, match="unknown aetdask configuration key"):
        config.get("nope")


def test_bad_values_raise():
    with pytest.raises(ValueError, match="choose one of"):
        config.set(device="tpu")
    with pytest.raises(TypeError, match="wrong kind"):
        config.set({"simulate.energy": "high"})
    with pytest.raises(TypeError):
        config.set({"simulate.detector": [40.0]})
    with dask.config.set({"aetdask.dtype": "float16"}):  # set behind our back: caught when read
        with pytest.raises(ValueError):
            config.get("dtype")


def test_keys_whose_default_is_null_take_numbers():
    assert config.validate("analyze.cutoff", 3.1) == 3.1
    assert config.validate("refine_atoms.components", 2) == 2
    assert config.validate("refine_atoms.components", None) is None
    with pytest.raises(ConfigTypeError, match="an integer or null"):
        config.validate("refine_atoms.components", 1.5)
    with pytest.raises(ConfigTypeError, match="a number or null"):
        config.validate("analyze.cutoff", "3")
    assert config.validate("refine_atoms.angles", True) is True and config.validate("refine_atoms.angles", None) is None
    with pytest.raises(ConfigTypeError, match="true, false or null"):
        config.validate("refine_atoms.angles", 1)


def test_override_wins_and_is_validated():
    assert config.get("simulate.energy", 300e3) == 300e3
    with pytest.raises(TypeError):
        config.get("simulate.energy", "x")


def test_load_yaml(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("aetdask:\n  simulate:\n    energy: 300000.0\n")
    assert config.load(f) == {"aetdask.simulate.energy": 300000.0}
    f.write_text("simulate:\n  colour: red\n")
    with pytest.raises(ValueError, match=str(f)):
        config.load(f)
