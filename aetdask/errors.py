"""Exceptions that carry a message meant for the user (the CLI prints them as they are)."""


class AetdaskError(Exception):
    """Base class of errors whose message is the whole story."""


class InputError(AetdaskError, ValueError):
    """Bad input: a file, field or value that is not what was expected."""


class StoreError(AetdaskError):
    """A run store or output place that cannot be used (missing product, newer format, not writable, ...)."""


class ConfigError(AetdaskError, ValueError):
    """A configuration value that is not allowed."""


class ConfigKeyError(ConfigError, KeyError):
    """An unknown configuration key."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0])


class ConfigTypeError(ConfigError, TypeError):
    """A configuration value of the wrong kind."""


class DeviceError(ConfigError, RuntimeError):
    """A device the configuration asks for (``aetdask.device: gpu``) that the machine running the work lacks.

    A :class:`ConfigError` for the user (one line from the CLI, also when raised inside a Dask task on a
    worker), and a ``RuntimeError`` for callers that caught the error it used to be.
    """
