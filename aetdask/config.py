"""Configuration: aetdask defaults live in ``dask.config`` under ``aetdask.*``.

Values are read at call time, so ``with aetdask.config.set(...)`` or a
``dask.config.set({"aetdask.device": "gpu"})`` takes effect on the next call.
Keys and values are validated: an unknown key or a value of the wrong kind
raises, naming what is allowed.

Examples
--------
>>> from aetdask import config
>>> config.get("simulate.energy")
200000.0
>>> with config.set({"simulate.energy": 300e3}):
...     config.get("simulate.energy")
300000.0
"""

from __future__ import annotations

import pathlib
from numbers import Integral, Real

import dask.config
import yaml

from aetdask.errors import ConfigError, ConfigKeyError, ConfigTypeError

_DEFAULTS_FILE = pathlib.Path(__file__).with_name("aetdask.yaml")
with open(_DEFAULTS_FILE) as _f:
    DEFAULTS: dict = yaml.safe_load(_f)
dask.config.update_defaults(DEFAULTS)

#: Values that are restricted to a set of choices.
CHOICES = {
    "device": ("cpu", "gpu"),
    "dtype": ("float32", "float64"),
    "reconstruct.method": ("resire", "sirt", "fbp"),
    "preprocess.denoiser": ("bm3d", "nlm", "none"),
}
#: Values that may be None besides their default's kind.
NULLABLE = {"scheduler"}
#: The kind of the keys whose default is None (None: decided from the data or the other settings).
NULL_KINDS = {"analyze.cutoff": Real, "ptycho.probe_after": Real, "refine_atoms.components": Integral,
              "refine_atoms.angles": bool}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


_FLAT_DEFAULTS = _flatten(DEFAULTS["aetdask"])


def _strip(key: str) -> str:
    key = key.replace("-", "_")
    return key[len("aetdask."):] if key.startswith("aetdask.") else key


def _check_key(key: str) -> str:
    k = _strip(key)
    if k not in _FLAT_DEFAULTS:
        allowed = ", ".join(sorted(_FLAT_DEFAULTS))
        raise ConfigKeyError(f"unknown aetdask configuration key {key!r}; allowed keys: {allowed}")
    return k


def validate(key: str, value):
    """Raise :class:`~aetdask.errors.ConfigError` (a ``ValueError``) if ``value`` is not allowed for ``key``."""
    k = _check_key(key)
    default = _FLAT_DEFAULTS[k]
    if value is None and (k in NULLABLE or default is None):
        return value
    if k in CHOICES:
        if value not in CHOICES[k]:
            raise ConfigError(f"aetdask.{k} = {value!r} is not allowed; choose one of {CHOICES[k]}")
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, Real):
        ok = isinstance(value, Real) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, (list, tuple)) and len(value) == len(default)
    elif k in NULL_KINDS:
        ok = isinstance(value, NULL_KINDS[k]) and (NULL_KINDS[k] is bool or not isinstance(value, bool))
    elif default is None:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        kind = {Integral: "an integer", Real: "a number", bool: "true, false"}.get(NULL_KINDS.get(k))
        like = f"{kind} or null" if k in NULL_KINDS else f"a value like {default!r}"
        raise ConfigTypeError(f"aetdask.{k} = {value!r} has the wrong kind; expected {like}")
    return value


def get(key: str, override=None):
    """Read ``aetdask.<key>``; ``override`` (not None) wins, after validation."""
    k = _check_key(key)
    if override is not None:
        return validate(k, override)
    value = dask.config.get(f"aetdask.{k}")
    return validate(k, value)


def set(arg: dict | None = None, **kwargs):
    """Validated ``dask.config.set`` for aetdask keys (usable as a context manager).

    Keys may be given with or without the ``aetdask.`` prefix; keyword
    arguments use ``__`` for dots (``simulate__energy=300e3``).
    """
    items = dict(arg or {})
    items.update({k.replace("__", "."): v for k, v in kwargs.items()})
    checked = {}
    for key, value in items.items():
        k = _check_key(key)
        checked[f"aetdask.{k}"] = validate(k, value)
    return dask.config.set(checked)


def load(path) -> dict:
    """Read a YAML parameter file, validate every key and return a flat mapping."""
    path = pathlib.Path(path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of parameters at the top level")
    data = data.get("aetdask", data)
    flat = _flatten(data)
    try:
        for k, v in flat.items():
            validate(k, v)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.args[0]}") from None
    return {f"aetdask.{_strip(k)}": v for k, v in flat.items()}
