"""Tomographic reconstruction: RESIRE, SIRT and FBP with angle / shift / scale refinement."""

from aetdask.reconstruct.stage import fbp, prepared_projections, reconstruct, resire, sirt

__all__ = ["reconstruct", "resire", "sirt", "fbp", "prepared_projections"]
