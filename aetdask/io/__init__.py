"""Readers and writers: tilt series, tilt angles, atomic models, and the run store."""

from aetdask.io.atoms import read_atoms, write_atoms
from aetdask.io.store import PRODUCTS, RunStore
from aetdask.io.tilts import read_angles, read_tilt_series

__all__ = ["read_tilt_series", "read_angles", "read_atoms", "write_atoms", "RunStore", "PRODUCTS"]
