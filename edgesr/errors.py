"""The one base class of errors a user can cause and fix: bad input files, recipes, artifacts, arguments.

Every message names the file (or flag) and the fix. The command line prints them as ``edgesr: error: ...``
and exits with ``exit_code`` (2: the input is wrong; 3: a step ran and failed its quality budget), with no
traceback unless ``--debug`` is given. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["EdgesrError", "UsageError"]


class EdgesrError(Exception):
    """An error in what the user gave edgesr; the message names the file or option and the fix."""

    exit_code = 2


class UsageError(EdgesrError, ValueError):
    """A command-line value or combination of values that cannot work (checked before any work starts)."""
