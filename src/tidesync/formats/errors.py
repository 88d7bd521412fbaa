"""The one error of payload formats: an event that cannot be written in a format, or bytes that are no event of it."""

from __future__ import annotations

from tidesync.errors import PermanentError


class FormatError(PermanentError):
    """An event cannot be encoded in a format, or a payload cannot be decoded into an event.

    A :class:`~tidesync.errors.PermanentError`: the same bytes (or event) will fail the same way
    every time, so a sink or source dead-letters that one message and goes on. The message names
    the format and what is wrong (a missing field, a value of the wrong type).
    """

    error_class = "format"
