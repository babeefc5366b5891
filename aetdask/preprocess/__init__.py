"""Preprocessing of raw tilt series: noise model, optional VST + denoising, background, alignment, normalization."""

from aetdask.preprocess.stage import aligned, axis_warning, combine_frames, denoise_image, preprocess

__all__ = ["preprocess", "aligned", "axis_warning", "combine_frames", "denoise_image"]
