"""HTTP endpoints: the webhook sink's URL, the webhook source's route, Stripe and HubSpot tokens.

Reachable means an HTTP answer of any status: a connection refused, a name that
does not resolve or a TLS failure is not. A token is tried with one cheap
authenticated GET (Stripe: ``/v1/events?limit=1`` for a source, ``/v1/customers?limit=1``
for a sink; HubSpot: ``/crm/v3/objects/<type>?limit=1``); 401/403 fail with the key to fix.
"""

from __future__ import annotations

from typing import Any

import httpx

from tidesync.checks import Check, Endpoint

TIMEOUT = 5.0


async def _get(url: str, headers: dict[str, str] | None = None, timeout: float = TIMEOUT) -> httpx.Response:
    async with httpx.AsyncClient(timeout=min(timeout, TIMEOUT), follow_redirects=False) as client:
        return await client.get(url, headers=headers)


def refused(exc: BaseException) -> bool:
    """Whether the connection was refused (nothing listens there now), through the chain of causes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _why(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


async def check_webhook_sink(e: Endpoint) -> list[Check]:
    url = e.config.url
    try:
        answer = await _get(url, timeout=e.config.timeout)
    except httpx.HTTPError as exc:
        return [
            e.check(
                "reachable", "fail", f"{url} does not answer: {_why(exc)}", f"fix {e.where}.url, or start the receiver"
            )
        ]
    return [e.ok("reachable", f"{url} answers (HTTP {answer.status_code})")]


async def check_webhook_source(e: Endpoint) -> list[Check]:
    cfg = e.config
    route = f"/webhooks/{cfg.name or e.context}"
    listen = getattr(e.api, "listen", None) or "127.0.0.1:8080"
    out = [e.ok("route", f"POST {route} served on {listen} by tidesync run/serve")]
    base = getattr(e.api, "public_url", None)
    public = cfg.public_url or (base.rstrip("/") + route if base else None)
    if public:
        try:
            answer = await _get(public)
        except httpx.ConnectError as exc:
            was_refused = refused(exc)
            out.append(
                e.check(
                    "public url",
                    "warn" if was_refused else "fail",
                    f"{public} does not answer: {_why(exc)}",
                    "start tidesync serve (and the proxy in front of it)"
                    if was_refused
                    else f"fix api.public_url or {e.where}.public_url (DNS, TLS)",
                )
            )
        except httpx.HTTPError as exc:
            out.append(
                e.check(
                    "public url",
                    "fail",
                    f"{public} does not answer: {_why(exc)}",
                    f"fix api.public_url or {e.where}.public_url",
                )
            )
        else:
            out.append(e.ok("public url", f"{public} answers (HTTP {answer.status_code})"))
    if cfg.provider == "stripe" and cfg.stripe.api_key is not None:
        out += await _token(
            e,
            "stripe api_key",
            cfg.stripe.base_url,
            "/v1/events?limit=1",
            cfg.stripe.api_key.get(),
            f"{e.where}.stripe.api_key",
        )
    return out


async def check_stripe(e: Endpoint) -> list[Check]:
    cfg = e.config
    path = "/v1/events?limit=1" if e.role == "source" else "/v1/customers?limit=1"
    return await _token(e, "api_key", cfg.base_url, path, cfg.api_key.get(), f"{e.where}.api_key")


async def check_hubspot(e: Endpoint) -> list[Check]:
    cfg = e.config
    objects: list[Any] = list(cfg.objects) if e.role == "source" else list(cfg.objects.values())
    kind = objects[0].type if objects else "contacts"
    if getattr(cfg, "token", None) is None:
        return [
            e.check(
                "token",
                "warn",
                "OAuth credentials are not checked by --check",
                "run the pipeline once to see whether the refresh token works",
            )
        ]
    return await _token(
        e, "token", cfg.base_url, f"/crm/v3/objects/{kind}?limit=1", cfg.token.get(), f"{e.where}.token"
    )


async def _token(e: Endpoint, name: str, base_url: str, path: str, token: str, key: str) -> list[Check]:
    url = base_url.rstrip("/") + path
    try:
        answer = await _get(url, {"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        return [
            e.check("reachable", "fail", f"{base_url} does not answer: {_why(exc)}", f"fix the base_url in {e.where}")
        ]
    status = answer.status_code
    if status in (401, 403):
        what = "refused" if status == 401 else "lacks the permission to read"
        return [
            e.check(
                name,
                "fail",
                f"the API {what} it (HTTP {status} on GET {path})",
                f"set a valid key in {key} (e.g. ${{env:NAME}})",
            )
        ]
    if status >= 400:
        return [e.check(name, "fail", f"GET {path} answered HTTP {status}", f"check {e.where} (base_url, objects)")]
    return [e.ok(name, f"accepted (GET {path}: HTTP {status})")]
