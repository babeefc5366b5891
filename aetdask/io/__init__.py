"""Readers and writers: tilt series (microscope files with their metadata among them), tilt angles, atomic
models, volumes for viewers, and the run store."""

from aetdask.io.atoms import read_atoms, write_atoms
from aetdask.io.store import PRODUCTS, RunStore
from aetdask.io.microscope import read_microscope
from aetdask.io.tilts import read_angles, read_tilt_series
from aetdask.io.volumes import write_mrc, write_ome_zarr, write_volume

__all__ = ["read_tilt_series", "read_angles", "read_microscope", "read_atoms", "write_atoms", "write_volume",
           "write_ome_zarr", "write_mrc", "RunStore", "PRODUCTS"]
