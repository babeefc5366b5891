"""Anderson mixing: speeding up a slowly converging fixed-point iteration.

A refinement round maps the current geometry ``x`` to a corrected one,
``x + f(x)``. Near the answer that map is close to linear, and its slow
directions (errors the reconstruction partly follows, so that each round
removes only a few per cent of them) set how many rounds are needed. Anderson
mixing (type II; Walker & Ni, SIAM J. Numer. Anal. 49, 1715 (2011)) keeps the
last ``m`` rounds and combines them: with the differences of the inputs
``ΔX = [x_{i+1} − x_i]`` and of the corrections ``ΔF = [f_{i+1} − f_i]``,

    γ = argmin ‖f_k − ΔF γ‖,        x_{k+1} = x_k + f_k − (ΔX + ΔF) γ.

For a linear map this is GMRES on ``f(x) = 0``: a few slow directions are
removed in about as many rounds, where plain iteration needs ``1 / (1 − ρ)``
rounds for a contraction ``ρ``. The corrections a round measures are noisy
(the volume it compares against is not converged), so the least squares are
truncated (``rcond``), and the caller may bound the step: one out of bounds
restarts the history.
"""

from __future__ import annotations

import numpy as np


class AndersonMixer:
    """Combine a fixed-point iteration's last ``memory`` rounds into each step.

    Parameters
    ----------
    memory : int
        Past rounds kept (0: plain iteration, the step is the correction).
    rcond : float
        Relative cut-off of the singular values in the least squares.
    limit : callable, optional
        ``limit(step, f)`` → False for a mixed step not to be trusted (say, one
        that goes beyond what a round could have measured): the history is
        cleared and the plain correction ``f`` taken.

    Examples
    --------
    A linear iteration ``x ← M x + b`` whose slowest direction contracts by 0.98
    per round:

    >>> m = np.diag([0.98, 0.5, 0.1]); b = np.ones(3); x_true = np.linalg.solve(np.eye(3) - m, b)
    >>> mixer, x = AndersonMixer(3), np.zeros(3)
    >>> for _ in range(6):
    ...     x = x + mixer.step(x, m @ x + b - x)
    >>> bool(np.abs(x - x_true).max() < 1e-6)
    True
    """

    def __init__(self, memory: int, rcond: float = 1e-3, limit=None):
        if memory < 0:
            raise ValueError(f"memory: expected a number of rounds ≥ 0, got {memory}")
        self.memory = int(memory)
        self.rcond = float(rcond)
        self.limit = limit
        self._x: list[np.ndarray] = []
        self._f: list[np.ndarray] = []
        self.used = 0  #: past rounds the last step combined
        self.restarts = 0

    def step(self, x, f, project=None) -> np.ndarray:
        """The change to apply to ``x``, given the correction ``f`` a round proposes at ``x``.

        ``project``, if given, maps a vector onto the subspace the mixing acts
        on (a linear projector); the returned step then lies in it.
        """
        x = np.asarray(x, dtype=float).ravel()
        f = np.asarray(f, dtype=float).ravel()
        proj = (lambda v: v) if project is None else project
        self._x.append(x.copy())
        self._f.append(f.copy())
        del self._x[: -(self.memory + 1)]
        del self._f[: -(self.memory + 1)]
        fp = proj(f)
        self.used = len(self._x) - 1
        if self.used == 0:
            return fp
        dx = np.stack([proj(v) for v in np.diff(np.array(self._x), axis=0)], axis=1)
        df = np.stack([proj(v) for v in np.diff(np.array(self._f), axis=0)], axis=1)
        gamma = np.linalg.lstsq(df, fp, rcond=self.rcond)[0]
        mixed = fp - (dx + df) @ gamma
        if not np.all(np.isfinite(mixed)) or (self.limit is not None and not self.limit(mixed, fp)):
            self.restarts += 1
            self.used = 0
            self._x[:] = self._x[-1:]
            self._f[:] = self._f[-1:]
            return fp
        return mixed
