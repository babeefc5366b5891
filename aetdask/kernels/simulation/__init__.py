"""Kernels of simulation: the linear ADF-STEM image of atoms."""
