import dask.array as da
import numpy as np
import pytest

from aetdask import backend, config


def test_numpy_and_dask_and_names():
    assert backend.get_array_module(np.ones(2)) is np
    assert backend.get_array_module(da.ones(2)) is np
    assert backend.get_array_module("cpu") is np
    assert backend.get_array_module(None) is np


def test_errors():
    with pytest.raises(ValueError, match="unknown device"):
        backend.get_array_module("tpu")
    with pytest.raises(TypeError):
        backend.get_array_module(object())


@pytest.mark.skipif(backend.cupy_available(), reason="a GPU is present")
def test_gpu_request_without_gpu_is_clear():
    with pytest.raises(RuntimeError, match="CuPy"):
        backend.get_array_module("gpu")
    with config.set(device="gpu"), pytest.raises(RuntimeError):
        backend.get_array_module(None)


@pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and a GPU")
def test_cupy_roundtrip():
    import cupy

    x = backend.asarray(np.arange(3.0), device="gpu")
    assert backend.get_array_module(x) is cupy
    assert backend.get_array_module(da.from_array(x)) is cupy
    np.testing.assert_array_equal(backend.asnumpy(x), np.arange(3.0))


def test_only_backend_imports_cupy():
    import pathlib

    root = pathlib.Path(backend.__file__).parent
    offenders = [p for p in root.rglob("*.py") if p.name != "backend.py" and "import cupy" in p.read_text()]
    assert offenders == []


def test_kernels_do_not_import_dask_or_xarray():
    import pathlib

    root = pathlib.Path(backend.__file__).parent / "kernels"
    for p in root.rglob("*.py"):
        text = p.read_text()
        assert "import dask" not in text and "import xarray" not in text, p
