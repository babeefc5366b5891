"""The Kubernetes deployment (deploy/k8s) checked offline.

Core objects (Job, PersistentVolumeClaim, ConfigMap, and the pods and Service the operator
builds from a DaskCluster) are validated against the official Kubernetes JSON schemas bundled
by kubernetes-validate; DaskCluster and DaskWorkerGroup against the operator's CRD schemas
(deploy/k8s/schemas). Both validations are strict, as ``kubectl apply`` is: an unknown
(misspelled) field is an error. Then the properties the deployment relies on: a private
scheduler, the dashboard routes, one thread per worker, the shared run store, GPU workers,
and job commands that our CLI parses.
"""

import copy
import functools
import importlib.util
import json
import pathlib
import re
import tomllib

import click
import dask
import distributed
import pytest
import yaml
from distributed.cli import dask_scheduler, dask_worker

jsonschema = pytest.importorskip("jsonschema")
kv = pytest.importorskip("kubernetes_validate.utils")

from dask.utils import parse_bytes  # noqa: E402
from referencing import Registry, Resource  # noqa: E402

from aetdask.cli import main as aetdask_main  # noqa: E402
from aetdask.cluster import worker_environment  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
CRD_KINDS = ("DaskCluster", "DaskWorkerGroup")
MIN_KUBERNETES = "1.29"  # the oldest Kubernetes the manifests are checked against (README)
KUBERNETES = [v for v in (MIN_KUBERNETES, kv.major_minor(kv.latest_version()))
              if any(kv.major_minor(a) == v for a in kv.all_versions())]
DEFINITIONS = "https://kubernetes.io/api/_definitions.json"


def documents():
    """(file name, object) of every object in deploy/k8s/*.yaml."""
    return [(path.name, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(kind, name=None):
    (doc,) = [d for _, d in documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


def pod_specs(doc):
    """The pod specs an object makes, by role."""
    if doc["kind"] == "DaskCluster":
        return {"scheduler": doc["spec"]["scheduler"]["spec"], "worker": doc["spec"]["worker"]["spec"]}
    if doc["kind"] == "DaskWorkerGroup":
        return {"worker": doc["spec"]["worker"]["spec"]}
    if doc["kind"] == "Job":
        return {"job": doc["spec"]["template"]["spec"]}
    return {}


def all_pods():
    return [(f"{name}:{role}", spec) for name, doc in documents() for role, spec in pod_specs(doc).items()]


def option(args, name):
    """The value following ``name`` in an argument list."""
    return args[args.index(name) + 1]


def env(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


# ------------------------------------------------------------------------------ validators
def core_objects(doc):
    """The core Kubernetes objects a manifest object is or makes (pods and the scheduler Service)."""
    if doc["kind"] not in CRD_KINDS:
        return [doc]
    objects = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{doc['metadata']['name']}-{role}"},
                "spec": spec} for role, spec in pod_specs(doc).items()]
    if doc["kind"] == "DaskCluster":
        objects.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "aetdask-scheduler"},
                        "spec": doc["spec"]["scheduler"]["service"]})
    return objects


def validate_core(obj, version=None):
    kv.validate(obj, version or KUBERNETES[-1], strict=True)


def strict(schema):
    """An OpenAPI v3 CRD schema with unknown fields forbidden (kubectl's strict field validation)."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = strict(schema["additionalProperties"])
    if "items" in schema:
        schema["items"] = strict(schema["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [strict(s) for s in schema[key]]
    return schema


@functools.cache
def crd_validator(kind):
    (crd,) = [c for c in map(json.loads, map(pathlib.Path.read_text, (K8S / "schemas").glob("*.json")))
              if c["kind"] == kind]
    schema = strict(crd["openAPIV3Schema"])
    schema["properties"] |= {
        "apiVersion": {"const": f"{crd['group']}/{crd['version']}"},
        "kind": {"const": kind},
        "metadata": {"$ref": f"{DEFINITIONS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
    }
    schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "metadata", "spec"})
    latest = kv.latest_version()
    definitions = kv.schema_contents(f"kubernetes-json-schema/v{latest}-local-strict/_definitions.json", latest)
    registry = Registry().with_resource(DEFINITIONS, Resource.from_contents(definitions))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(doc):
    """Validate one manifest object against its schema: the CRD's, then Kubernetes' for what it makes."""
    if doc["kind"] in CRD_KINDS:
        crd_validator(doc["kind"]).validate(doc)
    for obj in core_objects(doc):
        validate_core(obj)


# ------------------------------------------------------------------------------ schemas
def test_manifests_are_found():
    kinds = sorted(d["kind"] for _, d in documents())
    assert kinds == ["ConfigMap", "DaskCluster", "DaskWorkerGroup", "Job", "Job", "PersistentVolumeClaim"]


@pytest.mark.parametrize("version", KUBERNETES)
def test_core_objects_match_the_kubernetes_schemas(version):
    for name, doc in documents():
        for obj in core_objects(doc):
            try:
                validate_core(obj, version)
            except jsonschema.ValidationError as exc:
                pytest.fail(f"{name}: {obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): "
                            f"{'.'.join(map(str, exc.absolute_path))}: {exc.message}")


def test_dask_resources_match_the_operator_crds():
    for name, doc in documents():
        if doc["kind"] in CRD_KINDS:
            errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                      for e in crd_validator(doc["kind"]).iter_errors(doc)]
            assert not errors, f"{name}: {errors}"


def _set(path, value):
    def mutate(doc):
        *parents, last = path
        node = functools.reduce(lambda n, k: n[k], parents, doc)
        node[last] = value
    return mutate


def _rename(path, new):
    def mutate(doc):
        *parents, last = path
        node = functools.reduce(lambda n, k: n[k], parents, doc)
        node[new] = node.pop(last)
    return mutate


SCHEDULER = ("spec", "scheduler", "spec", "containers", 0)
GPU = ("spec", "worker", "spec", "containers", 0)
JOB = ("spec", "template", "spec")


BROKEN = {
    "misspelled-service": ("DaskCluster", None, _rename(("spec", "scheduler", "service"), "servcie")),
    "misspelled-container-field": ("DaskCluster", None, _rename((*SCHEDULER, "imagePullPolicy"), "imagePullPolicyy")),
    "replicas-as-string": ("DaskCluster", None, _set(("spec", "worker", "replicas"), "4")),
    "probe-port-as-number": ("DaskCluster", None, _set((*SCHEDULER, "readinessProbe", "httpGet", "port"), 8787)),
    "container-port-as-string": ("DaskCluster", None, _set((*SCHEDULER, "ports", 0, "containerPort"), "8786")),
    "gpu-quantity-as-number": ("DaskWorkerGroup", None, _set((*GPU, "resources", "limits", "nvidia.com/gpu"), 1)),
    "worker-group-without-cluster": ("DaskWorkerGroup", None, lambda d: d["spec"].pop("cluster")),
    "misspelled-tolerations": ("DaskWorkerGroup", None, _rename((*GPU[:-2], "tolerations"), "toleration")),
    "misspelled-backoff-limit": ("Job", "aetdask-run", _rename(("spec", "backoffLimit"), "backofLimit")),
    "backoff-limit-as-string": ("Job", "aetdask-run", _set(("spec", "backoffLimit"), "4")),
    "read-only-as-string": ("Job", "aetdask-campaign", _set((*JOB, "containers", 0, "volumeMounts", 0, "readOnly"), "no")),
    "access-modes-not-a-list": ("PersistentVolumeClaim", None, _set(("spec", "accessModes"), "ReadWriteMany")),
    "configmap-value-not-a-string": ("ConfigMap", None, _set(("data", "campaign.yaml"), {"seed": 0})),
}


@pytest.mark.parametrize("kind, name, mutate", BROKEN.values(), ids=BROKEN.keys())
def test_validation_rejects_broken_manifests(kind, name, mutate):
    doc = copy.deepcopy(one(kind, name))
    validate(doc)  # the manifest itself passes …
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):  # … and the broken copy does not
        validate(doc)


# ------------------------------------------------------------------------------ scheduler
def test_scheduler_and_dashboard_stay_private():
    assert one("DaskCluster")["spec"]["scheduler"]["service"]["type"] == "ClusterIP"
    assert not [d for _, d in documents() if d["kind"] in ("Service", "Ingress")]
    for where, spec in all_pods():
        assert not spec.get("hostNetwork"), where
        assert not any("hostPort" in p for c in spec["containers"] for p in c.get("ports", [])), where


def scheduler_routes():
    """The scheduler's HTTP route modules, read from its environment as dask.config reads them."""
    (scheduler,) = one("DaskCluster")["spec"]["scheduler"]["spec"]["containers"]
    name = "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"
    return dask.config.collect_env({name: env(scheduler)[name]})["distributed"]["scheduler"]["http"]["routes"]


def test_scheduler_serves_distributed_routes_and_the_aetdask_page():
    (scheduler,) = one("DaskCluster")["spec"]["scheduler"]["spec"]["containers"]
    assert scheduler["command"] == ["dask", "scheduler"]
    routes = scheduler_routes()
    shipped = yaml.safe_load((pathlib.Path(distributed.__file__).parent / "distributed.yaml").read_text())
    assert routes == shipped["distributed"]["scheduler"]["http"]["routes"] + ["aetdask.dashboard"]
    assert {scheduler[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")} == {"/health"}
    ports = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
    assert ports == {"tcp-comm": 8786, "http-dashboard": 8787}
    assert option(scheduler["args"], "--port") == "8786" and option(scheduler["args"], "--dashboard-address") == ":8787"
    ctx = dask_scheduler.main.make_context("dask scheduler", list(scheduler["args"]))
    assert not ctx.params["preload_argv"]


def test_aetdask_dashboard_routes_load():
    if importlib.util.find_spec("aetdask.dashboard") is None:
        pytest.skip("aetdask.dashboard is not there yet")
    from distributed.http.utils import get_handlers

    urls = [url for url, *_ in get_handlers(server=None, modules=scheduler_routes())]
    assert "/health" in urls and any(url.startswith("/aetdask") for url in urls)


# ------------------------------------------------------------------------------ workers
def worker_groups():
    return [one("DaskCluster")["spec"]["worker"], one("DaskWorkerGroup")["spec"]["worker"]]


def test_workers_run_one_thread_under_their_memory_limit():
    for group in worker_groups():
        (worker,) = group["spec"]["containers"]
        args, limits = worker["args"], worker["resources"]["limits"]
        assert option(args, "--nthreads") == "1"
        assert option(args, "--name") == "$(DASK_WORKER_NAME)"  # set by the operator
        memory = parse_bytes(option(args, "--memory-limit"))
        assert 0.75 * parse_bytes(limits["memory"]) <= memory < parse_bytes(limits["memory"])
        assert env(worker)["NUMBA_NUM_THREADS"] == limits["cpu"]
    (worker,) = one("DaskCluster")["spec"]["worker"]["spec"]["containers"]
    assert worker["command"] == ["dask", "worker"]
    ctx = dask_worker.main.make_context("dask worker", list(worker["args"]))
    assert ctx.params["nthreads"] == 1 and not ctx.params["preload_argv"] and ctx.params["scheduler"] is None


def test_gpu_worker_arguments_parse_with_dask_cuda():
    cli = pytest.importorskip("dask_cuda.cli")  # with the gpu extra
    (worker,) = one("DaskWorkerGroup")["spec"]["worker"]["spec"]["containers"]
    ctx = cli.worker.make_context("dask cuda worker", list(worker["args"]))
    assert ctx.params["nthreads"] == 1 and not ctx.params["preload_argv"] and ctx.params["scheduler"] is None


def test_workers_start_without_malloc_trim_threshold():
    """As aetdask's local workers (aetdask.cluster.worker_environment)."""
    for group in worker_groups():
        (worker,) = group["spec"]["containers"]
        name = "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON"
        cfg = dask.config.update(copy.deepcopy(dask.config.config), dask.config.collect_env({name: env(worker)[name]}))
        spawned = {k for k, v in cfg["distributed"]["nanny"]["pre-spawn-environ"].items() if v is not None}
        assert "MALLOC_TRIM_THRESHOLD_" not in spawned and spawned == set(worker_environment())


def test_gpu_workers_have_one_gpu_each():
    cluster, group = one("DaskCluster"), one("DaskWorkerGroup")
    assert group["spec"]["cluster"] == cluster["metadata"]["name"]
    spec = group["spec"]["worker"]["spec"]
    (worker,) = spec["containers"]
    assert worker["command"] == ["dask", "cuda", "worker"] and worker["image"] == "aetdask:gpu"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in spec["tolerations"])
    (cpu_worker,) = cluster["spec"]["worker"]["spec"]["containers"]
    assert cpu_worker["image"] == "aetdask:latest" and "nvidia.com/gpu" not in cpu_worker["resources"]["limits"]


# ------------------------------------------------------------------------------ storage and pods
def test_every_pod_mounts_the_shared_run_store_at_data():
    pvc = one("PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for where, spec in all_pods():
        volumes = {v["name"] for v in spec["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName")
                   == pvc["metadata"]["name"]}
        mounts = [m for c in spec["containers"] for m in c["volumeMounts"] if m["name"] in volumes]
        assert [m["mountPath"] for m in mounts] == ["/data"], where
        if not where.endswith("scheduler"):
            assert not any(m.get("readOnly") for m in mounts), where  # workers and jobs write


def test_pods_run_unprivileged():
    for where, spec in all_pods():
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
        for c in spec["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            assert c["image"] in ("aetdask:latest", "aetdask:gpu") and c["imagePullPolicy"] == "IfNotPresent"


# ------------------------------------------------------------------------------ jobs
def parse_cli(argv, tmp_path):
    """Parse an ``aetdask`` command line with our click CLI, executing nothing.

    Paths under /data are moved under ``tmp_path``, and the input files they name created, so
    that ``click.Path(exists=True)`` is satisfied.
    """
    argv = [re.sub(r"^/data", str(tmp_path), a) for a in argv]
    for a in argv:
        p = pathlib.Path(a)
        if p.is_relative_to(tmp_path) and p.suffix in (".mat", ".npy", ".tif", ".yaml", ".xyz"):
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()
    parent = click.Context(aetdask_main, info_name="aetdask")
    name, command, args = aetdask_main.resolve_command(parent, argv)
    return command.make_context(name, args, parent=parent)


@pytest.mark.parametrize("name", ["aetdask-run", "aetdask-campaign"])
def test_jobs_run_aetdask_commands_that_parse(name, tmp_path):
    job = one("Job", name)
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["aetdask"] and spec["restartPolicy"] == "OnFailure"
    assert job["spec"]["backoffLimit"] >= 1
    ctx = parse_cli(container["args"], tmp_path)
    assert ctx.params["out"].endswith(("run.zarr", "campaign"))

    address = option(container["args"], "--scheduler")
    service = one("DaskCluster")["spec"]["scheduler"]["service"]
    cluster = one("DaskCluster")["metadata"]["name"]
    assert address == f"tcp://{cluster}-scheduler.$(POD_NAMESPACE).svc.cluster.local:8786"
    assert 8786 in [p["port"] for p in service["ports"]]
    (namespace,) = [e for e in container["env"] if e["name"] == "POD_NAMESPACE"]
    assert namespace["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


@pytest.mark.parametrize("old, new", [("--pixel-size", "--pixel_size"), ("run", "runn"), ("0.195", "fine")])
def test_a_changed_cli_breaks_the_job_check(old, new, tmp_path):
    (container,) = one("Job", "aetdask-run")["spec"]["template"]["spec"]["containers"]
    with pytest.raises(click.ClickException):
        parse_cli([new if a == old else a for a in container["args"]], tmp_path)


def test_campaign_configmap_is_a_campaign_mounted_where_the_job_reads_it(tmp_path):
    from aetdask.simulate.campaign import load_campaign

    (container,) = one("Job", "aetdask-campaign")["spec"]["template"]["spec"]["containers"]
    volumes = {v["name"]: v for v in one("Job", "aetdask-campaign")["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == option(container["args"], "--campaign")]
    configmap = one("ConfigMap")
    assert volumes[mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    (tmp_path / "campaign.yaml").write_text(configmap["data"][mount["subPath"]])
    campaign = load_campaign(tmp_path / "campaign.yaml")
    assert campaign["particles"] and campaign["doses"] and len(campaign["euler"]) > 1


# ------------------------------------------------------------------------------ image
def test_dockerfile_copies_what_pip_install_needs_and_drops_root():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert [s.split()[2] for s in stages] == ["gpu", "cpu"]  # `FROM image AS name`; cpu is the default
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    for stage in stages:
        sources = [src for line in re.findall(r"^COPY (.+)$", stage, flags=re.M) for src in line.split()[:-1]]
        assert all((ROOT / s).exists() for s in sources) and {"pyproject.toml", readme, "aetdask"} <= set(sources)
        assert re.findall(r"^USER (.+)$", stage, flags=re.M)[-1] == "10001:10001"
        assert '"dask==${DASK_VERSION}" "distributed==${DASK_VERSION}"' in stage
    assert "'.[gpu]'" in stages[0] or '".[gpu]"' in stages[0]
