"""The failures a user can act on, as opposed to bugs.

The command line shows a `RankiqaError` (or a file-system error naming a path) as one
``error: ...`` line with exit status 1; anything else is a bug and keeps its traceback.
Every module raises one of these (or a subclass) for bad input, never a bare ``ValueError``.
"""


class RankiqaError(Exception):
    """An expected failure whose message tells the user what to change."""


class InputError(RankiqaError, ValueError):
    """Bad input: an option, a config value, a file. The message names which."""
