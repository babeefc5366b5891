"""aetdask: atomic electron tomography as a distributed dataflow on Dask."""

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
