"""Array back ends: the one module that imports CuPy.

Every kernel starts with ``xp = get_array_module(x)`` and then uses only the
NumPy-compatible namespace ``xp``, so the same code runs on the CPU (NumPy) and
on a GPU (CuPy).

Examples
--------
>>> import numpy as np
>>> get_array_module(np.zeros(3)) is np
True
>>> get_array_module("cpu") is np
True
"""

from __future__ import annotations

import functools
import socket

import numpy as np

from aetdask.errors import ConfigError, DeviceError

try:  # CuPy is optional: ``pip install aetdask[gpu]``
    import cupy as _cupy
except Exception:  # pragma: no cover - depends on the machine
    _cupy = None

DEVICES = ("cpu", "gpu")


def cupy_available() -> bool:
    """True if CuPy imports *and* a GPU answers (CuPy installs without one)."""
    if _cupy is None:
        return False
    try:
        return bool(_cupy.is_available())
    except Exception:  # pragma: no cover - depends on the machine
        return False


def _cupy_or_raise():
    if not cupy_available():
        raise DeviceError(
            f"aetdask.device = 'gpu', but CuPy with a working GPU is not available on {socket.gethostname()}; "
            "expected device: cpu (the default), or install aetdask[gpu] on a machine with a CUDA GPU"
        )
    return _cupy


def check_device(device=None) -> None:
    """Raise :class:`~aetdask.errors.DeviceError` unless ``device`` (default: ``aetdask.device``) can run here.

    >>> check_device("cpu")
    """
    get_array_module(device)


def get_array_module(x=None):
    """Return the array namespace (``numpy`` or ``cupy``) for ``x``.

    Parameters
    ----------
    x : array, dask array, {"cpu", "gpu"} or None
        A NumPy or CuPy array; a Dask array (its ``_meta`` decides); a device
        name; or None to use the configured ``aetdask.device``.
    """
    if x is None:
        from aetdask import config

        x = config.get("device")
    if isinstance(x, str):
        if x == "cpu":
            return np
        if x == "gpu":
            return _cupy_or_raise()
        raise ConfigError(f"unknown device {x!r}; expected one of {DEVICES}")
    meta = getattr(x, "_meta", None)  # dask arrays
    if meta is not None:
        x = meta
    if _cupy is not None and isinstance(x, _cupy.ndarray):
        return _cupy
    if isinstance(x, (np.ndarray, np.generic, list, tuple, float, int)):
        return np
    raise TypeError(f"cannot tell the array module of {type(x).__name__}")


def asnumpy(x) -> np.ndarray:
    """Bring an array (NumPy or CuPy) to host memory as NumPy."""
    if _cupy is not None and isinstance(x, _cupy.ndarray):
        return _cupy.asnumpy(x)
    return np.asarray(x)


def asarray(x, device=None, dtype=None):
    """Put ``x`` on ``device`` ("cpu", "gpu" or None = config)."""
    xp = get_array_module(device)
    return xp.asarray(x, dtype=dtype)


def sparse_module(xp):
    """``scipy.sparse`` for NumPy, ``cupyx.scipy.sparse`` for CuPy."""
    if xp is np:
        import scipy.sparse

        return scipy.sparse
    import cupyx.scipy.sparse

    return cupyx.scipy.sparse


def scatter_add(out, index, values) -> None:
    """``out[index] += values`` with repeated indices accumulated (NumPy ``add.at``, CuPy ``scatter_add``)."""
    if isinstance(out, np.ndarray):
        np.add.at(out, index, values)
        return
    import cupyx

    cupyx.scatter_add(out, index, values)


@functools.lru_cache(maxsize=None)
def raw_kernel(source: str, name: str):
    """A compiled CuPy ``RawKernel`` (compiled once per process and source)."""
    return _cupy_or_raise().RawKernel(source, name)


def local_cuda_cluster(**kwargs):
    """A ``dask_cuda.LocalCUDACluster`` (one worker per GPU), or None without dask-cuda or a GPU.

    dask-cuda comes with ``pip install 'aetdask[gpu]'``; like CuPy it is imported only here.
    """
    if not cupy_available():
        return None
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        return None
    return LocalCUDACluster(**kwargs)


def cuda_worker(*args, **kwargs):
    """A ``dask_cuda.CUDAWorker`` (one worker process per GPU of this node), or None without dask-cuda."""
    try:
        from dask_cuda import CUDAWorker
    except ImportError:
        return None
    return CUDAWorker(*args, **kwargs)
