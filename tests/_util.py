"""Helpers shared by the tests."""

import contextlib
import pathlib

import dask
import numpy as np
import pytest

SEED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed-paper"
needs_seed = pytest.mark.skipif(not SEED.is_dir(), reason="seed-paper data not present")


@contextlib.contextmanager
def raise_if_dask_computes():
    """Fail if anything is computed inside the block (a stage must stay lazy)."""

    def scheduler(dsk, keys, **kwargs):
        raise RuntimeError("dask computed something inside raise_if_dask_computes()")

    with dask.config.set(scheduler=scheduler):
        yield


def ncc(a, b):
    """Normalised cross-correlation (Pearson) of two images."""
    a = np.asarray(a, float) - np.mean(a)
    b = np.asarray(b, float) - np.mean(b)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))
