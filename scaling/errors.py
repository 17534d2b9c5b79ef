"""The one error of bad user input: the command line prints its message as one line and exits 2."""
from __future__ import annotations


class SpecError(ValueError):
    """Bad user input; the message is shown as it is, on one line, and names the bad value."""
