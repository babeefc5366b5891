"""Simulated tilt series: the fast linear ADF model (and amorphous test particles)."""

from aetdask.simulate.amorphous import amorphous_particle
from aetdask.simulate.linear import linear

__all__ = ["linear", "amorphous_particle"]
