"""Errors that mean "the input was wrong", as opposed to a bug.

The command line turns an `InputError` into exit status 2 and its message, one line, on stderr,
with no traceback. Messages name the input and say what to do.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user: a flag, a config field, a path, a model folder, an env id."""
