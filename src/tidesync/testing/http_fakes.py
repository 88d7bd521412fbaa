"""What the SaaS API fakes share: the record of requests seen, and injected fault answers."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import JSONResponse


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Faults:
    """Answers to give instead of the real one, for the next requests: (status, headers)."""

    queue: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)

    def take(self) -> JSONResponse | None:
        if not self.queue:
            return None
        status, headers = self.queue.popleft()
        return JSONResponse({"error": {"type": "api_error", "message": "injected"}}, status, headers=headers)


async def _record(request: Request, seen: list[Seen]) -> None:
    seen.append(Seen(request.method, request.url.path, list(request.query_params.multi_items()),
                     {k.lower(): v for k, v in request.headers.items()}, await request.body()))  # fmt: skip
