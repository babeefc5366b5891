"""Kernels of structure: neighbours, RDFs, bond-orientational order, Voronoi cells, polytetrahedral motifs, rings, density."""
