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
    with pytest.raises(ConfigTypeError, match="an integer.* or null"):
        config.validate("refine_atoms.components", 1.5)
    with pytest.raises(ConfigTypeError, match="a finite number.* or null"):
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


def test_non_finite_and_out_of_range_values_are_refused_naming_the_key():
    for key, bad in (("reconstruct.step", float("nan")), ("reconstruct.step", float("inf")),
                     ("reconstruct.iterations", 0), ("refine_atoms.max_displacement", -1.0),
                     ("simulate.detector", [40.0, float("nan")])):
        with pytest.raises(ValueError, match=f"aetdask.{key} = .*expected"):
            config.set({key: bad})
    assert config.validate("reconstruct.step", 0.5) == 0.5


def test_the_registry_is_the_one_list_of_parameters():
    from aetdask import parameters

    # every registered default is valid, and the defaults dask holds are the registry's
    for key, p in parameters.PARAMETERS.items():
        assert config.validate(key, p.default) == p.default
        assert config.get(key) == p.default
        # a parameter that changes a result is read by some stage; one that changes none names none
        assert bool(p.stages) == (p.role == "result"), key
    # the YAML it writes is a valid --config file giving back every default
    import yaml

    flat = config._flatten(yaml.safe_load(parameters.defaults_yaml())["aetdask"])
    assert flat == {k: p.default for k, p in parameters.PARAMETERS.items()}


def test_a_stage_reading_an_undeclared_parameter_fails(monkeypatch):
    monkeypatch.setenv("AETDASK_STRICT_PARAMETERS", "1")
    with config.declared("trace", ["trace.window"]):
        assert config.get("trace.window") == 7
        config.get("device")  # where work runs changes no product: not declared, allowed
        with pytest.raises(config.UndeclaredParameter, match="stage 'trace' read aetdask.trace.sigma"):
            config.get("trace.sigma")
    assert config.get("trace.sigma") == 3.0  # outside a stage, anything may be read
    monkeypatch.delenv("AETDASK_STRICT_PARAMETERS")
    with config.declared("trace", ["trace.window"]), pytest.warns(UserWarning, match="does not declare"):
        config.get("trace.sigma")


def test_the_users_settings_win_over_a_preset_which_wins_over_the_defaults():
    from aetdask.simulate.multislice import resolve

    preset = {"energy": 300e3, "semiangle": 21.4, "pixel_size": 0.5, "shape": 8, "phonons": 3}
    s = resolve([[0.0, 0.0, 0.0]], ["Si"], {}, preset)
    assert (s["energy"], s["semiangle"], s["phonons"], s["blur"]) == (300e3, 21.4, 3, 0.35)
    with config.set({"simulate.energy": 200e3}):  # set by the user, even to the default: it wins
        s = resolve([[0.0, 0.0, 0.0]], ["Si"], {}, preset)
        assert (s["energy"], s["semiangle"]) == (200e3, 21.4)
        # what the campaign gives itself wins over both
        s = resolve([[0.0, 0.0, 0.0]], ["Si"], {"energy": 80e3, "phonons": 0}, preset)
        assert (s["energy"], s["phonons"]) == (80e3, 0)
    assert resolve([[0.0, 0.0, 0.0]], ["Si"], {}, preset)["energy"] == 300e3
