"""Errors a stage reports as one clear message and a non-zero exit."""


class PipelineError(Exception):
    """Bad input or config: the message says which file, column, value and rule."""
