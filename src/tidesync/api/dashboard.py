"""The web dashboard: one HTML page with plain JavaScript and CSS, served from ``api/static``.

The page and its two files are public: they hold no data. On first use the
page asks for the admin token and keeps it in the tab's ``sessionStorage``
(gone when the tab closes; never in a cookie, so no request carries it
implicitly and cross-site requests cannot use it); every data call it makes
sends it as ``Authorization: Bearer``, the live stream included (read with
``fetch``, since ``EventSource`` cannot send headers). No build step, no CDN:
the latency chart is drawn on a canvas by the page itself.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

STATIC = Path(__file__).parent / "static"
FILES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# The page loads nothing from elsewhere and runs no inline script.
CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "cache-control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=307)


@router.get("/dashboard")
async def page() -> FileResponse:
    return FileResponse(STATIC / "dashboard.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/dashboard/{name}")
async def asset(name: str) -> FileResponse:
    if name not in FILES:
        raise HTTPException(404, "no such file")
    return FileResponse(STATIC / name, media_type=FILES[name], headers=HEADERS)
