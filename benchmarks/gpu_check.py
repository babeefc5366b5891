"""The prepared GPU check: every GPU path of aetdask in one command, within a fixed time.

    python benchmarks/gpu_check.py [--device gpu|cpu] [--small] [--seed-dir DIR] [--out DIR]
        [--budget SECONDS] [--parts env,tests,...]
    python benchmarks/gpu_check.py --wheels     # the dependencies a GPU machine lacks, NAME==VERSION

``benchmarks/gpu_check.sh`` runs it on a GPU machine after installing the carried wheels
(``benchmarks/gpu_prepare.sh`` downloads them); ``--device cpu --small`` runs every part here on the
CPU at small sizes, which tests the plumbing. The parts, each in its own process with its own
share of ``--budget`` (a part past its share is stopped, or if it ends there recorded as over time; the rest go on):

* ``env`` — GPU, driver, CuPy, the memory bandwidth (device properties, and a measured copy);
* ``tests`` — ``tests/test_backend.py``, ``tests/test_projector_cuda.py`` and every test that asks
  for CuPy (found in ``tests/``);
* ``resire_single``, ``resire_euler`` — RESIRE, 256³ × 60 projections × 200 iterations, through
  the single-axis sparse projector and the general (Euler) projector: time per iteration,
  voxel-projections per second, and the memory-bandwidth floor (12 bytes per voxel-projection).
  When 200 iterations would not fit in the part's share, fewer run and the time of 200 is
  extrapolated from them (both are recorded); ASTRA's ``SIRT3D_CUDA`` too, where it imports;
* ``refine`` — the coordinate refinement (``refine_atoms``) has no GPU path: it runs NumPy in the
  client. Its kernels (``render``, ``gradients``) take CuPy arrays: their time on the GPU and the CPU;
* ``multislice`` — one multislice tile (abTEM) on the GPU and the CPU, and their difference;
* ``run`` — ``aetdask run`` on the seed paper's 208-atom Si series (1.6e4 e⁻/Å²) with
  ``aetdask.device: gpu`` and with the CPU: times, accuracy, and whether the two give the same atoms
  within 0.5 pm.

Everything goes to ``OUT/gpu_check.json`` (rewritten after each part, so a run stopped early still
leaves what finished) and ``OUT/gpu_check.log``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEED_DIR = ROOT.parent / "shared" / "reference" / "seed-paper"
SEED_FILES = ("aSi_2nmFosCetr_Dose1p6e4_cov35pm_ForBM3D.mat", "Si_Angle.mat", "aSi_208atoms_GT.txt")
WARM_SHAPE = 8  # probes of the multislice warm-up tile (one row), also the GPU-CPU comparison
BYTES_PER_UPDATE = 12  # bytes moved per voxel-projection per RESIRE iteration (see bench_resire_gpu.py)

#: Shares of the budget (they sum to 1) and the sizes of each part: full (the GPU check) and small (the CPU dry run).
PARTS = {
    "env": 0.02,
    "tests": 0.12,
    "resire_single": 0.10,
    "resire_euler": 0.14,
    "refine": 0.05,
    "multislice": 0.09,
    "run": 0.48,
}
SIZES = {
    False: {"resire": (256, 60, 200), "refine": (60, 290, 5000), "multislice": (64, 1)},
    True: {"resire": (32, 12, 6), "refine": (4, 48, 60), "multislice": (8, 1)},
}

#: Python distributions on the lent GPU machines (their image's package list): not carried as wheels.
PREINSTALLED = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split()
#: Carried even though the machines have a version: the one the project is tested with here.
ALWAYS_CARRY = ("xarray",)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheels(extras=()) -> list[str]:
    """``NAME==VERSION`` of every distribution aetdask needs (its ``pyproject.toml`` and, below that, the
    metadata of what is installed here) that the GPU machines lack, for Python 3.12 on Linux x86-64."""
    import importlib.metadata as md
    import tomllib

    from packaging.requirements import Requirement

    env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        todo += [Requirement(r) for r in project["optional-dependencies"][extra]]
    versions = {}
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = _norm(req.name)
        if name in versions:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            raise SystemExit(f"{req.name} is not installed here: install aetdask's dependencies first") from None
        versions[name] = dist.version
        for extra in req.extras:  # e.g. dask[array]
            todo += [Requirement(r) for r in dist.requires or [] if f'extra == "{extra}"' in r]
        for r in dist.requires or []:
            r = Requirement(r)
            if r.marker is None or r.marker.evaluate(env):
                todo.append(r)
    skip = {_norm(n) for n in PREINSTALLED} - {_norm(n) for n in ALWAYS_CARRY}
    return [f"{n}=={v}" for n, v in sorted(versions.items()) if n not in skip]


# ------------------------------------------------------------------------------------------------ the parts
def _xp(device):
    from aetdask.backend import get_array_module

    return get_array_module(device)


def _sync(xp):
    import numpy as np

    return (lambda: None) if xp is np else (lambda: xp.cuda.Device().synchronize())


def _bandwidth(xp):
    """Peak memory bandwidth (bytes/s, double data rate) from the device's clock and bus width, and how
    it was read. CUDA 13 dropped ``memoryClockRate`` from the properties; the attribute still answers."""
    rt = xp.cuda.runtime
    dev = xp.cuda.Device().id
    props = rt.getDeviceProperties(dev)
    clock_khz, bus_bits, source = props.get("memoryClockRate"), props.get("memoryBusWidth"), "device properties"
    if not clock_khz or not bus_bits:
        try:
            clock_khz = rt.deviceGetAttribute(36, dev)  # cudaDevAttrMemoryClockRate (kHz)
            bus_bits = rt.deviceGetAttribute(37, dev)  # cudaDevAttrGlobalMemoryBusWidth (bits)
            source = "device attributes"
        except Exception:
            clock_khz = bus_bits = None
    if not clock_khz or not bus_bits:
        try:
            import pynvml

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(dev)
            clock_khz = 1e3 * pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM)
            bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(h)
            source = "NVML"
        except Exception:
            return None, "not readable"
    return 2.0 * clock_khz * 1e3 * bus_bits / 8, source


def _measured_bandwidth(xp, nbytes=1 << 30, repeats=10):
    """Bytes read plus written per second by a device-to-device copy."""
    a = xp.ones(nbytes // 4, dtype=xp.float32)
    b = xp.empty_like(a)
    b[...] = a
    xp.cuda.Device().synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        b[...] = a
    xp.cuda.Device().synchronize()
    return 2 * nbytes * repeats / (time.perf_counter() - t)


def part_env(rec, save, device, small, **_):
    import platform

    import dask
    import numpy as np

    import aetdask

    rec.update(python=platform.python_version(), aetdask=aetdask.__version__, numpy=np.__version__,
               dask=dask.__version__, host_cpus=os.cpu_count())
    import importlib.metadata as md

    for module, dist in (("dask_cuda", "dask-cuda"), ("abtem", "abtem"), ("astra", "astra-toolbox"), ("bm3d", "bm3d"),
                         ("numba", "numba"), ("zarr", "zarr"), ("xarray", "xarray")):
        try:
            __import__(module)
            rec[module] = md.version(dist)
        except Exception as exc:  # what is missing is a result, not a failure
            rec[module] = f"not importable: {type(exc).__name__}: {exc}"[:200]
    from aetdask.backend import cupy_available

    rec["cupy_available"] = cupy_available()
    if device != "gpu":
        return
    xp = _xp("gpu")
    rt = xp.cuda.runtime
    props = rt.getDeviceProperties(xp.cuda.Device().id)
    bw, source = _bandwidth(xp)
    rec.update(cupy=xp.__version__, gpu=props["name"].decode(), gpu_memory_gib=props["totalGlobalMem"] / 2**30,
               compute_capability=f"{props['major']}.{props['minor']}", multiprocessors=props["multiProcessorCount"],
               driver_version=rt.driverGetVersion(), runtime_version=rt.runtimeGetVersion(),
               bandwidth_gbs=bw and bw / 1e9, bandwidth_source=source)
    save()
    rec["copy_bandwidth_gbs"] = _measured_bandwidth(xp) / 1e9


def _gpu_tests():
    """Test node ids that ask for CuPy (skip unless ``cupy_available()``, or import cupy), besides the two files."""
    found = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        if path.name in ("test_backend.py", "test_projector_cuda.py", "test_gpu_check.py"):
            continue
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                text = ast.get_source_segment(path.read_text(), node) or ""
                head = "\n".join(ast.unparse(d) for d in node.decorator_list) + text[:600]
                if "cupy" in head and "if cupy_available()" not in head:  # not the tests of GPU-less errors
                    found.append(f"tests/{path.name}::{node.name}")
    return found


def part_tests(rec, save, deadline, **_):
    targets = ["tests/test_backend.py", "tests/test_projector_cuda.py", "aetdask/backend.py"] + _gpu_tests()
    rec["targets"] = targets
    save()
    timeout = max(10, int(deadline - time.time() - 5))
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", f"--timeout={timeout}", *targets]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout + 3)
    print(done.stdout[-6000:], done.stderr[-3000:], sep="\n")
    rec["returncode"] = done.returncode
    last = [line for line in done.stdout.splitlines() if re.search(r"\d+ (passed|failed|error|skipped)", line)]
    summary = last[-1] if last else ""
    rec["summary"] = summary.strip("= ")
    for word in ("passed", "failed", "skipped", "error", "errors"):
        m = re.search(rf"(\d+) {word}\b", summary)
        rec[word] = int(m.group(1)) if m else 0
    rec["skip_reasons"] = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")][:20]
    rec["ok"] = done.returncode == 0


def _resire(rec, save, device, small, deadline, euler):
    import numpy as np

    from aetdask.backend import asnumpy
    from aetdask.kernels.tomography.iterative import r_factor, resire
    from aetdask.reconstruct.projectors import EulerProjector, slice_projector
    from aetdask.simulate import amorphous_particle, linear

    xp = _xp(device)
    sync = _sync(xp)
    n, m, iterations = SIZES[small]["resire"]
    theta = np.arange(m) * (180.0 / m)
    angles = np.c_[np.zeros(m), theta, np.zeros(m)]
    if euler:  # measured-like φ and ψ: the general projector's work
        rng = np.random.default_rng(0)
        angles = np.c_[rng.normal(0, 0.3, m), theta, rng.normal(0, 0.3, m)]
    updates = n**3 * m
    rec.update(size=n, projections=m, iterations_asked=iterations, voxel_projections_per_iteration=updates)
    model = amorphous_particle(max(8, int(208 * (n / 128) ** 3)), seed=0)
    b_host = linear(model, angles=angles, pixel_size=0.195, shape=n).values.astype(np.float32)
    b = xp.asarray(b_host)
    if euler:
        proj = EulerProjector(angles, (n, n), (n, n, n), xp=xp)
        rec["projector"] = "general (CUDA kernels)" if device == "gpu" else "general (Numba)"
    else:
        proj = slice_projector((n, n), n, theta, xp=xp)
        rec["projector"] = "single-axis (sparse)"
    t = time.perf_counter()
    resire(b, proj, 1)  # build the operator, compile, warm up
    sync()
    rec["setup_s"] = time.perf_counter() - t
    save()
    t = time.perf_counter()
    resire(b, proj, 2)
    sync()
    probe = (time.perf_counter() - t) / 2
    rec["probe_s_per_iteration"] = probe
    save()
    room = deadline - time.time() - 5 - 4 * probe  # keep time for the R-factor and the write
    run = int(max(1, min(iterations, room / probe)))
    t = time.perf_counter()
    vol, _ = resire(b, proj, run)
    sync()
    seconds = time.perf_counter() - t
    per = seconds / run
    rec.update(iterations_run=run, seconds=seconds, s_per_iteration=per, seconds_for_asked=per * iterations,
               extrapolated=run < iterations, voxel_projections_per_s=updates / per,
               r_factor=r_factor(b_host, asnumpy(proj.forward(vol))))
    if device == "gpu":
        bw, source = _bandwidth(xp)
        if bw:
            floor = BYTES_PER_UPDATE * updates / bw
            rec.update(bandwidth_gbs=bw / 1e9, bandwidth_source=source, floor_s_per_iteration=floor,
                       share_of_floor_speed=floor / per)
    save()
    if device == "gpu" and not euler:
        _astra(rec, save, b_host, theta, n, iterations, deadline, per)


def _astra(rec, save, b_host, theta, n, iterations, deadline, per):
    """ASTRA's SIRT3D_CUDA on the same projections (where astra imports), as many iterations as fit."""
    try:
        import astra  # noqa: F401

        from bench_resire_gpu import astra_sirt3d
    except Exception as exc:
        rec["astra"] = f"not importable: {type(exc).__name__}: {exc}"[:200]
        return
    t = time.perf_counter()
    astra_sirt3d(b_host, theta, n, 2)
    probe = (time.perf_counter() - t) / 2
    run = int(max(1, min(iterations, (deadline - time.time() - 5) / probe)))
    seconds = astra_sirt3d(b_host, theta, n, run)
    rec["astra_sirt3d_cuda"] = {"iterations_run": run, "s_per_iteration": seconds / run,
                                "aetdask_over_astra_time": per / (seconds / run)}


def part_resire_single(rec, save, device, small, deadline, **_):
    _resire(rec, save, device, small, deadline, euler=False)


def part_resire_euler(rec, save, device, small, deadline, **_):
    _resire(rec, save, device, small, deadline, euler=True)


def _best_of(f, sync, deadline, repeats=3):
    f()  # compile and warm up
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        sync()
        best = min(best, time.perf_counter() - t)
        if time.time() + 2 * best > deadline:
            break
    return best


def part_refine(rec, save, device, small, deadline, **_):
    import numpy as np

    from aetdask.backend import asnumpy
    from aetdask.kernels.atoms import gaussian_atoms as ga

    rec["gpu_path"] = False
    rec["note"] = ("refine_atoms has no GPU path: it runs NumPy in the client process whatever aetdask.device says; "
                   "its render and gradient kernels take CuPy arrays, timed here on both devices")
    tilts, n, atoms = SIZES[small]["refine"]
    rng = np.random.default_rng(1)
    pos = rng.uniform(4, n - 4, (tilts, atoms, 2))
    h, s = rng.uniform(1, 2, atoms), rng.uniform(0.7, 1.5, atoms)
    res = rng.normal(size=(tilts, n, n))
    rec.update(tilts=tilts, pixels=n, atoms=atoms)
    out = {}
    for dev in dict.fromkeys(["gpu" if device == "gpu" else "cpu", "cpu"]):
        xp = _xp(dev)
        sync = _sync(xp)
        args = [xp.asarray(a) for a in (pos, h, s)]
        r = xp.asarray(res)
        timing = {"render_s": _best_of(lambda: ga.render(*args, (n, n)), sync, deadline),
                  "gradients_s": _best_of(lambda: ga.gradients(r, *args), sync, deadline)}
        out[dev] = (asnumpy(ga.render(*args, (n, n))), [asnumpy(g) for g in ga.gradients(r, *args)])
        rec[dev] = timing
        save()
    if "gpu" in out:
        img, grads = out["gpu"]
        rec["render_max_abs_diff"] = float(np.abs(img - out["cpu"][0]).max())
        rec["gradients_max_rel_diff"] = max(float(np.abs(g - w).max() / max(np.abs(w).max(), 1e-300))
                                            for g, w in zip(grads, out["cpu"][1]))
        rec["speedup"] = {k: rec["cpu"][k] / rec["gpu"][k] for k in rec["gpu"]}


def part_multislice(rec, save, device, small, deadline, **_):
    import numpy as np

    from aetdask.simulate import amorphous_particle
    from aetdask.simulate import multislice as ms

    try:
        import abtem
    except Exception as exc:
        rec["skipped"] = f"abTEM not importable: {type(exc).__name__}: {exc}"[:200]
        return
    rec["abtem"] = abtem.__version__
    shape, rows = SIZES[small]["multislice"]
    model = amorphous_particle(208, species=["Si"], seed=0)
    pos, sp = model.position.values, model.species.values.astype(str)
    preset = {k: v for k, v in ms.PRESETS["Si-208"].items() if k not in ("description", "angles", "doses")}
    kw = ms.tile_arguments(ms.resolve(pos, sp, {**preset, "shape": shape}))
    warm_kw = ms.tile_arguments(ms.resolve(pos, sp, {**preset, "shape": WARM_SHAPE}))
    rec.update(model="a-Si 208 atoms", shape=shape, rows=rows, probes=rows * shape, warmup_probes=WARM_SHAPE)
    devices = list(dict.fromkeys(["gpu" if device == "gpu" else "cpu", "cpu"]))
    warm = {}
    for dev in devices:  # imports, plans and compiles on a small tile (one row of WARM_SHAPE probes), then compared
        t = time.perf_counter()
        warm[dev] = ms.scan_tile(pos, sp, [0.0, 30.0, 0.0], rows=(0, 1), **{**warm_kw, "device": dev})
        rec[dev] = {"warmup_s": time.perf_counter() - t}
        save()
    if "gpu" in warm:
        rec["max_rel_diff"] = float(np.abs(warm["gpu"] - warm["cpu"]).max() / warm["cpu"].max())
        save()
    for dev in devices:  # the tile itself: the GPU's first, so that a slow CPU leaves it recorded
        t = time.perf_counter()
        ms.scan_tile(pos, sp, [0.0, 30.0, 0.0], rows=(0, rows), **{**kw, "device": dev})
        seconds = time.perf_counter() - t
        rec[dev].update(tile_s=seconds, s_per_probe=seconds / (rows * shape))
        save()
    if "gpu" in warm:
        rec["speedup"] = rec["cpu"]["tile_s"] / rec["gpu"]["tile_s"]


def _aetdask_run(seed, work, device, timeout):
    """One ``aetdask run`` on the seed series: (record, store path)."""
    cfg = work / f"{device}.yaml"
    cfg.write_text(f"device: {device}\n")
    store = work / f"{device}.zarr"
    cmd = [sys.executable, "-m", "aetdask.cli", "run", str(seed / SEED_FILES[0]), "--angles", str(seed / SEED_FILES[1]),
           "--pixel-size", "0.195", "--species", "Si", "--out", str(store), "--json", "--config", str(cfg)]
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        print((exc.stdout or b"")[-3000:], (exc.stderr or b"")[-3000:], sep="\n")
        return {"status": "timeout", "timeout_s": timeout}, None
    wall = time.perf_counter() - t
    print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
    if done.returncode:
        return {"status": "failed", "returncode": done.returncode, "stderr_tail": done.stderr[-1500:]}, None
    from aetdask.evaluate import evaluate
    from aetdask.io import RunStore

    stages = RunStore(store, create=False).read_json("run.json")["stages"]
    o = evaluate(store, seed / SEED_FILES[2], 0.9)["overall"]
    return {"status": "ok", "wall_s": wall, "stages_s": {k: v.get("seconds") for k, v in stages.items()},
            "identification_pct": o["identification_pct"], "precision_pm": o["precision_pm"],
            "matched": o["matched"], "truth": o["truth"]}, store


def compare_models(a, b, tolerance_pm=0.5):
    """Whether two atomic models are the same atoms: counts, species, and the largest distance between
    each atom and its nearest in the other model (pm).

    >>> import numpy as np
    >>> from aetdask.schema import atoms
    >>> m = atoms(np.eye(3), ["Si"] * 3)
    >>> r = compare_models(m, atoms(np.eye(3) + 1e-3, ["Si"] * 3))
    >>> r["same"], round(r["max_distance_pm"], 3)
    (True, 0.173)
    """
    import numpy as np
    from scipy.spatial import cKDTree

    pa, pb = a.position.values, b.position.values
    rec = {"atoms": [len(pa), len(pb)], "tolerance_pm": tolerance_pm}
    if len(pa) != len(pb) or not len(pa):
        return {**rec, "same": False, "max_distance_pm": None}
    d, j = cKDTree(pb).query(pa)
    one_to_one = len(set(j.tolist())) == len(pa)
    species = bool(np.all(a.species.values.astype(str) == b.species.values.astype(str)[j]))
    rec.update(max_distance_pm=100 * float(d.max()), rms_distance_pm=100 * float(np.sqrt(np.mean(d**2))),
               one_to_one=one_to_one, same_species=species)
    rec["same"] = bool(one_to_one and species and rec["max_distance_pm"] <= tolerance_pm)
    return rec


def part_run(rec, save, device, seed_dir, deadline, **_):
    seed = pathlib.Path(seed_dir)
    missing = [f for f in SEED_FILES if not (seed / f).exists()]
    if missing:
        rec["skipped"] = f"seed files missing in {seed}: {', '.join(missing)}"
        return
    work = pathlib.Path(tempfile.mkdtemp(prefix="aetdask-gpu-check-"))
    stores = {}
    order = ["gpu", "cpu"] if device == "gpu" else ["cpu"]
    for i, dev in enumerate(order):
        left = deadline - time.time() - 5
        share = left * (0.55 if i == 0 and len(order) > 1 else 1.0)  # the first leaves time for the second
        rec[dev], stores[dev] = _aetdask_run(seed, work, dev, max(5.0, share))
        save()
    if device != "gpu":  # the dry run compares the CPU run with itself: the comparison's plumbing
        stores["gpu"] = stores["cpu"]
    if stores.get("gpu") and stores.get("cpu"):
        from aetdask.io import RunStore

        models = [RunStore(stores[d], create=False).read("refined") for d in ("gpu", "cpu")]
        rec["gpu_vs_cpu"] = compare_models(*models)


# ------------------------------------------------------------------------------------------------ the plan
def _write(path, data):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def run_part(name, args):
    """Run one part in this process (``--part``): its record goes to ``args.record`` as it grows."""
    record = pathlib.Path(args.record)
    rec = {}

    def save():
        _write(record, rec)

    func = globals()[f"part_{name}"]
    try:
        func(rec, save, device=args.device, small=args.small, seed_dir=args.seed_dir, deadline=args.deadline)
    except Exception as exc:  # recorded in the summary; the traceback goes to the log
        rec.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:1000])
        save()
        raise
    rec.setdefault("status", "ok")
    save()


def plan(budget, parts=None):
    """Seconds for each part: its share of ``budget`` (the shares of the parts left out are spread over the rest).

    >>> plan(100, ["env", "tests"])
    {'env': 14.3, 'tests': 85.7}
    """
    names = [p for p in PARTS if parts is None or p in parts]
    total = sum(PARTS[p] for p in names)
    return {p: round(budget * PARTS[p] / total, 1) for p in names}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["gpu", "cpu"], default="gpu")
    ap.add_argument("--small", action="store_true", help="small sizes (a dry run of the plumbing on the CPU)")
    ap.add_argument("--seed-dir", default=str(SEED_DIR), help="folder holding " + ", ".join(SEED_FILES))
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-check-out"), help="where the JSON and the log go")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for all the parts together")
    ap.add_argument("--parts", default=None, help="comma-separated subset of: " + ", ".join(PARTS))
    ap.add_argument("--install-seconds", type=float, default=None, help="recorded: the wheel install's time")
    ap.add_argument("--wheels", action="store_true", help="print the carried wheels, NAME==VERSION, and stop")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--record", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.wheels:
        print("\n".join(wheels()))
        return 0
    if args.part:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        run_part(args.part, args)
        return 0
    parts = args.parts.split(",") if args.parts else None
    unknown = set(parts or ()) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; expected some of {list(PARTS)}")
    args.seed_dir = str(pathlib.Path(args.seed_dir).resolve())
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path, log_path = out / "gpu_check.json", out / "gpu_check.log"
    budgets = plan(args.budget, parts)
    summary = {"device": args.device, "small": args.small, "budget_s": args.budget, "plan_s": budgets,
               "install_s": args.install_seconds, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "parts": {}}
    _write(summary_path, summary)
    t_all = time.perf_counter()
    with open(log_path, "a") as log, tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name, seconds in budgets.items():
            record = pathlib.Path(tmp) / f"{name}.json"
            deadline = time.time() + seconds
            cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--part", name, "--record", str(record),
                   "--deadline", repr(deadline), "--device", args.device, "--seed-dir", args.seed_dir]
            cmd += ["--small"] if args.small else []
            log.write(f"\n===== {name} ({seconds:.0f} s) {time.strftime('%H:%M:%S')}\n")
            log.flush()
            t = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                grace = min(10.0, max(2.0, 0.1 * seconds))  # the part keeps to its deadline; this is its exit
                status = "ok" if proc.wait(timeout=seconds + grace) == 0 else f"failed (exit {proc.returncode})"
                if status == "ok" and time.time() > deadline:  # ended in the grace: it overran its share all the same
                    status = "timeout"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the part and whatever it started (a cluster, pytest)
                proc.wait()
                status = "timeout"
            rec = json.loads(record.read_text()) if record.exists() else {}
            if status != "ok" or rec.get("status") is None:
                rec["status"] = status
            rec["wall_s"] = round(time.perf_counter() - t, 2)
            summary["parts"][name] = rec
            summary["elapsed_s"] = round(time.perf_counter() - t_all, 1)
            _write(summary_path, summary)
            print(f"{name}: {rec['status']} in {rec['wall_s']:.1f} s", flush=True)
    summary["ok"] = all(r["status"] == "ok" for r in summary["parts"].values()) and all(
        r.get("ok", True) for r in summary["parts"].values())
    _write(summary_path, summary)
    print(json.dumps(summary, indent=1, default=str))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
