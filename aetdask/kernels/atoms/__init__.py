"""Kernels of atoms: tracing peaks, Gaussian atom images and their information, species mixtures, model metrics."""
