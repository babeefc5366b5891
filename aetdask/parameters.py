"""Every aetdask parameter, in one place: its default, kind, allowed values, help and the stages that read it.

This registry is the only list. :mod:`aetdask.config` builds the defaults and
validates every value from it; a pipeline stage depends on exactly the
parameters that name it (:func:`read_by`), so its fingerprint follows from
here; the CLI's help quotes :attr:`Parameter.help`. Adding a parameter to a
stage is one entry here (and the code that reads it).

Stages are named as in :mod:`aetdask.stages` (``preprocess``,
``reconstruct``, ``trace``, …). A parameter whose role is ``"execution"``
(where work runs) or ``"presentation"`` (what a figure shows) changes no
product and names no stage.

Examples
--------
>>> PARAMETERS["reconstruct.iterations"].default
100
>>> "reconstruct.round" in read_by("reconstruct")
True
>>> print(defaults_yaml().splitlines()[1])
aetdask:
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real

#: Every stage of the pipeline's chains that reconstructs a volume from projections.
_VOLUME = ("reconstruct", "reconstruct-angles", "reconstruct-scanning")
_PRE = ("preprocess", "preprocess-film")


@dataclass(frozen=True)
class Parameter:
    """One parameter: ``aetdask.<key>``.

    ``kind`` is ``bool``, ``int``, ``float``, ``str`` or ``list`` (of numbers or strings, ``length`` long when
    given); ``choices`` restricts a value to a set; ``low``/``high`` bound a number (inclusive unless
    ``open_low``); ``nullable``: ``None`` is allowed (decided from the data or the other settings).
    """

    key: str
    default: object
    kind: type
    help: str
    stages: tuple = ()
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    nullable: bool = False
    length: int | None = None
    items: type = float
    role: str = "result"
    extra: dict = field(default_factory=dict)

    def check(self, value):
        """``value`` if allowed, else :class:`ValueError` with the reason (the caller names the key)."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"expected {self.expected()}, got null")
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"{value!r} is not allowed; choose one of {self.choices}")
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise TypeError(f"{value!r} has the wrong kind; expected {self.expected()}")
            return value
        if self.kind in (int, float):
            integral = self.kind is int
            if isinstance(value, bool) or not isinstance(value, Integral if integral else Real):
                raise TypeError(f"{value!r} has the wrong kind; expected {self.expected()}")
            self._check_number(value)
            return value
        if self.kind is str:
            if not isinstance(value, str):
                raise TypeError(f"{value!r} has the wrong kind; expected {self.expected()}")
            return value
        if self.kind is list:
            if not isinstance(value, (list, tuple)) or (self.length is not None and len(value) != self.length):
                raise TypeError(f"{value!r} has the wrong kind; expected {self.expected()}")
            for v in value:
                if self.items is str:
                    if not isinstance(v, str):
                        raise TypeError(f"{value!r} has the wrong kind; expected {self.expected()}")
                elif isinstance(v, bool) or not isinstance(v, Real):
                    raise TypeError(f"{value!r} has the wrong kind; expected {self.expected()}")
                else:
                    self._check_number(v)
            return value
        raise TypeError(f"{self.key}: unknown kind {self.kind!r}")  # a registry entry's fault, not the user's

    def _check_number(self, v):
        if not math.isfinite(float(v)):
            raise ValueError(f"{v!r} is not a finite number; expected {self.expected()}")
        if self.low is not None and (v <= self.low if self.open_low else v < self.low):
            raise ValueError(f"{v!r} is out of range; expected {self.expected()}")
        if self.high is not None and v > self.high:
            raise ValueError(f"{v!r} is out of range; expected {self.expected()}")

    def expected(self) -> str:
        """What a value must be, in words."""
        if self.choices is not None:
            what = "one of " + ", ".join(map(str, self.choices))
        elif self.kind is bool:
            return "true, false or null" if self.nullable else "true or false"
        elif self.kind is list:
            n = f"{self.length} " if self.length else ""
            what = f"a list of {n}{'names' if self.items is str else 'finite numbers'}"
        elif self.kind is str:
            what = "a string"
        else:
            what = "an integer" if self.kind is int else "a finite number"
            if self.low is not None and self.high is not None:
                what += f" in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"
            elif self.low is not None:
                what += f" {'>' if self.open_low else '≥'} {self.low:g}"
            elif self.high is not None:
                what += f" ≤ {self.high:g}"
        return what + (" or null" if self.nullable else "")


def _p(key, default, kind, help, stages=(), **kw):
    return Parameter(key, default, kind, help, tuple(stages), **kw)


_ALL = [
    # where and how work runs
    _p("device", "cpu", str, "where kernels run", choices=("cpu", "gpu"), role="execution"),
    _p("dtype", "float32", str, "working precision of images and volumes", _PRE + _VOLUME + ("simulate",),
       choices=("float32", "float64")),
    _p("scheduler", None, str, "address of a running Dask scheduler; null = a local cluster", nullable=True,
       role="execution"),
    # simulation of tilt series
    _p("simulate.energy", 200000.0, float, "beam energy (eV)", ["simulate"], low=0, open_low=True),
    _p("simulate.semiangle", 17.5, float, "probe convergence semi-angle (mrad)", ["simulate"], low=0, open_low=True),
    _p("simulate.detector", [40.0, 190.0], list, "annular detector inner and outer angle (mrad)", ["simulate"],
       length=2, low=0),
    _p("simulate.blur", 0.35, float, "partial-coherence Gaussian, standard deviation (Å)", ["simulate"], low=0),
    _p("simulate.background", 1.0, float, "constant background (e⁻ per pixel) added before Poisson noise",
       ["simulate"], low=0),
    _p("simulate.pad", 5.0, float, "margin (Å) added around the field of view against wrap-around", ["simulate"],
       low=0),
    # preprocessing
    _p("preprocess.denoiser", "none", str,
       "none | bm3d (non-commercial licence) | nlm (free); none: the atom fit uses the raw counts, and BM3D blurs "
       "the atoms of a dense particle's projections together (benchmarks/bench_large.py, BENCHMARKS.md)", _PRE,
       choices=("bm3d", "nlm", "none")),
    _p("preprocess.tilt_axis", None, float,
       "in-plane direction of the tilt axis in the raw images (degrees from x towards +y), carried in each "
       "projection's Euler angles (the projections are not resampled); null = along x, as the angles say. "
       "aetdask.kernels.preprocessing.tilt_axis.estimate_tilt_axis estimates it from the data", _PRE, nullable=True),
    _p("preprocess.find_tilt_axis", False, bool,
       "where preprocess.tilt_axis is null, and the sample is an isolated particle: true = use the direction "
       "the images' common lines give (estimate_tilt_axis, recorded with its standard error); false = along x, "
       "with a warning where the images say it is turned by more than 4 standard errors and 1° (a given axis is "
       "checked the same way)", _PRE),
    _p("preprocess.match_folds", 2, int,
       "projection matching (run where the centre-of-mass / common-line shifts are beyond their noise): each "
       "projection is registered to the object reconstructed from the other folds (interleaved) of the series",
       _PRE, low=2),
    _p("preprocess.match_rounds", 8, int, "projection matching: most rounds (reconstruct, reproject, register)",
       _PRE, low=1),
    _p("preprocess.match_iterations", 30, int, "projection matching: RESIRE iterations per reconstruction", _PRE,
       low=1),
    _p("preprocess.match_tolerance", 0.02, float,
       "projection matching: stop when a round moves the shifts by less than this (px RMS per axis)", _PRE,
       low=0, open_low=True),
    _p("preprocess.match_smooth", 1.0, float,
       "projection matching: Gaussian (px) on projection and reprojection before registering them", _PRE, low=0),
    _p("preprocess.match_size", 512, int,
       "projection matching: larger projections are binned by a whole factor to at most this (px); binning costs "
       "accuracy (20,000-atom particle, 290², shifts ±3 px: 0.09/0.06 px RMS unbinned, 0.23/0.08 binned to 145²)",
       _PRE, low=16),
    _p("preprocess.panel_tilts", 3, int, "projections shown in the preprocessing figure", low=1,
       role="presentation"),
    # reconstruction
    _p("reconstruct.method", "resire", str, "resire | sirt | fbp (angle refinement: resire only)", _VOLUME,
       choices=("resire", "sirt", "fbp")),
    _p("reconstruct.iterations", 100, int, "iterations of the iterative methods", _VOLUME, low=1),
    _p("reconstruct.step", 1.0, float,
       "RESIRE step (paper normalisation: t = step / (projections × thickness)); SIRT relaxation",
       _VOLUME, low=0, open_low=True, high=2.0),
    _p("reconstruct.subsamples", 2, int,
       "sub-samples per voxel axis (2 → 2×2 in the slice plane; at Euler angles 2×2×1 shear-warp, 2×2×2 general)",
       _VOLUME, low=1),
    _p("reconstruct.projector", "auto", str,
       "projector at general Euler angles: shear-warp (rows of voxels share weights; CPU, 5–10× faster, a little "
       "more blur across the tilt axis) | general (every sub-sample on its own) | auto (shear-warp on the CPU "
       "wherever its warp is accurate: a tilt axis within about 8° of the image's x or y)", _VOLUME,
       choices=("auto", "shear-warp", "general")),
    _p("reconstruct.plateau", 0.0, float,
       "stop when R improves by less than this (relative) over 10 iterations; 0 = never", _VOLUME, low=0),
    _p("reconstruct.slabs", 0, int,
       "slabs (tasks) the volume is cut into; 0 = about 32 planes each (fixed by the volume, so any number of "
       "workers gives the same result)", _VOLUME, low=0),
    _p("reconstruct.round", 10, int,
       "iterations between looks at the global R-factor (single-axis slabs; where a plateau stops the run)",
       _VOLUME, low=1),
    _p("scanning.core", 64, int, "voxels per side of a scanning-AET sub-volume (thin films), before the overlap",
       ["reconstruct-scanning"], low=8),
    _p("scanning.overlap", 16, int, "voxels shared by neighbouring sub-volumes, blended with linear ramps",
       ["reconstruct-scanning"], low=0),
    _p("refine.rounds", 3, int, "refine → re-reconstruct cycles", ["reconstruct-angles"], low=1),
    _p("refine.iterations", 50, int, "RESIRE iterations inside each cycle", ["reconstruct-angles"], low=1),
    _p("refine.angle_step", 0.2, float, "grid step of the angle search (degrees)", ["reconstruct-angles"], low=0,
       open_low=True),
    _p("refine.angle_points", 5, int, "grid points per angle (odd), centred on the current angle",
       ["reconstruct-angles"], low=1),
    _p("refine.shift_upsample", 20, int, "sub-pixel factor of the shift search", ["reconstruct-angles"], low=1),
    _p("refine.momentum", 0.8, float,
       "heavy-ball momentum of the slow, deformation-like part of the angle corrections (0 = none)",
       ["reconstruct-angles"], low=0, high=0.99),
    _p("refine.memory", 5, int, "past rounds Anderson mixing combines into the other angle and shift corrections "
       "(0 = none)", ["reconstruct-angles"], low=0),
    # atomic models
    _p("trace.oversample", 3, int, "spline oversampling of the fit window", ["trace"], low=1),
    _p("trace.window", 7, int, "fit window, oversampled voxels per side", ["trace"], low=3),
    _p("trace.sigma", 3.0, float, "Gaussian weight of the fit (oversampled voxels)", ["trace"], low=0, open_low=True),
    _p("trace.order", 4, int, "polynomial order", ["trace"], low=0),
    _p("trace.bond_fraction", 0.75, float,
       "merge distance = this × the shortest bond of the species (2 × smallest covalent radius)",
       ["trace", "refine"], low=0, open_low=True, high=2.0),
    _p("trace.atom_width", 0.0, float,
       "standard deviation (Å) of an atom's profile in the volume, the width of the matched filter the volume is "
       "correlated with before finding maxima; null = measured from the volume; 0 = no filter (plain local maxima, "
       "the seed paper's; the default until a filter that keeps a dense particle's neighbours apart is shown to "
       "help at 20,000 atoms, see benchmarks/bench_large.py)",
       ["trace"], low=0, nullable=True),
    _p("trace.chunk", 64, int, "voxels per side of the sub-volumes traced in parallel", ["trace"], low=8),
    _p("classify.method", "kmeans", str, "kmeans: the paper's hard K-means classes; mixture: posterior probabilities "
       "of a mixture whose species means follow the ADF cross-sections", ["classify"], choices=("kmeans", "mixture")),
    _p("classify.seed", 0, int, "K-means seed (the mixture starts from the K-means classes)", ["classify"], low=0),
    _p("classify.passes", 1, int, "K-means passes over the atom classes (3 species: 2)", ["classify"], low=1),
    _p("classify.noise_classes", 2, int,
       "K-means classes given to non-atoms (their intensities are heavy-tailed); 1 = the paper", ["classify"], low=1),
    _p("classify.noise_model", "lognormal", str, "shape of the mixture's non-atom components (classify.noise_classes "
       "of them)", ["classify"], choices=("lognormal", "gaussian")),
    _p("classify.energy", 200000.0, float, "beam energy (eV) of the species' cross-sections, when the data do not "
       "record it", ["classify"], low=0, open_low=True),
    _p("classify.detector", [40.0, 190.0], list, "ADF detector inner and outer angle (mrad) of the species' "
       "cross-sections, when the data do not record them", ["classify"]),
    _p("classify.tied_means", False, bool, "mixture species means = one fitted scale × the species' relative ADF "
       "cross-sections (false: free means when the information criterion prefers them)", ["classify"]),
    _p("refine_atoms.iterations", 200, int,
       "most L-BFGS iterations of each free fit of the Gaussian atoms (it ends sooner once its gain per atom stalls)",
       ["refine"], low=1),
    _p("refine_atoms.max_displacement", 1.0, float, "Å, along each axis, from the traced position", ["refine"],
       low=0, open_low=True),
    _p("refine_atoms.select", True, bool,
       "likelihood-ratio test per atom on counts: drop unsupported atoms, add supported candidates", ["refine"]),
    _p("refine_atoms.angles", None, bool,
       "refine each projection's Euler angles against the atomic model too; null: when the reconstruction refined "
       "them (--refine-angles)", ["refine"], nullable=True),
    _p("refine_atoms.components", None, int,
       "concentric Gaussians per atom profile (2: a core on broad probe tails); null: 2 with angles, else 1",
       ["refine"], nullable=True, low=1, high=4),
    _p("refine_atoms.workers", None, int,
       "Dask workers the coordinate refinement's atom blocks run on; null: the active client's when the model has "
       "2000 atoms or more and the workers more threads than this process, 0: this process (the reference path), "
       "N: at most N workers of the active client",
       nullable=True, low=0, role="execution"),
    _p("refine_atoms.blocks", None, int,
       "spatial blocks of atoms on the workers (fixed by the model, so any number of workers up to it gives the "
       "same model); null: 8, or one per worker where there are more", nullable=True, low=1, role="execution"),
    # evaluation and analysis
    _p("evaluate.cutoff", 0.9, float,
       "Å, matching distance of every evaluation against a truth (evaluate, report, run, demo; the seed paper's for its "
       "208-atom Si)", ["evaluate", "demo"], low=0, open_low=True),
    _p("evaluate.tolerance", 1.0e-4, float, "translation convergence of the paper's metric (Å)", ["evaluate"],
       low=0, open_low=True),
    _p("evaluate.max_iterations", 100, int, "most translation updates of the paper's metric", ["evaluate"], low=1),
    _p("analyze.r_max", 12.0, float, "Å, largest distance of the RDFs", ["analyze"], low=0, open_low=True),
    _p("analyze.dr", 0.1, float, "Å, RDF shell width (Yuan et al.)", ["analyze"], low=0, open_low=True),
    _p("analyze.cutoff", None, float, "Å, first-shell cutoff; null = the first valley of the total RDF", ["analyze"],
       nullable=True, low=0, open_low=True),
    _p("analyze.area_fraction", 0.01, float, "Voronoi faces smaller than this fraction of the cell's surface are "
       "dropped", ["analyze"], low=0, high=1),
    _p("analyze.delta_max", 0.255, float, "largest distortion e_max/e_avg − 1 of a tetrahedron in a motif",
       ["analyze"], low=0),
    _p("analyze.deltas", [0.0, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.225, 0.255, 0.3, 0.35, 0.4], list,
       "distortion thresholds of the motif counts", ["analyze"], low=0),
    _p("analyze.order_threshold", 0.5, float, "fcc-normalised bond order at or above which an atom is crystal-like",
       ["analyze"], low=0, high=1),
    _p("analyze.nucleus_min", 13, int, "crystal-like atoms a crystal nucleus needs (a centre and its shell)",
       ["analyze"], low=1),
    _p("analyze.partial_icosahedron", 6, int, "PBs an atom must cap to centre a partial icosahedron (12 = full)",
       ["analyze"], low=1, high=12),
    _p("analyze.ring_max", 20, int, "atoms of the largest ring searched (10-membered Si–O rings)", ["analyze"],
       low=3),
    _p("analyze.density_spacing", 1.0, float, "Å, grid of the local mass density", ["analyze"], low=0, open_low=True),
    _p("analyze.density_sigma", 3.0, float, "Å, Gaussian smoothing of the local mass density", ["analyze"], low=0,
       open_low=True),
    _p("analyze.block", 60.0, float, "Å, core size of the spatial blocks analysed in parallel", ["analyze"], low=0,
       open_low=True),
    # the demo
    _p("demo.atoms", 200, int, "atoms of the demo particle", ["demo"], low=1),
    _p("demo.species", ["Si"], list, "elements of the demo particle", ["demo"], items=str),
    _p("demo.pixel_size", 0.25, float, "Å", ["demo"], low=0, open_low=True),
    _p("demo.shape", 112, int, "pixels per side (28 Å: the ~20 Å particle and its probe tails)", ["demo"], low=8),
    _p("demo.dose", 100000.0, float, "e⁻ per Å² per projection (within the seed paper's 8e3–1.6e5)", ["demo"], low=0,
       open_low=True),
    _p("demo.seed", 0, int, "random seed of the demo", ["demo"], low=0),
    # ptychography
    _p("ptycho.iterations", 10, int, "passes over all probe positions (abTEM r-PIE / MS-PIE)", ["ptycho"], low=1),
    _p("ptycho.multislice", False, bool, "multislice ptychography (MS-PIE) instead of a single slice", ["ptycho"]),
    _p("ptycho.slices", 5, int, "slices of a multislice reconstruction (the seed paper: 5)", ["ptycho"], low=1),
    _p("ptycho.probe_after", None, float,
       "fraction of the iterations run with the nominal probe before it is refined too; null = 0.5 single slice, "
       "1 (never refined) multislice", ["ptycho"], nullable=True, low=0, high=1),
    _p("ptycho.blur", 0.35, float, "partial-coherence Gaussian (σ, Å) applied to the phase images (the seed paper's "
       "0.35 Å)", ["ptycho"], low=0),
]

#: ``key → Parameter``, in the order above.
PARAMETERS: dict[str, Parameter] = {p.key: p for p in _ALL}


def read_by(stage: str) -> tuple[str, ...]:
    """The keys a stage declares it reads: every parameter that names it."""
    return tuple(p.key for p in _ALL if stage in p.stages)


def defaults() -> dict:
    """The defaults, nested as ``dask.config`` holds them: ``{"aetdask": {"simulate": {"energy": …}, …}}``."""
    out: dict = {}
    for p in _ALL:
        node = out
        *parents, leaf = p.key.split(".")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = list(p.default) if isinstance(p.default, list) else p.default
    return {"aetdask": out}


def defaults_yaml() -> str:
    """Every parameter with its default and help, as a YAML file a user can edit and pass to ``--config``."""
    import yaml

    lines = ["# aetdask parameters and their defaults (aetdask run --config FILE takes any part of this)", "aetdask:"]
    section = None
    for p in _ALL:
        *parents, leaf = p.key.split(".")
        if parents and parents[0] != section:
            section = parents[0]
            lines.append(f"  {section}:")
        indent = "    " if parents else "  "
        value = yaml.safe_dump(p.default, default_flow_style=True, allow_unicode=True).strip()
        value = value.removesuffix("\n...").removesuffix("...").strip()
        lines.append(f"{indent}{leaf}: {value}  # {p.help}")
    return "\n".join(lines) + "\n"
