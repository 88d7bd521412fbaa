"""A state store URL made safe to show: the one URL helper the backends need too.

It lives apart from :mod:`tidesync.state` so that a backend, which that package
opens, does not import the package back.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``: safe to log and show."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "<unparseable URL>"
