"""aetdask: atomic electron tomography as a distributed dataflow on Dask."""

import os as _os
import pathlib as _pathlib

# Numba's compiled kernels are cached in the user's cache directory, never inside the installed package (a
# cache left in site-packages/aetdask by one install hid the package of a later editable install). Workers
# started from here inherit the setting; one set by the user wins.
_os.environ.setdefault("NUMBA_CACHE_DIR", str(_pathlib.Path(_os.environ.get("XDG_CACHE_HOME") or
                                                            _pathlib.Path.home() / ".cache") / "aetdask" / "numba"))

from aetdask import config  # noqa: F401  (registers the defaults in dask.config)
from aetdask._version import __version__
from aetdask.evaluate import evaluate
from aetdask.io import RunStore, read_angles, read_atoms, read_tilt_series, write_atoms

__all__ = [
    "__version__",
    "evaluate",
    "read_tilt_series",
    "read_angles",
    "read_atoms",
    "write_atoms",
    "RunStore",
]
