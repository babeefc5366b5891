"""The ``aetdask`` command line: thin wrappers over the Python API."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import pathlib
import shutil
import sys
import uuid

import click
import numpy as np

from aetdask import config
from aetdask._version import __version__
from aetdask.errors import AetdaskError, InputError, StoreError


#: The longest error line: a message may quote a value or a path, which a user's input can make arbitrarily long.
_MAX_ERROR = 2000

# what a file-system error means the user should change, by errno
_OS_EXPECTED = {
    errno.ENAMETOOLONG: "expected file and folder names of at most 255 bytes (and paths of at most 4096)",
    errno.ENOSPC: "expected free space there: free some, or choose another place",
    errno.EDQUOT: "expected free space there: free some, or choose another place",
    errno.EACCES: "expected a place this user can read and write",
    errno.EPERM: "expected a place this user can read and write",
    errno.EROFS: "expected a place on a file system that can be written",
    errno.ENOENT: "expected an existing file or folder",
    errno.ENOTDIR: "expected a folder, not a file, on the way there",
    errno.EISDIR: "expected a file, not a folder",
    errno.EEXIST: "expected a name not already taken",
    errno.ELOOP: "expected a path without a loop of symbolic links",
}


def _one_line(message: str, limit: int = _MAX_ERROR) -> str:
    """``message`` as one line of at most ``limit`` characters (its middle left out)."""
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    if len(text) <= limit:
        return text
    keep = (limit - 40) // 2
    return f"{text[:keep]} … ({len(text) - 2 * keep} characters left out) … {text[-keep:]}"


def _fail(message: str):
    click.echo(f"error: {_one_line(message)}", err=True)
    sys.exit(2)


def _handle_errors(func):
    """Every failure a user can cause exits 2 with one ``error:`` line, never a traceback: an
    :class:`~aetdask.errors.AetdaskError` (also one raised inside a Dask task: the client re-raises it, and
    worker processes started here do not log it, see :func:`aetdask.cluster.quiet_task_failures`), and an
    ``OSError`` of a named file (a name too long, no space, no permission: the user's file system, not a bug).
    Anything else is a bug, and its traceback is shown."""

    from distributed.scheduler import KilledWorker

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except AetdaskError as exc:
            _fail(str(exc))
        except KilledWorker as exc:  # a task that ended every worker that ran it: memory, almost always
            _fail(_killed_message(exc))
        except MemoryError:
            _fail("this process ran out of memory; expected a machine with more memory, or a smaller problem "
                  "(`aetdask parameters` lists the sizes of the pieces of work)")
        except OSError as exc:
            if exc.filename is None:
                raise
            name = os.fsdecode(exc.filename)
            also = f" → {_shown(os.fsdecode(exc.filename2))}" if exc.filename2 is not None else ""
            _fail(f"{_shown(name)}{also}: {exc.strerror or exc}; "
                  f"{_OS_EXPECTED.get(exc.errno, 'expected a file or folder that can be used')}")

    return wrapper


def _killed_message(exc) -> str:
    """What a :class:`distributed.KilledWorker` means for the user, in one line."""
    key = exc.args[0] if exc.args else "?"
    name = key[0] if isinstance(key, tuple) and key else key
    name = str(name).rsplit("-", 1)[0] if "-" in str(name) else str(name)  # the task's kind, without its hash
    tries = exc.args[2] + 1 if len(exc.args) > 2 and isinstance(exc.args[2], int) else "several"
    worker = getattr(exc.args[1], "address", None) if len(exc.args) > 1 else None
    return (f"a task ({name}) ended each of the {tries} Dask workers that ran it{' (last ' + worker + ')' if worker else ''}: "
            "most likely it needs more memory than a worker has; expected workers with more memory (`aetdask cluster "
            "--memory-limit`, or fewer workers per node) or smaller pieces of work (`aetdask parameters` lists their "
            "sizes)")


POSITIVE = click.FloatRange(min=0, min_open=True)


class _Angle(click.ParamType):
    """An angle in degrees: a finite number in [−360, 360]."""

    name = "degrees"

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of degrees", param, ctx)
        if not math.isfinite(v) or abs(v) > 360:
            self.fail(f"{value!r}: expected a finite angle in degrees within ±360", param, ctx)
        return v


ANGLE = _Angle()


class _AxisAngle(_Angle):
    """An angle in degrees, or ``auto``."""

    name = "degrees|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return super().convert(value, param, ctx)


#: Seeds of NumPy's generators: 0 to 2³² − 1.
SEED = click.IntRange(min=0, max=2**32 - 1)


def _species(text: str | None, option: str = "--species", required: bool = True) -> list[str]:
    """The element symbols of a comma-separated ``--species`` value (spaces and empty items dropped); none at all
    is refused when ``required``. Unknown symbols are refused where they are used (:func:`aetdask.schema.normalize_species`)."""
    names = [s.strip() for s in (text or "").split(",") if s.strip()]
    if required and not names:
        raise InputError(f"{option}: no element in {text!r}; expected comma-separated element symbols, e.g. {option} Si "
                         f"or {option} Co,Pd,Pt")
    return names


def _computing(func):
    """Options shared by commands that compute: cluster address and parameter file."""

    @click.option("--scheduler", default=None, help="Address of a running Dask scheduler (default: a local cluster).")
    @click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                  help="YAML file of aetdask parameters.")
    @functools.wraps(func)
    def wrapper(*args, scheduler=None, config_file=None, **kwargs):
        from aetdask.cluster import cluster

        overrides = config.load(config_file) if config_file else {}
        with config.set(overrides), contextlib.ExitStack() as stack:
            address = _check_execution(scheduler, config_file if "aetdask.device" in overrides else None)
            try:
                stack.enter_context(cluster(scheduler, quiet=kwargs.get("as_json", False)))
            except ValueError as exc:  # Dask's word for an address it parsed but cannot use
                if not address:
                    raise
                raise InputError(f"{'--scheduler' if scheduler else 'aetdask.scheduler'} {address}: cannot connect "
                                 f"({exc}); expected the address of a running Dask scheduler, e.g. the one "
                                 "`aetdask cluster` prints") from None
            return func(*args, **kwargs)

    return wrapper


def _check_execution(scheduler, device_source) -> str | None:
    """Refuse, before a cluster starts, what the workers would fail on: a scheduler address Dask cannot parse,
    and ``aetdask.device: gpu`` on a machine without a GPU when the workers are started here (``device_source``:
    the file that set it, named in the message). Returns the scheduler address (None: a local cluster)."""
    from aetdask.errors import ConfigError

    address = config.get("scheduler", scheduler)
    if address:
        from distributed.comm import parse_address, parse_host_port
        from distributed.comm.registry import get_backend

        try:
            scheme, location = parse_address(address)
            get_backend(scheme)
            if scheme in ("tcp", "tls"):
                parse_host_port(location)  # a port is needed: Dask would fail on connecting
        except (ValueError, TypeError) as exc:
            what = "--scheduler" if scheduler else "aetdask.scheduler"
            raise InputError(f"{what} {address}: not a scheduler address ({exc}); expected PROTOCOL://HOST:PORT, "
                             "e.g. tcp://127.0.0.1:8786 as `aetdask cluster` prints it") from None
        return address  # the workers are elsewhere: their device is theirs to check (a task says it in one line)
    from aetdask.backend import check_device

    try:
        check_device()
    except ConfigError as exc:
        raise type(exc)(f"{device_source}: {exc}" if device_source else str(exc)) from None
    return None


class _Main(click.Group):
    """The command group, its usage errors (an unknown command or option, a missing argument, a value of the
    wrong type) said as every other failure is: one ``error:`` line naming the command and what was expected,
    exit status 2 — not click's three lines of usage."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        import warnings

        from aetdask.plausibility import PlausibilityWarning

        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            # what aetdask finds implausible is said as every other message to the user: one line, no source path
            if issubclass(category, PlausibilityWarning):
                click.echo(f"warning: {_one_line(str(message))}", err=True)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            path = exc.ctx.command_path if exc.ctx is not None else (prog_name or "aetdask")
            _fail(f"{path}: {exc.format_message().rstrip('.')} (`{path} --help` lists what it takes)")
        except click.ClickException as exc:
            _fail(exc.format_message())
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        finally:
            warnings.showwarning = shown
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)  # --help and --version return their status here


@click.group(cls=_Main)
@click.version_option(__version__, prog_name="aetdask")
def main():
    """aetdask: atomic electron tomography on Dask.

    Start with `aetdask demo`; `aetdask COMMAND --help` explains each command.
    """


@main.command()
def parameters():
    """Print every parameter with its default and meaning, as a YAML file for `--config`."""
    from aetdask.parameters import defaults_yaml

    click.echo(defaults_yaml(), nl=False)


# ---------------------------------------------------------------------------------------------- what aetdask replaces
# aetdask replaces only what it can prove it wrote: a run store's products through the store (its lock, its
# atomic commit), the demo's own run store (its marker), analysis files its ledger lists unchanged. Anything
# else already there is refused unless --overwrite is given, and nothing is written inside a run store except
# through the store (or into its analysis/ folder, under its lock).

def _exists(path: pathlib.Path) -> bool:
    return path.exists() or path.is_symlink()


def _is_run_store(path: pathlib.Path) -> bool:
    """Whether ``path`` is an aetdask run store (root Zarr attrs ``aetdask.store_version``), read without Zarr;
    a Zarr group whose metadata cannot be read counts as one (it is never written into)."""
    try:
        if (path / ".zgroup").is_file():
            attrs = json.loads((path / ".zattrs").read_text()) if (path / ".zattrs").is_file() else {}
        elif (path / "zarr.json").is_file():
            attrs = json.loads((path / "zarr.json").read_text()).get("attributes") or {}
        else:
            return False
    except (OSError, ValueError, AttributeError):
        return True
    return isinstance(attrs, dict) and isinstance(attrs.get("aetdask"), dict) and "store_version" in attrs["aetdask"]


def _shown(path) -> str:
    """A path as the user would type it here: relative to the working directory when under it."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def _run_store_around(path) -> pathlib.Path | None:
    """The run store that is ``path`` or holds it (symlinks and ``..`` resolved), or None."""
    real = pathlib.Path(path).resolve()
    return next((p for p in (real, *real.parents) if _is_run_store(p)), None)


def _outside_run_stores(path, option: str) -> None:
    """Refuse a new file or folder ``path`` inside a run store: a store changes only through the store."""
    where = pathlib.Path(path)
    store = _run_store_around(where.parent.resolve() / where.name)
    if store is not None:
        raise InputError(f"{option} {path}: inside the run store {_shown(store)}, which aetdask changes only through its "
                         "products; expected a path outside any run store")


@contextlib.contextmanager
def _new_input(out, writes: tuple, overwrite: bool, command: str):
    """The run store ``out`` opened for new input data (products ``writes``, in the order they are written), its
    lock held until the block ends.

    New input makes everything an existing store holds stale (a model of other data would be scored against the
    new truth): a store that holds products or results is refused unless ``overwrite``; with it, everything but
    the first product written (replaced atomically by its commit) is removed first, so that nothing stale remains
    even if a later write fails.
    """
    from aetdask.io import RunStore

    _outside_run_stores_parent(out)
    store = RunStore(out)
    with store.lock(command):
        store.clear_for_new_input(keep=writes[:1], overwrite=overwrite)
        yield store


def _outside_run_stores_parent(out) -> None:
    """Refuse a run store ``out`` inside another run store (a product's folder, a store in a store)."""
    where = pathlib.Path(out).resolve()
    store = next((p for p in where.parents if _is_run_store(p)), None)
    if store is not None:
        raise InputError(f"--out {out}: inside the run store {_shown(store)}; expected a run store of its own, outside any "
                         "other")


def _tilt_axis_option(func):
    """``--tilt-axis DEG``: the in-plane direction of the tilt axis in the images (``preprocess.tilt_axis``), set
    for the command's work (inside ``--config``'s settings, so the option wins over the file)."""

    @click.option("--tilt-axis", "tilt_axis", type=_AxisAngle(), default=None,
                  help="In-plane direction of the tilt axis in the images, degrees from x towards +y "
                       "(preprocess.tilt_axis); carried in each projection's Euler angles, the images are not resampled. "
                       "'auto': the direction the images' common lines give (preprocess.find_tilt_axis).")
    @functools.wraps(func)
    def wrapper(*args, tilt_axis=None, **kwargs):
        from aetdask import config

        settings = ({} if tilt_axis is None else {"preprocess.find_tilt_axis": True} if tilt_axis == "auto"
                    else {"preprocess.tilt_axis": tilt_axis})
        with config.set(settings):
            return func(*args, **kwargs)
    return wrapper


def _geometry_options(func):
    """``--angles`` and ``--pixel-size`` of a tilt-series file, both optional where its metadata hold them."""
    func = click.option("--pixel-size", default=None, type=POSITIVE,
                        help="Pixel size in Å; needed unless TILTS's metadata hold it (.dm3/.dm4, .emd, .mrc, .tif), "
                             "and wins over them.")(func)
    return click.option("--angles", default=None, type=click.Path(exists=True, dir_okay=False),
                        help="Angle file: one θ per projection or (φ, θ, ψ) rows, degrees (.mat, .npy, text, IMOD "
                             ".tlt/.rawtlt); needed unless TILTS's metadata hold the angles, and wins over them.")(func)


@main.command("import")
@click.argument("tilts", type=click.Path(exists=True, dir_okay=False))
@_geometry_options
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run store to write.")
@click.option("--var", default=None, help="Variable name inside a .mat holding several arrays (or an EMD image's title).")
@click.option("--units", type=click.Choice(["counts", "a.u."]), default="counts", show_default=True)
@click.option("--dose", type=POSITIVE, default=None, help="Dose per projection (e⁻/Å²), if known.")
@click.option("--overwrite", is_flag=True,
              help="OUT already holds products: replace them all (everything made from the old data is removed).")
@_handle_errors
def import_(tilts, angles, pixel_size, out, var, units, dose, overwrite):
    """Read a tilt series and write it as the `raw` product of a run store.

    TILTS is a .mat, .npy, or a microscope file (.dm3/.dm4, .emd, .mrc/.mrcs/.st/.ali,
    .tif) whose pixel size and tilt angles are taken from its metadata when it holds
    them. A store that already holds products is refused (new raw data would be mixed
    with results of the old) unless --overwrite, which removes them all.
    """
    from aetdask.io import read_tilt_series

    ts = read_tilt_series(tilts, angles=angles, pixel_size=pixel_size, var=var, units=units, dose=dose)
    with _new_input(out, ("raw",), overwrite, "aetdask import") as store:
        store.write("raw", ts)
    click.echo(f"wrote {store.path}/raw: {ts.sizes['tilt']} projections of {ts.sizes['y']}×{ts.sizes['x']} "
               f"px, pixel {ts.attrs['pixel_size']} Å, θ {ts.theta.values.min():g}…{ts.theta.values.max():g}°")


@main.command()
@click.option("--campaign", "campaign_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Campaign YAML (particles × defocus × tilts × phonons × doses, multislice); --out is its store.")
@click.option("--mode", type=click.Choice(["adf", "4dstem"]), default="adf", show_default=True,
              help="adf: ADF-STEM projections; 4dstem: a diffraction pattern per probe position (multislice, "
                   "for ptychographic AET), settings from --preset.")
@click.option("--model", type=click.Choice(["linear"]), default="linear", show_default=True,
              help="Imaging model of a single ADF simulation (campaigns use multislice).")
@click.option("--atoms", "atoms_file", type=click.Path(exists=True), default=None,
              help="Atom file; default: a random amorphous particle (--n-atoms, --species; Si,O: a silica network).")
@click.option("--n-atoms", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--species", default="Si", show_default=True, help="Comma-separated species of the random particle.")
@click.option("--angles", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Angle file; default θ = 0:3:177 (adf) or the preset's tilts (4dstem).")
@click.option("--pixel-size", type=POSITIVE, default=0.3, show_default=True, help="Å (adf)")
@click.option("--shape", type=click.IntRange(min=1), default=64, show_default=True, help="Pixels per side (adf).")
@click.option("--preset", default="SiO2", show_default=True,
              help="4dstem: settings of the seed paper's Extended Data Table 1 (SiO2: 80 kV, 30 mrad, 18 nm "
                   "defocus, 0–60 mrad detector, 0.5 Å step, 49 tilts).")
@click.option("--step", type=POSITIVE, default=None, help="4dstem: scan step in Å (default: the preset's).")
@click.option("--phonons", type=click.IntRange(min=0), default=None,
              help="4dstem: frozen-phonon configurations (default: the preset's; 0 = static).")
@click.option("--dose", type=POSITIVE, default=None, help="e⁻/Å² per projection; none = noise-free.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the particle and the noise.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run store to write.")
@click.option("--overwrite", is_flag=True,
              help="OUT already holds products: replace them all (everything made from the old data is removed).")
@_handle_errors
@_computing
def simulate(campaign_file, mode, model, atoms_file, n_atoms, species, angles, pixel_size, shape, preset, step,
             phonons, dose, seed, out, overwrite):
    """Simulate a tilt series (writes `raw` and `truth` to a run store), or run a campaign.

    With --campaign, every projection of every particle and defocus mode is simulated by
    multislice (abTEM) on the Dask cluster and written as soon as it is done; re-running
    the same command resumes where it stopped. Each dose becomes a run store under OUT.
    With --mode 4dstem, a 4D-STEM tilt series is simulated by multislice, one task per
    tilt, and written as `patterns` (then `aetdask ptycho` or `aetdask run --modality ptycho`).
    A run store that already holds products is refused (the new data would be mixed with
    results of the old) unless --overwrite, which removes them all.
    """
    if campaign_file:
        from aetdask.simulate.campaign import run_campaign

        if overwrite:
            raise InputError("--overwrite: not for --campaign, which resumes the campaign in --out (a campaign that "
                             "changed is refused there); expected a new --out for a new campaign")
        if _run_store_around(out) is not None:
            raise InputError(f"--out {out}: inside the run store {_shown(_run_store_around(out))}; expected a campaign folder "
                             "outside any run store")
        summary = run_campaign(campaign_file, out, echo=click.echo)
        click.echo(f"campaign done: {summary['simulated_now']} projections simulated now, "
                   f"{summary['dose_stores_written']} dose stores written, {summary['seconds']:.1f} s → {out}")
        return
    from aetdask.io import read_angles, read_atoms
    from aetdask.io.store import check_writable
    from aetdask.simulate import amorphous_particle, linear, silica_particle

    names = _species(species, required=not atoms_file)
    if atoms_file:
        truth = read_atoms(atoms_file)
    elif sorted(names) == ["O", "Si"]:
        truth = silica_particle(max(1, round(n_atoms / 3)), seed=seed)
    else:
        truth = amorphous_particle(n_atoms, species=names, seed=seed)
    check_writable(out)
    if mode == "4dstem":
        from aetdask.ptycho.simulate import PRESETS, fourdstem

        if preset not in PRESETS:
            raise InputError(f"--preset: unknown 4D-STEM preset {preset!r}; presets: {', '.join(sorted(PRESETS))}")
        euler = read_angles(angles) if angles else None
        patterns = fourdstem(truth, euler, preset=preset, dose=dose, seed=seed, step=step, phonons=phonons)  # lazy
        with _new_input(out, ("truth", "patterns"), overwrite, "aetdask simulate") as store:
            store.write("truth", truth)
            store.write("patterns", patterns, progress=True)
        nt, sy, sx, k, _ = patterns.shape
        click.echo(f"wrote {store.path}: patterns ({nt} tilts × {sy}×{sx} positions × {k}×{k} px, "
                   f"{patterns.attrs['angular_sampling']:.3f} mrad/px), truth ({truth.sizes['atom']} atoms)")
        return
    euler = read_angles(angles) if angles else np.arange(0.0, 180.0, 3.0)
    from aetdask.plausibility import check_angles

    check_angles(euler, shape, source=angles or "--angles")  # radians or one direction: refused before simulating
    ts = linear(truth, angles=euler, pixel_size=pixel_size, shape=shape, dose=dose, seed=seed)  # lazy
    with _new_input(out, ("truth", "raw"), overwrite, "aetdask simulate") as store:
        store.write("truth", truth)
        store.write("raw", ts, progress=True)
    click.echo(f"wrote {store.path}: raw ({ts.sizes['tilt']}×{shape}×{shape}), truth ({truth.sizes['atom']} atoms)")


@main.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--multislice", is_flag=True, help="Multislice ptychography (default: a single slice).")
@click.option("--slices", type=click.IntRange(min=1), default=None, help="Slices of --multislice (default: config, 5).")
@click.option("--thickness", type=POSITIVE, default=None,
              help="Depth in Å the slices span (default: the sample's width, measured per tilt).")
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="Passes over the positions (default: config).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_handle_errors
@_computing
def ptycho(store, multislice, slices, thickness, iterations, as_json):
    """Ptychographic phase image of every tilt of STORE's `patterns`, one task per tilt; writes `raw`."""
    import time

    from aetdask.io import RunStore
    from aetdask.ptycho.stage import ptycho as _ptycho
    from aetdask.schema import last_record

    rs = RunStore(store, create=False, writable=True)
    if "patterns" not in rs:
        raise StoreError(f"{rs.path}: no 4D-STEM patterns in this store (it has {rs.products()}); "
                         "simulate them with `aetdask simulate --mode 4dstem`")
    t0 = time.perf_counter()
    phases = _ptycho(rs.read("patterns"), multislice=multislice or None, slices=slices, thickness=thickness,
                     iterations=iterations)
    rs.write("raw", phases, progress=not as_json)
    p = last_record(phases, "ptycho")
    seconds = time.perf_counter() - t0
    if as_json:
        click.echo(json.dumps({"multislice": p["multislice"], "slices": p["slices"], "iterations": p["iterations"],
                               "tilts": int(phases.sizes["tilt"]), "pixel_size": phases.attrs["pixel_size"],
                               "seconds": seconds}))
        return
    click.echo(f"wrote {rs.path}/raw: {phases.sizes['tilt']} phase projections of {phases.sizes['y']}×"
               f"{phases.sizes['x']} px at {phases.attrs['pixel_size']:.4f} Å "
               f"({'multislice' if p['multislice'] else 'single slice'}, {seconds:.1f} s)")


@main.command()
@click.argument("traced", type=click.Path(exists=True))
@click.option("--truth", required=True, type=click.Path(exists=True), help="Ground-truth atom file (or run store).")
@click.option("--cutoff", type=POSITIVE, default=None, help="Matching distance in Å (default: evaluate.cutoff, 0.9).")
@click.option("--no-center", is_flag=True, help="Do not start from coinciding centroids.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_handle_errors
def evaluate(traced, truth, cutoff, no_center, as_json):
    """Score TRACED (a run store or an atom file) against the ground truth."""
    from aetdask.evaluate import evaluate as _evaluate
    from aetdask.evaluate import to_json
    from aetdask.io import RunStore

    store = RunStore(traced, create=False, writable=True) if pathlib.Path(traced).is_dir() else None
    from aetdask.evaluate import scanned_region

    region = scanned_region(traced) if pathlib.Path(traced).is_dir() else None  # a film: score its band
    cutoff = cutoff if cutoff is not None else config.get("evaluate.cutoff")
    result = _evaluate(traced, truth, cutoff, center=not no_center, region=region)
    by_species = result["species"]
    have = {k: ", ".join(s for s, r in by_species.items() if r[k]) for k in ("traced", "truth")}
    if have["traced"] and have["truth"] and not any(r["traced"] and r["truth"] for r in by_species.values()):
        raise InputError(f"{traced}: species {have['traced']}, but the truth {truth} holds {have['truth']}; expected "
                         "models of the same sample (atoms are matched to atoms of their own species)")
    if store is not None:
        store.write_json("metrics.json", to_json(result))
    if as_json:
        click.echo(json.dumps(to_json(result)))
        return
    click.echo(f"{'species':8} {'truth':>7} {'traced':>7} {'matched':>8} {'ident. %':>9} {'precision pm':>13}")
    for name, r in [*result["species"].items(), ("overall", result["overall"])]:
        click.echo(f"{name:8} {r['truth']:7d} {r['traced']:7d} {r['matched']:8d} "
                   f"{r['identification_pct']:9.1f} {r['precision_pm']:13.1f}")
    s = result["strict"]
    click.echo(f"strict one-to-one: TP {s['true_positives']}, FP {s['false_positives']}, "
               f"FN {s['false_negatives']}, precision {s['precision_pm']:.1f} pm")


@main.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_handle_errors
def info(store, as_json):
    """Describe the products of a run store."""
    from aetdask.io import RunStore
    from aetdask.stages import is_current, result_model

    rs = RunStore(store, create=False)
    out = {}
    for name in rs.products():
        obj = rs.read(name)
        prov = obj.attrs.get("provenance", [])
        entry = {"stages": [p.get("stage") for p in prov], "current": is_current(rs, name)}
        if hasattr(obj, "dims") and "tilt" in obj.dims:
            entry.update(shape=list(obj.shape), pixel_size=obj.attrs.get("pixel_size"),
                         units=obj.attrs.get("units"), dose=obj.attrs.get("dose"),
                         theta=[float(obj.theta.min()), float(obj.theta.max())])
        elif "atom" in getattr(obj, "dims", {}):
            sp, counts = np.unique(obj.species.values.astype(str), return_counts=True)
            entry.update(atoms=int(obj.sizes["atom"]), species=dict(zip(sp.tolist(), counts.tolist())))
        else:
            entry.update(shape=list(obj.shape), voxel_size=obj.attrs.get("voxel_size"))
        out[name] = entry
    metrics = rs.read_json("metrics.json")
    result = result_model(rs)
    if as_json:
        click.echo(json.dumps({"store": str(rs.path), "products": out, "result": result, "metrics": metrics}))
        return
    click.echo(f"{rs.path}")
    for name, e in out.items():
        stale = "" if e["current"] else " (stale: made from an earlier product before it in the chain; rerun it)"
        click.echo(f"  {name:13} {_described(e)}{stale}\n  {'':13} made by: {' → '.join(e['stages'])}")
    if result:
        click.echo(f"  result: {result}")
    if metrics:
        o = metrics.get("overall", {})
        pct, pm = o.get("identification_pct"), o.get("precision_pm")
        click.echo(f"  metrics.json  {'–' if pct is None else f'{pct:.1f} %'} identified, precision "
                   f"{'–' if pm is None else f'{pm:.1f} pm'} (matching distance {metrics.get('cutoff', '?')} Å)")


def _described(e: dict) -> str:
    """A product's entry of ``aetdask info`` in words, with units and rounded figures."""
    if "atoms" in e:
        return f"{e['atoms']} atoms: " + ", ".join(f"{n} {s}" for s, n in e["species"].items())
    def num(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) else str(v)

    if "theta" in e:
        dose = f", {num(e['dose'], '.3g')} e⁻/Å² per projection" if e.get("dose") else ""
        frames = "×".join(str(n) for n in e["shape"][1:])
        return (f"{e['shape'][0]} projections of {frames} px at {num(e.get('pixel_size'), '.4g')} Å, units "
                f"{e.get('units')}{dose}, θ {num(e['theta'][0], '.1f')}° to {num(e['theta'][1], '.1f')}°")
    voxel = f" of {num(e['voxel_size'], '.4g')} Å" if e.get("voxel_size") else ""
    return f"{' × '.join(str(n) for n in e['shape'])} voxels{voxel}"


@main.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--denoiser", type=click.Choice(["bm3d", "nlm", "none"]), default=None,
              help="Denoiser after the variance-stabilising transform (default: config, none; bm3d has a "
                   "non-commercial licence, nlm is free).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--overwrite", is_flag=True,
              help="Replace STORE-preprocessing.png even if aetdask did not write it for this store.")
@_handle_errors
@_computing
@_tilt_axis_option
def preprocess(store, denoiser, as_json, overwrite):
    """Preprocess the `raw` tilt series of a run store into `preprocessed` (+ a PNG panel)."""
    import time

    from aetdask.io import RunStore
    from aetdask.pipeline import run_stage
    from aetdask.report import PREPROCESSING_FIGURE, preprocessing_figure

    rs = RunStore(store, create=False, writable=True)
    rs.check_beside([PREPROCESSING_FIGURE], overwrite, "aetdask preprocess")  # before the work
    t0 = time.perf_counter()
    with config.set({"preprocess.denoiser": denoiser} if denoiser else {}):
        run_stage(store, "preprocess", progress=not as_json, echo=(lambda *a: None) if as_json else click.echo)
    seconds = time.perf_counter() - t0
    pre = rs.read("preprocessed")
    n = pre.sizes["tilt"]
    method = pre.attrs["provenance"][-1]["params"]["denoiser"]
    png = preprocessing_figure(rs, overwrite)
    out = {"denoiser": method, "projections": n, "seconds": seconds,
           "noise_alpha_median": float(np.nanmedian(pre.noise_alpha)),
           "noise_sigma_median": float(np.nanmedian(pre.noise_sigma)),
           "shift_rms_px": float(np.sqrt(np.mean(pre.shift_y.values**2 + pre.shift_x.values**2))),
           "figure": str(png)}
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(f"wrote {rs.path}/preprocessed: {n} projections, {method}, α ≈ {out['noise_alpha_median']:.3g}, "
                   f"σ ≈ {out['noise_sigma_median']:.3g}, shifts {out['shift_rms_px']:.2f} px RMS, "
                   f"{seconds:.1f} s; {png}")


@main.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--method", type=click.Choice(["resire", "sirt", "fbp"]), default=None,
              help="Reconstruction method (default: config, resire).")
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="Iterations (default: config, 100).")
@click.option("--step", type=POSITIVE, default=None, help="RESIRE step / SIRT relaxation (default: config).")
@click.option("--refine-angles", is_flag=True,
              help="Refine angles, shifts and scales against the reconstruction (recorded on the tilt series).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_handle_errors
@_computing
def reconstruct(store, method, iterations, step, refine_angles, as_json):
    """Reconstruct the volume of a run store (from `preprocessed`, else `raw`)."""
    import time

    from aetdask.io import RunStore
    from aetdask.reconstruct import reconstruct as _reconstruct
    from aetdask.reconstruct.stage import reconstruction_record

    rs = RunStore(store, create=False, writable=True)
    source = "preprocessed" if "preprocessed" in rs else "raw"
    if source not in rs:
        raise StoreError(f"{rs.path}: no tilt series to reconstruct (run `aetdask import` first)")
    t0 = time.perf_counter()
    overrides = {k: v for k, v in {"reconstruct.method": method, "reconstruct.iterations": iterations,
                                   "reconstruct.step": step}.items() if v is not None}
    with config.set(overrides):
        if source == "preprocessed":  # the pipeline's stage, with its record
            from aetdask.pipeline import run_stage

            result = run_stage(rs, "reconstruct-angles" if refine_angles else "reconstruct", progress=not as_json,
                               echo=(lambda *a: None) if as_json else click.echo)
            volume = rs.read("volume")
            p = {"method": result.values["method"], "iterations_run": result.values["iterations"],
                 "r_final": result.values["r_final"]}
        else:  # raw projections, not preprocessed: not a step of the chain, so no record
            if refine_angles:
                raise InputError("--refine-angles: needs the preprocessed series (noise model, alignment); run "
                                 "`aetdask preprocess` first")
            with rs.lock("aetdask reconstruct"):
                volume = _reconstruct(rs.read(source).compute(), progress=not as_json)
                rs.write("volume", volume.chunk({"z": 64, "y": 64, "x": 64}))
            p = reconstruction_record(volume)
    seconds = time.perf_counter() - t0
    out = {"method": p["method"], "iterations": p["iterations_run"], "r_factor": p["r_final"], "seconds": seconds}
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(f"wrote {rs.path}/volume {volume.shape}: {out['method']}, {out['iterations']} iterations, "
                   f"R = {out['r_factor']:.4f}, {seconds:.1f} s")


@main.command()
@click.argument("tilts", type=click.Path(exists=True))
@_geometry_options
@click.option("--species", required=True, help="Comma-separated elements in the sample, e.g. Si or Co,Pd,Pt.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Run store (resumed if it exists); default TILTS when that is a run store.")
@click.option("--refine-angles", is_flag=True, help="Refine angles, shifts and scales while reconstructing.")
@click.option("--scanning", is_flag=True,
              help="Scanning AET: a film wider than the field of view, reconstructed in overlapping local "
                   "sub-volumes and stitched (suggested when the data look like a film).")
@click.option("--modality", type=click.Choice(["adf", "ptycho"]), default="adf", show_default=True,
              help="ptycho: ptychographic AET from the store's 4D-STEM `patterns` (a phase image per tilt first).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@click.option("--overwrite", is_flag=True,
              help="The store holds a raw tilt series of other data: replace everything it holds (truth included); "
                   "also replace report files next to it that aetdask did not write.")
@_handle_errors
@_computing
@_tilt_axis_option
def run(tilts, angles, pixel_size, species, out, refine_angles, scanning, modality, as_json, overwrite):
    """Raw counts to atomic model: import → preprocess → reconstruct → trace → classify → refine.

    TILTS is a file of raw counts (then --out is needed, and --angles and --pixel-size
    unless a microscope file's metadata hold them) or a run store that holds `raw` (e.g.
    one dose of a simulation campaign), whose own angles and pixel size are used. Every
    product goes into the run store as it finishes; the same command again resumes after
    the last finished stage. A report (PNG + HTML) is written next to the store.
    """
    from aetdask.io import RunStore
    from aetdask.pipeline import check_species
    from aetdask.pipeline import run as _run

    if modality == "ptycho":
        if not pathlib.Path(tilts).is_dir():
            raise InputError("run --modality ptycho: TILTS must be a run store holding 4D-STEM `patterns`")
        source = RunStore(tilts, create=False)
        if "patterns" not in source:
            raise StoreError(f"{source.path}: no 4D-STEM patterns in this store (it has {source.products()})")
        check_species(_species(species, required=False), source)
        out = out or tilts
        tilts = source.read("patterns")
    elif pathlib.Path(tilts).is_dir():
        source = RunStore(tilts, create=False)
        if "raw" not in source:
            raise StoreError(f"{source.path}: no raw tilt series in this store (it has {source.products()})")
        check_species(_species(species, required=False), source)
        out = out or tilts
        tilts = source.read("raw").compute()
    elif out is None:
        raise InputError(f"run {tilts}: a tilt-series file needs --out (the run store to write); expected e.g. "
                         "--out run.zarr")
    elif pathlib.Path(tilts).suffix.lower() in (".mat", ".npy") and (angles is None or pixel_size is None):
        raise InputError(f"run {tilts}: a .mat or .npy tilt series needs --angles and --pixel-size (it holds neither)")

    summary = _run(tilts, out, _species(species, required=False), angles=angles,
                   pixel_size=pixel_size, refine_angles=refine_angles, scanning=scanning, modality=modality,
                   progress=not as_json, overwrite=overwrite,
                   echo=(lambda *a: None) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps(summary))


def _stage(store, name, species=(), describe=None, as_json: bool = False):
    """Run one stage of the chain on a run store (its record as ``aetdask run`` writes it) and say what it wrote:
    a line, or with ``as_json`` one JSON object (product, note, the stage's figures, seconds)."""
    import time

    from aetdask.pipeline import run_stage
    from aetdask.stages import BY_NAME

    t0 = time.perf_counter()
    result = run_stage(store, name, species, progress=not as_json, echo=(lambda *a: None) if as_json else click.echo)
    product = BY_NAME[name].product
    if as_json:
        click.echo(json.dumps({"store": str(store), "product": product, "note": result.note, "values": result.values,
                               "seconds": time.perf_counter() - t0}, default=str))
    else:
        click.echo(f"wrote {pathlib.Path(store)}/{product}: {describe(result) if describe else result.note}")
    return result


@main.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--species", required=True, help="Comma-separated elements in the sample.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_handle_errors
@_computing
def trace(store, species, as_json):
    """Trace atom candidates in the volume of a run store (`candidates`)."""
    _stage(store, "trace", _species(species, required=False),
           lambda r: f"{r.values['candidates']} candidates", as_json)


@main.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--species", default=None,
              help="Comma-separated elements in the sample (default: those the candidates were traced for).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_handle_errors
@_computing
def classify(store, species, as_json):
    """Classify the candidates of a run store by K-means (`atoms`)."""
    from aetdask.io import RunStore

    if species is None:
        rs = RunStore(store, create=False)
        if "candidates" not in rs:
            raise StoreError(f"{rs.path}: product 'candidates' is missing (it has {rs.products()}); run `aetdask trace`")
        species = ",".join(rs.read("candidates").attrs.get("species") or [])
    _stage(store, "classify", _species(species, required=False),
           lambda r: ", ".join(f"{n} {s}" for s, n in r.values["counts"].items()), as_json)


@main.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_handle_errors
@_computing
def refine(store, as_json):
    """Refine the atoms of a run store against its raw counts (`refined`)."""
    _stage(store, "refine", as_json=as_json)


@main.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--truth", type=click.Path(exists=True), default=None, help="Ground-truth atom file (or run store).")
@click.option("--cutoff", type=POSITIVE, default=None,
              help="Matching distance in Å (default: evaluate.cutoff, 0.9), when scored: with --truth, or the store's own.")
@click.option("--overwrite", is_flag=True,
              help="Replace STORE-report.png / .html even if aetdask did not write them for this store.")
@_handle_errors
def report(store, truth, cutoff, overwrite):
    """Write the report (PNG + HTML) of a run store, scored against --truth or, without it, the store's own truth
    when it holds one (a simulation's)."""
    from aetdask.io import RunStore
    from aetdask.io.store import check_writable
    from aetdask.report import write_report

    rs = RunStore(store, create=False, writable=True)  # the report's digests (beside.json), with --truth metrics.json
    check_writable(rs.path.parent)
    png, page = write_report(rs, truth=truth, cutoff=cutoff, overwrite=overwrite)
    click.echo(f"wrote {png} and {page}")


@main.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@_handle_errors
def view(store):
    """Open the run's volume and atomic model in napari (pip install 'aetdask[view]'), on axes in Å."""
    from aetdask.view import view as open_viewer

    open_viewer(store)


@main.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--atoms", "atoms_file", default=None, type=click.Path(dir_okay=False),
              help="Output atom file (.xyz extended XYZ, or .csv).")
@click.option("--volume", "volume_file", default=None, type=click.Path(),
              help="Output volume: NAME.ome.zarr (OME-Zarr, NGFF 0.5, multiscale; napari) or NAME.mrc (MRC2014, float32; "
                   "ChimeraX, IMOD), voxel size in Å.")
@click.option("--product", type=click.Choice(["refined", "atoms", "candidates", "truth"]), default=None,
              help="Which model (default: the store's result, its most refined current model; else its truth).")
@click.option("--overwrite", is_flag=True, help="Replace the atom file or volume if it exists.")
@_handle_errors
def export(store, atoms_file, volume_file, product, overwrite):
    """Write the atomic model (--atoms) and/or the volume (--volume) of a run store to files (never over an existing
    file without --overwrite, never inside a run store)."""
    from aetdask.io import RunStore
    from aetdask.stages import result_model

    if atoms_file is None and volume_file is None:
        raise InputError("export: nothing to write; expected --atoms FILE and/or --volume FILE")
    rs = RunStore(store, create=False)
    targets = []
    if atoms_file is not None:
        name = product or result_model(rs) or ("truth" if "truth" in rs else None)
        if name is None or name not in rs:
            raise StoreError(f"{rs.path}: no atomic model {'(' + product + ') ' if product else ''}in this store "
                             f"(it has {rs.products()})")
        targets.append(("--atoms", atoms_file, name))
    if volume_file is not None:
        from aetdask.io.volumes import volume_format

        volume_format(volume_file)  # a name it knows, before anything is read
        if "volume" not in rs:
            raise StoreError(f"{rs.path}: no volume in this store (it has {rs.products()}); expected a store "
                             "after `aetdask reconstruct` or `aetdask run`")
        targets.append(("--volume", volume_file, "volume"))
    for option, file, _ in targets:
        _outside_run_stores(file, option)
        target = pathlib.Path(file)
        if _exists(target) and not overwrite:
            raise InputError(f"{option} {file}: already exists; expected a new file (pass --overwrite to replace "
                             "it, or choose another name)")
        if option == "--volume" and target.is_dir() and not (target / "zarr.json").is_file():
            raise InputError(f"{option} {file}: an existing folder that is not a Zarr store; expected a new name (with "
                             "--overwrite aetdask replaces a file or an OME-Zarr store, never another folder)")
    for option, file, name in targets:
        if option == "--atoms":
            model = rs.read(name)
            path = _write_new_file(pathlib.Path(file), overwrite, lambda tmp: _write_atoms_as(model, tmp))
            click.echo(f"wrote {path}: {model.sizes['atom']} atoms from {rs.path}/{name}")
        else:
            from aetdask.io.volumes import write_volume

            vol = rs.read("volume")
            path = _write_new_file(pathlib.Path(file), overwrite, lambda tmp: write_volume(vol, tmp))
            click.echo(f"wrote {path}: volume {'×'.join(str(n) for n in vol.shape)} voxels of "
                       f"{vol.attrs['voxel_size']:g} Å from {rs.path}/volume")


def _write_atoms_as(model, path):
    from aetdask.io import write_atoms

    write_atoms(model, path)


def _write_new_file(target: pathlib.Path, overwrite: bool, write) -> pathlib.Path:
    """Write a file ``target`` by ``write(path)`` into a private folder next to it (the same name, so the same
    format), then move it into place in one step: without ``overwrite`` only if nothing has appeared there
    meanwhile (a hard link fails on an existing name), with it over whatever is there (a symlink itself, not the
    file it points to). A failed write leaves the old file as it was."""
    from aetdask.io.store import check_writable

    parent = target.parent
    check_writable(parent)
    parent.mkdir(parents=True, exist_ok=True)
    private = parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    private.mkdir()
    try:
        tmp = private / target.name
        try:
            write(tmp)
        except AetdaskError as exc:  # name the file asked for, not the private one
            raise type(exc)(str(exc).replace(str(tmp), str(target))) from None
        if tmp.is_dir():  # a folder (OME-Zarr) cannot be hard-linked: renamed, an old one moved aside first
            if _exists(target):
                if not overwrite:
                    raise InputError(f"{target}: appeared while it was written; expected a new file (pass "
                                     "--overwrite to replace it, or choose another name)")
                os.rename(target, private / "replaced")
            os.rename(tmp, target)
        elif overwrite:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise InputError(f"{target}: appeared while it was written; expected a new file (pass --overwrite "
                                 "to replace it, or choose another name)") from None
            except OSError:  # a file system without hard links: the check just made has to do
                if _exists(target):
                    raise InputError(f"{target}: already exists; expected a new file (pass --overwrite to replace "
                                     "it, or choose another name)") from None
                os.replace(tmp, target)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return target


@main.command()
@click.argument("model", type=click.Path(exists=True))
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Directory for structure.png/.json/.zarr (default: STORE/analysis or MODEL.analysis).")
@click.option("--product", default=None,
              help="Atomic model of a run store to analyse (default: the store's result, its most refined current "
                   "model; else its truth).")
@click.option("--species", default=None, help="Comma-separated elements of type codes 1, 2, ... in the file.")
@click.option("--cutoff", type=POSITIVE, default=None,
              help="First-shell cutoff in Å (default: the RDF's first valley).")
@click.option("--r-max", type=POSITIVE, default=None, help="Largest RDF distance in Å.")
@click.option("--ring-max", type=click.IntRange(min=3), default=None, help="Atoms of the largest ring searched.")
@click.option("--block", type=POSITIVE, default=None, help="Core size (Å) of the blocks analysed in parallel.")
@click.option("--overwrite", is_flag=True,
              help="Replace structure.* files in --out that an earlier `aetdask analyze` did not write (or that "
                   "changed since); its own are replaced anyway.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@_handle_errors
@_computing
def analyze(model, out, product, species, cutoff, r_max, ring_max, block, overwrite, as_json):
    """Structure analysis of MODEL (an atom file or a run store): RDF, bond order, Voronoi,
    polytetrahedral motifs, PB networks, density and rings.

    Writes structure.png, structure.json and structure.zarr; files of those names that it
    did not write itself (its ledger, .aetdask-analysis.json, lists what it wrote) are
    refused unless --overwrite."""
    from aetdask.analyze import analyze as _analyze
    from aetdask.analyze.outputs import check_outputs, write_outputs
    from aetdask.evaluate import load_model
    from aetdask.io import RunStore, read_atoms
    from aetdask.io.store import check_writable

    path = pathlib.Path(model)
    if path.is_dir():
        rs = RunStore(path, create=False)
        if product is not None:
            atoms = rs.read(product)
        else:
            atoms = load_model(path)  # the store's result, else its truth
        target = pathlib.Path(out) if out else path / "analysis"
    else:
        atoms = read_atoms(path, species=_species(species, required=False) or None)
        target = pathlib.Path(out) if out else path.with_name(path.name + ".analysis")
    home = _run_store_around(target)  # a run store's analysis/ folder is written under the store's lock
    if home is not None and target.resolve() != home / "analysis":
        raise InputError(f"--out {target}: inside the run store {_shown(home)}, which aetdask changes only through "
                         f"its products (and its analysis/ folder); expected {_shown(home / 'analysis')} or a folder "
                         "outside it")
    check_writable(target)
    lock = RunStore(home, create=False, writable=True).lock("aetdask analyze") if home else contextlib.nullcontext()
    with lock:
        check_outputs(target, overwrite)  # before the work
        result = _analyze(atoms, progress=not as_json, cutoff=cutoff, r_max=r_max, ring_max=ring_max, block=block)
        summary = result.attrs["summary"]
        write_outputs(target, result, overwrite)
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(_structure_text(summary))
    click.echo(f"wrote {target}/structure.png, structure.json, structure.zarr")


def _structure_text(s: dict) -> str:
    """A short readable summary of a structure analysis."""
    lines = [f"{s['n_atoms']} atoms " + ", ".join(f"{k} {v}" for k, v in s["species"].items())
             + f"; number density {s['number_density']:.4f} Å⁻³; analysed in {s['seconds']:.1f} s"]
    for name, e in s["rdf"].items():
        if e["first_peak"] is not None:
            lines.append(f"  RDF {name:8} first peak {e['first_peak']:.2f} Å, first valley {e['first_valley']:.2f} Å")
    lines.append(f"  first-shell cutoff {s['cutoff']:.2f} Å; coordination "
                 + ", ".join(f"{a} {row['all']:.2f}" for a, row in s["coordination"].items()))
    b = s["bond_order"]
    cryst = "n/a (not close-packed)" if b["crystalline_fraction"] is None else f"{100 * b['crystalline_fraction']:.1f}%"
    lines.append(f"  bond order: mean Q4 {b['mean_q4']:.3f}, Q6 {b['mean_q6']:.3f}; crystal-like {cryst}")
    v = s["voronoi"]
    if v["top_indices"]:
        lines.append(f"  Voronoi ({v['interior_atoms']} interior atoms): "
                     + ", ".join(f"{t['index']} {100 * t['fraction']:.1f}%" for t in v["top_indices"][:4]))
    m = s["motifs"]
    lines.append(f"  motifs: {m['tetrahedra']} tetrahedra, {m['pentagonal_bipyramids']} pentagonal bipyramids in "
                 f"{m['pb_networks']} networks (largest {m['largest_network']}), icosahedra {m['full_icosahedra']} full / "
                 f"{m['partial_icosahedra']} partial")
    r = s["rings"]
    hist = r.get("former_histogram") or r["histogram"]
    unit = f" ({r['network_former']} per ring)" if r.get("former_histogram") else " (atoms per ring)"
    lines.append(f"  rings{unit}: " + ", ".join(f"{k}: {v}" for k, v in hist.items()))
    if s["density"]["mean_interior"] is not None:
        lines.append(f"  mass density (interior Voronoi cells) {s['density']['mean_interior']:.2f} g/cm³")
    return "\n".join(lines)


@main.command()
@click.option("--out", default="aetdask-demo", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the run store and figures.")
@click.option("--overwrite", is_flag=True,
              help="Replace OUT/run.zarr (and its report) even if an earlier demo did not make it.")
@_handle_errors
@_computing
def demo(out, overwrite):
    """Run the end-to-end demo on a small simulated particle.

    Its run store OUT/run.zarr is started afresh if an earlier `aetdask demo` made it;
    anything else there (a run store of yours, a file) is refused unless --overwrite.
    """
    from aetdask.demo import run_demo

    home = _run_store_around(out)
    if home is not None:
        raise InputError(f"--out {out}: inside the run store {_shown(home)}; expected a folder outside any run store")
    run_demo(out, overwrite=overwrite, echo=click.echo)


@main.command("cluster")
@click.option("--workers", "n_workers", type=click.IntRange(min=1), default=None,
              help="Worker processes on this node (default: one per core; with --gpu one per GPU).")
@click.option("--threads-per-worker", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--memory-limit", default="auto", show_default=True,
              help="Memory per worker: auto (this node's memory shared out), e.g. 8GiB, or 0 for no limit.")
@click.option("--host", default=None,
              help="Interface the scheduler (with --join: the workers) listens on [default: 127.0.0.1, this machine "
                   "only; with --join to a scheduler elsewhere, Dask's default: every interface, with a warning]. "
                   "0.0.0.0 lets workers on other nodes join, and anyone who reaches it run code: see the README on "
                   "TLS.")
@click.option("--port", type=click.IntRange(0, 65535), default=8786, show_default=True, help="Scheduler port.")
@click.option("--dashboard-address", default=None,
              help="HOST:PORT of the Dask dashboard and the aetdask page [default: 127.0.0.1:8787; a bare :PORT is "
                   "on 127.0.0.1 too; name an interface, e.g. 0.0.0.0:8787, to show it to other machines].")
@click.option("--join", "join_address", default=None, metavar="ADDRESS",
              help="Start only workers on this node, for the scheduler at ADDRESS (tcp://HOST:PORT).")
@click.option("--gpu", is_flag=True, help="One worker per GPU (dask-cuda).")
@_handle_errors
def cluster_(n_workers, threads_per_worker, memory_limit, host, port, dashboard_address, join_address, gpu):
    """Keep a Dask cluster up until Ctrl-C, for `--scheduler` of the computing commands.

    Starts a scheduler and workers on this node, or with --join only workers for a
    scheduler elsewhere. The scheduler serves the Dask dashboard and the aetdask page
    (R-factor and central slice of a running reconstruction, campaign progress).
    Everything listens on 127.0.0.1 unless --host or --dashboard-address names another
    interface; a warning line says what that exposes.
    """
    from aetdask.cluster import join, serve

    common = dict(n_workers=n_workers, threads_per_worker=threads_per_worker, memory_limit=memory_limit, gpu=gpu,
                  echo=click.echo, warn=lambda line: click.echo(line, err=True))
    if join_address:
        join(join_address, host=host, **common)
    else:
        serve(host=host or "127.0.0.1", port=port, dashboard_address=dashboard_address, **common)


if __name__ == "__main__":  # pragma: no cover
    main()
