"""Structure analysis of atomic models (Yuan et al., Nat. Mater. 21, 95 (2022)).

Works on any model — traced, ground truth or molecular dynamics — treated as a finite
particle: RDFs normalised by the particle's own shape, averaged bond-orientational
order, Voronoi indices, polytetrahedral motifs and pentagonal-bipyramid networks,
local mass density and shortest-path rings, block by block on Dask for large models.
"""

from aetdask.analyze.radial import rdf
from aetdask.analyze.run import analyze

__all__ = ["analyze", "rdf"]
