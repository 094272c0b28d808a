"""Errors of HF conversion the user can fix (the CLI prints them as one line)."""

from __future__ import annotations


class ConversionError(ValueError):
    """An HF folder or checkpoint cannot be converted (the message says why)."""


class MissingFileError(ConversionError):
    """A file the conversion needs is absent."""


class ShapeMismatchError(ConversionError):
    """A tensor's shape or dtype does not match the model config."""
