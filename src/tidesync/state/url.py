"""A state store URL made safe to show: the one URL helper the backends need too.

It lives apart from :mod:`tidesync.state` so that a backend, which that package
opens, does not import the package back.
"""

from __future__ import annotations

from urllib.parse import unquote_plus, urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``: safe to log and show.

    Both places a Postgres URL may carry one are masked: the userinfo
    (``user:pw@host``) and a ``password`` query parameter (``?password=pw``,
    libpq's ``sslpassword`` too).
    """
    try:
        parts = urlsplit(url)
        changed = False
        if parts.password is not None:
            host = parts.netloc.rpartition("@")[2]
            parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
            changed = True
        params = parts.query.split("&") if parts.query else []
        masked = [f"{p.partition('=')[0]}=***" if _is_password(p) else p for p in params]
        if masked != params:
            parts = parts._replace(query="&".join(masked))
            changed = True
        return urlunsplit(parts) if changed else url
    except ValueError:
        return "<unparseable URL>"


def _is_password(param: str) -> bool:
    return unquote_plus(param.partition("=")[0]).strip().lower().endswith("password")
