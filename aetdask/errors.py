"""Exceptions that carry a message meant for the user (the CLI prints them as they are)."""


class AetdaskError(Exception):
    """Base class of errors whose message is the whole story."""


class InputError(AetdaskError, ValueError):
    """Bad input: a file, field or value that is not what was expected."""


class StoreError(AetdaskError):
    """A run store that cannot be used (missing product, newer format, ...)."""
