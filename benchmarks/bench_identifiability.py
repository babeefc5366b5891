"""Can the counts tell a wrong cluster of atoms from the truth? The paired local test behind issue 26's gap.

    python benchmarks/bench_identifiability.py --store DIR/run_1.6e+04_shift0.zarr --model refined.npy
        [--radius 2.5 4.5] [--shell 2.5] [--separation 12] [--repeats 2] [--components 1]

On a ``bench_large.py`` run store (its raw counts, noise model, angles and shifts) and a refined model
of it (an ``.npy`` of positions in Å, or any file ``aetdask.io.read_atoms`` reads), the coordinate
refinement's own problem is set up at that model (``refine_atoms``'s first fit: profile, background and
scale with the atoms held). Then, around false atoms of the model (no true atom within 1 Å) spaced
``--separation`` Å apart, two versions of each neighbourhood are fitted:

* **self**: the model's atoms within ``radius + shell`` of the seed, their positions fitted;
* **truth**: the model's atoms within ``radius`` replaced by the true atoms there, the shell's model
  atoms kept, all their positions fitted;

every other atom held. Each version's change of the penalised misfit (Poisson negative log-likelihood
plus :func:`aetdask.model.refine.selection_threshold` per atom) against the model as it was is
evaluated exactly (:func:`aetdask.kernels.atoms.gaussian_atoms.group_change`), and the two compared
neighbourhood by neighbourhood: where the truth's is not lower, no search — local, cluster or global
move — guided by these counts and this penalty would prefer the truth there.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from bench_large import SEED_DIR, truth_model  # noqa: E402


class _Captured(Exception):
    pass


def fitted_problem(store_path, positions, components):
    """``refine_atoms``'s problem and parameters after its first fit (atoms held), at ``positions``."""
    import aetdask.model.refine as refine
    from aetdask import config
    from aetdask.io import RunStore
    from aetdask.schema import atoms

    store = RunStore(store_path, create=False)
    raw, pre = store.read("raw"), store.read("preprocessed")
    keys = [k for k in ("noise_alpha", "noise_sigma", "shift_y", "shift_x", "phi", "theta", "psi") if k in pre.coords]
    data = raw.load().assign_coords({k: ("tilt", pre.coords[k].values) for k in keys})
    got = {}

    def capture(problem, x, pool, kinds, min_distance, held=False):  # stands in for the first selection round
        got.update(problem=problem, x=x, min_distance=min_distance)
        raise _Captured

    original, refine._select = refine._select, capture
    try:
        with config.set({"refine_atoms.components": components}):
            refine.refine_atoms(atoms(positions, ["Si"] * len(positions)), data, select=True)
    except _Captured:
        pass
    finally:
        refine._select = original
    return got["problem"], got["x"], got["min_distance"]


class Neighbourhoods:
    """Fits the positions of groups of atoms against the counts, every other atom held."""

    def __init__(self, problem, x):
        from aetdask.kernels.atoms import gaussian_atoms as ga

        self.ga, self.problem = ga, problem
        pos, h, s, bg, c, o, e = problem.unpack(x)
        self.pos, self.o, self.e = pos, o, e
        self.h, self.s = h.reshape(-1), s.reshape(-1) / problem.pixel  # one species: its profile's components
        m = problem.model(x)[0]
        self.mean = np.maximum((m + problem.offset) / problem.alpha, 1e-12)
        self.weight = c / problem.alpha[:, 0, 0]

    def image(self, positions):
        k = len(self.h)
        det = self.problem.detector(positions, self.o, self.e)
        return self.ga.render(np.repeat(det, k, axis=1), np.tile(self.h, len(positions)),
                              np.tile(self.s, len(positions)), self.mean.shape[1:])

    def fit(self, base, start):
        """Positions (n, 3) fitted by L-BFGS to the counts over ``base`` (the mean without them)."""
        import scipy.optimize

        p, k, z, w = self.problem, len(self.h), self.problem.zp, self.weight[:, None, None]
        jac = p.jacobian(self.e)

        def misfit(flat):
            pts = flat.reshape(-1, 3)
            det = np.repeat(p.detector(pts, self.o, self.e), k, axis=1)
            mean = np.maximum(base + w * self.ga.render(det, np.tile(self.h, len(pts)), np.tile(self.s, len(pts)),
                                                        base.shape[1:]), 1e-12)
            g = self.ga.gradients((1.0 - z / mean) * w, det, np.tile(self.h, len(pts)), np.tile(self.s, len(pts)))[0]
            g = g.reshape(g.shape[0], len(pts), k, 2).sum(axis=2)
            return float(np.sum(mean - z * np.log(mean))), np.einsum("tni,tij->nj", g, jac).ravel()

        return scipy.optimize.minimize(misfit, start.ravel(), jac=True, method="L-BFGS-B",
                                       options={"maxiter": 200}).x.reshape(-1, 3)

    def change(self, old, new, penalty):
        """Exact change of the penalised misfit, per neighbourhood: its ``old`` atoms (indices) replaced by ``new``."""
        g = max(len(a) + len(b) for a, b in zip(old, new))
        group = np.zeros((len(old), g, 3))
        height = np.zeros((len(old), g, len(self.h)))
        for i, (a, b) in enumerate(zip(old, new)):
            group[i, :len(a)], height[i, :len(a)] = self.pos[a], -self.h
            group[i, len(a):len(a) + len(b)], height[i, len(a):len(a) + len(b)] = b, self.h
        det = self.problem.detector(group.reshape(-1, 3), self.o, self.e).reshape(self.problem.n_t, len(old), g, 2)
        change = self.ga.group_change(self.problem.zp, self.mean, det, height,
                                      np.broadcast_to(self.s, height.shape).copy(), np.ones(g), self.weight)
        return change + penalty * np.array([len(b) - len(a) for a, b in zip(old, new)])


def main():
    from scipy.spatial import cKDTree

    from aetdask.model.refine import selection_threshold

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="a bench_large.py run store (raw and preprocessed)")
    ap.add_argument("--model", required=True, help="the refined model: .npy positions (Å) or an atoms file")
    ap.add_argument("--truth", default=str(SEED_DIR / "aSi9nm_model_GT.txt"))
    ap.add_argument("--radius", type=float, nargs="+", default=[2.5, 4.5], help="replaced neighbourhood (Å)")
    ap.add_argument("--shell", type=float, default=2.5, help="model atoms around it fitted too (Å)")
    ap.add_argument("--separation", type=float, default=12.0, help="least distance between two seeds (Å)")
    ap.add_argument("--repeats", type=int, default=2, help="sets of seeds (cells of alternating parity)")
    ap.add_argument("--components", type=int, default=1, help="Gaussians per atom profile (refine_atoms.components)")
    args = ap.parse_args()
    if args.model.endswith(".npy"):
        positions = np.load(args.model)
    else:
        from aetdask.io import read_atoms

        positions = read_atoms(args.model).position.values
    truth = truth_model(args.truth)[0].position.values
    t0 = time.perf_counter()
    problem, x, _ = fitted_problem(args.store, positions, args.components)
    hood = Neighbourhoods(problem, x)
    pos, penalty = hood.pos, selection_threshold()
    print(f"problem at the model: {len(pos)} atoms, {time.perf_counter() - t0:.0f} s", flush=True)
    tree, true_tree = cKDTree(pos), cKDTree(truth)
    false = np.flatnonzero(true_tree.query(pos)[0] > 1.0)
    print(f"false atoms (no true atom within 1 Å): {len(false)}")
    print("| radius (Å) | neighbourhoods | model atoms replaced | true atoms put in | truth − self, penalised: median "
          "(10th–90th pct) | truth lower in | truth − self, misfit alone: median |")
    print("|---|---|---|---|---|---|---|")
    for radius in args.radius:
        diffs, raw, n_old, n_true = [], [], [], []
        for rep in range(args.repeats):
            cell = np.floor(pos[false] / args.separation).astype(int)
            chosen = false[((cell % 2) @ np.array([1, 2, 4])) == rep]
            order = np.random.default_rng(rep).permutation(len(chosen))
            _, first = np.unique(cell[((cell % 2) @ np.array([1, 2, 4])) == rep][order], axis=0, return_index=True)
            seeds = chosen[order[first]]
            inner = tree.query_ball_point(pos[seeds], radius)
            outer = [np.asarray(a, int) for a in tree.query_ball_point(pos[seeds], radius + args.shell)]
            true_in = true_tree.query_ball_point(pos[seeds], radius)
            every = np.unique(np.concatenate(outer))
            base = np.maximum(hood.mean - hood.weight[:, None, None] * hood.image(pos[every]), 1e-12)
            results = {}
            for version in ("self", "truth"):
                starts = []
                for a, inn, tin in zip(outer, inner, true_in):
                    shell = np.setdiff1d(a, inn)
                    starts.append(np.concatenate([pos[shell], truth[tin] if version == "truth" else pos[inn]]))
                fitted = np.split(hood.fit(base, np.concatenate(starts)), np.cumsum([len(s) for s in starts])[:-1])
                results[version] = (hood.change(outer, fitted, penalty), hood.change(outer, fitted, 0.0))
            diffs.append(results["truth"][0] - results["self"][0])
            raw.append(results["truth"][1] - results["self"][1])
            n_old += [len(i) for i in inner]
            n_true += [len(t) for t in true_in]
        d, r = np.concatenate(diffs), np.concatenate(raw)
        lo, hi = np.percentile(d, [10, 90])
        print(f"| {radius:g} | {len(d)} | {np.mean(n_old):.1f} | {np.mean(n_true):.1f} | {np.median(d):+.1f} "
              f"({lo:+.1f} to {hi:+.1f}) | {(d < 0).sum()} of {len(d)} | {np.median(r):+.1f} |", flush=True)
    print(f"components {args.components}, shell {args.shell} Å, threshold {penalty:.2f} per atom; "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
