"""Simulated tilt series: the fast linear ADF model, multislice (abTEM) campaigns, noise, test particles.

``aetdask.simulate.multislice`` is the multislice module (``multislice.multislice`` builds a
lazy noise-free tilt series); ``run_campaign`` runs many of them, resumably.
"""

from aetdask.simulate.amorphous import amorphous_particle, dense_particle, silica_particle
from aetdask.simulate.campaign import run_campaign
from aetdask.simulate.linear import linear
from aetdask.simulate.noise import add_noise

__all__ = ["linear", "amorphous_particle", "dense_particle", "silica_particle", "add_noise", "run_campaign"]
