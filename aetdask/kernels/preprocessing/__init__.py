"""Kernels of preprocessing: noise model, denoising, background, alignment, sub-pixel shifts, the tilt axis."""
