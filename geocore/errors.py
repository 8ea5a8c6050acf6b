"""User-facing errors: each carries one line that names what was wrong and what was expected.

The CLI prints these as a single line with a non-zero exit; the app shows them as a notice.
Anything else that escapes is a bug.
"""

from __future__ import annotations


class GeocoreError(Exception):
    """Base for every error a user can cause and fix (bad input, missing weights)."""

    exit_code = 2


class InputError(GeocoreError, ValueError):
    """A file, row or field is not what was expected."""


class ImageError(InputError):
    """An image could not be read safely (corrupt, empty, not an image, too large)."""


class WeightsMissingError(GeocoreError):
    """Pretrained weights are not present locally; the message says how to get them."""

    exit_code = 3
