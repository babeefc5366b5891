"""Kernels of tomography: projectors (single-axis sparse, general Euler-angle, CUDA), the iterative solvers,
scanning-AET geometry."""
