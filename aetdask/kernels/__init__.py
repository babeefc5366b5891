"""Pure array functions (NumPy or CuPy in, same out), one folder per domain.

Nothing here imports dask or xarray or touches files; every function takes plain arrays and works out
the array module from them. The domains are independent of each other (an import-linter contract):

* ``tomography`` — the projectors (single-axis sparse, general Euler-angle, CUDA) and iterative solvers;
* ``preprocessing`` — noise model, denoising, background, alignment, sub-pixel shifts, the tilt axis;
* ``atoms`` — tracing, Gaussian atom images and their information, species mixtures, model metrics;
* ``simulation`` — the linear ADF-STEM image of atoms;
* ``structure`` — neighbours, RDFs, bond order, Voronoi cells, polytetrahedral motifs, rings, density.
"""
