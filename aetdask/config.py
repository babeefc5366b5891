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

import contextvars
import os
import pathlib

import dask.config
import yaml

from aetdask.errors import ConfigError, ConfigKeyError, ConfigTypeError
from aetdask.parameters import PARAMETERS, defaults

DEFAULTS: dict = defaults()
dask.config.update_defaults(DEFAULTS)

#: The stage running now and the keys it declared (:mod:`aetdask.stages`); None outside a stage.
_STAGE: contextvars.ContextVar = contextvars.ContextVar("aetdask_stage", default=None)


class UndeclaredParameter(ConfigError):
    """A stage read a parameter it does not declare (a bug: its fingerprint would miss that parameter)."""


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _strip(key: str) -> str:
    key = key.replace("-", "_")
    return key[len("aetdask."):] if key.startswith("aetdask.") else key


def _check_key(key: str) -> str:
    k = _strip(key)
    if k not in PARAMETERS:
        allowed = ", ".join(sorted(PARAMETERS))
        raise ConfigKeyError(f"unknown aetdask configuration key {key!r}; allowed keys: {allowed}")
    return k


def validate(key: str, value):
    """Raise :class:`~aetdask.errors.ConfigError` (a ``ValueError``) if ``value`` is not allowed for ``key``."""
    k = _check_key(key)
    try:
        return PARAMETERS[k].check(value)
    except TypeError as exc:
        raise ConfigTypeError(f"aetdask.{k} = {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"aetdask.{k} = {exc}") from None


class declared:
    """Context in which a stage runs: reading a result parameter it did not declare is an error when
    ``AETDASK_STRICT_PARAMETERS`` is set (the tests set it), else a warning, once per key."""

    def __init__(self, stage: str, keys):
        self.token = None
        self.value = (stage, frozenset(keys), [])  # (config.set shadows the builtin set here)

    def __enter__(self):
        self.token = _STAGE.set(self.value)
        return self

    def __exit__(self, *exc):
        _STAGE.reset(self.token)
        return False


def _check_declared(k: str) -> None:
    active = _STAGE.get()
    if active is None or PARAMETERS[k].role != "result":
        return
    stage, keys, warned = active
    if k in keys or k in warned:
        return
    message = (f"stage {stage!r} read aetdask.{k}, which it does not declare (aetdask/parameters.py): its "
               "fingerprint misses it, so a change of it would not recompute the stage")
    if os.environ.get("AETDASK_STRICT_PARAMETERS"):
        raise UndeclaredParameter(message)
    warned.append(k)
    import warnings

    warnings.warn(message, stacklevel=3)


def get(key: str, override=None, *, preset=None):
    """Read ``aetdask.<key>``, validated. Precedence: ``override`` (a function argument) when not None,
    then a value the user set (:func:`explicit`), then ``preset`` (e.g. a campaign's preset) when not None,
    then the default."""
    k = _check_key(key)
    if override is not None:
        return validate(k, override)
    _check_declared(k)
    if preset is not None and not explicit(k):
        return validate(k, preset)
    value = dask.config.get(f"aetdask.{k}")
    return validate(k, value)


def explicit(key: str) -> bool:
    """Whether the user set ``aetdask.<key>``: through :func:`set` (``--config`` files go through it) or
    elsewhere in ``dask.config`` (environment variables, a Dask YAML file) to a value other than the default."""
    k = _check_key(key)
    return k in _EXPLICIT.get() or dask.config.get(f"aetdask.{k}") != PARAMETERS[k].default


#: Keys set through :func:`set` in the current context.
_EXPLICIT: contextvars.ContextVar = contextvars.ContextVar("aetdask_explicit", default=frozenset())


class _Set:
    """``dask.config.set`` that also remembers which keys the user set (:func:`explicit`)."""

    def __init__(self, checked: dict):
        self._dask = dask.config.set(checked)
        self._token = _EXPLICIT.set(_EXPLICIT.get() | {k[len("aetdask."):] for k in checked})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._dask.__exit__(*exc)
        try:
            _EXPLICIT.reset(self._token)
        except ValueError:  # left in another context than it was entered: forget nothing rather than fail
            pass
        return False


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
    return _Set(checked)


#: The largest parameter file :func:`load` reads (every parameter with its help, ``aetdask parameters``, is ~10 kB).
MAX_CONFIG_BYTES = 1 << 20
#: The deepest nesting of mappings :func:`load` accepts (keys have at most three parts).
_MAX_DEPTH = 8
#: The longest message :func:`load` raises (the list of allowed keys fits): a value is quoted in it, and a file
#: may hold a long one.
_MAX_MESSAGE = 1600


def _bounded(text: str, limit: int = _MAX_MESSAGE) -> str:
    """``text`` on one line, its middle left out when longer than ``limit`` (its start names the key, its end
    says what was expected)."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    keep = (limit - 40) // 2
    return f"{text[:keep]} … ({len(text) - 2 * keep} characters left out) … {text[-keep:]}"


def _safe_loader(path: pathlib.Path, what: str = "parameter file"):
    """A ``yaml.SafeLoader`` that refuses aliases (``*name``): a parameter file never needs one, and nested aliases
    expand a few hundred bytes into gigabytes ("billion laughs") while Python objects are built from them."""

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise ConfigError(
                    f"{path}: line {event.start_mark.line + 1}: YAML alias *{_bounded(event.anchor, 60)}; aliases "
                    f"are not allowed in a {what} (they can expand a small file into gigabytes); expected "
                    "each value written out")
            return super().compose_node(parent, index)

    return Loader


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: where and what."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = " ".join(str(x) for x in (getattr(exc, "problem", None), getattr(exc, "context", None)) if x)
    return _bounded(where + (what or str(exc)), 300)


def _depth(d, limit: int) -> bool:
    """Whether the mappings in ``d`` nest no deeper than ``limit``."""
    if not isinstance(d, dict):
        return True
    return limit > 0 and all(_depth(v, limit - 1) for v in d.values())


def read_yaml(path, what: str = "parameter file", error=ConfigError):
    """Read a small YAML file safely: its object, or ``error`` with one line naming ``path``.

    Refused: a file over :data:`MAX_CONFIG_BYTES`, not UTF-8, YAML aliases (see :func:`_safe_loader`), invalid
    YAML, values Python cannot convert. ``what`` names the file's kind in the messages (a parameter file, a
    campaign file); ``error`` is the exception class raised.
    """
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        size = "(`aetdask parameters` prints one, about 10 kB)" if what == "parameter file" else "(a few kB)"
        raise error(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB; expected a YAML {what} {size}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a text file (byte {exc.start} is not UTF-8); expected a YAML {what}") from None
    try:
        return yaml.load(text, Loader=_safe_loader(path, what))  # noqa: S506 (a SafeLoader, without aliases)
    except ConfigError as exc:  # an alias
        raise error(str(exc)) from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more digits than Python converts
        raise error(f"{path}: cannot read the {what} ({_bounded(exc, 300)})") from None


def load(path) -> dict:
    """Read a YAML parameter file, validate every key and return a flat mapping.

    Raises :class:`~aetdask.errors.ConfigError` naming the file for anything but a small UTF-8 YAML
    mapping of known keys to allowed values: what :func:`read_yaml` refuses, and mappings nested deeper than
    any key. Messages are one line of bounded length, however long the value they quote.
    """
    path = pathlib.Path(path)
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of parameters at the top level")
    data = data.get("aetdask", data)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: 'aetdask' holds {_bounded(repr(data), 80)}; expected a mapping of parameters "
                          "under it")
    if not _depth(data, _MAX_DEPTH):
        raise ConfigError(f"{path}: mappings nested deeper than {_MAX_DEPTH} levels; expected parameter keys "
                          "such as trace.window (`aetdask parameters` lists them)")
    flat = _flatten(data)
    try:
        for k, v in flat.items():
            validate(k, v)
    except ConfigError as exc:
        raise type(exc)(_bounded(f"{path}: {exc.args[0]}")) from None
    return {f"aetdask.{_strip(k)}": v for k, v in flat.items()}
