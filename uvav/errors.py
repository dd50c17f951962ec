"""The errors of using a finished run (:mod:`uvav.api`, :mod:`uvav.prediction`)."""


class RunError(RuntimeError):
    """A run folder from which the model cannot be rebuilt (missing files, other schema, unusable config)."""


class InputError(ValueError):
    """An input that cannot be used: a missing or unreadable file, or a request the run cannot serve."""
