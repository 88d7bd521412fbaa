"""Admin routes of the two-way sync review queue: list, show, resolve (``/api/conflicts``).

They go through :class:`tidesync.sync.conflicts.ConflictQueue`, as the CLI does: a
resolution is recorded as a request in the state store, and the running sync
applies it in its own loop (writing the chosen value to both sides, closing
the conflict and recording the history), so the API never races a change of
the same record.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from tidesync.api.auth import UNAUTHORIZED, require_token
from tidesync.api.models import ConflictInfo, Problem, ResolutionOutcome, ResolveRequest, clean
from tidesync.api.runtime import ApiRuntime
from tidesync.state.store import KeyValues

router = APIRouter(
    prefix="/api/conflicts", tags=["conflicts"], dependencies=[Depends(require_token)], responses=UNAUTHORIZED
)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "no such pending conflict"}}
BAD: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the body is not JSON, or the request cannot be recorded"}
}
ConflictId = Annotated[str, Path(min_length=1, max_length=300, description="SYNC:NUMBER, e.g. customers:7")]


async def pending_conflicts(store: KeyValues, sync: str | None = None) -> list[dict[str, Any]]:
    """Pending review items (none when two-way sync is not part of this build)."""
    try:
        from tidesync.sync.conflicts import ConflictQueue
    except ImportError:
        return []
    return await ConflictQueue(store).pending(sync)


def _rt(request: Request) -> ApiRuntime:
    rt: ApiRuntime = request.app.state.runtime
    return rt


def _info(entry: dict[str, Any]) -> ConflictInfo:
    return ConflictInfo.model_validate(clean(entry))


async def _get(store: KeyValues, cid: str) -> dict[str, Any]:
    from tidesync.sync.conflicts import ConflictQueue, ResolutionError

    try:
        entry = await ConflictQueue(store).get(cid)
    except ResolutionError as exc:
        raise HTTPException(404, str(exc)) from None
    if entry is None:
        raise HTTPException(404, f"no pending conflict {cid} (already resolved, or a wrong id)")
    return entry


@router.get("", summary="Pending conflicts, oldest first, with any resolution waiting to be applied")
async def list_pending(
    request: Request, sync: Annotated[str | None, Query(max_length=200, description="only this sync")] = None
) -> list[ConflictInfo]:
    store = _rt(request).store
    pending = await pending_conflicts(store, sync)
    if not pending:
        return []
    from tidesync.sync.conflicts import ConflictQueue

    requests = await ConflictQueue(store).requests(sync)
    return [_info({**e, "pending_resolution": requests.get(e["id"])}) for e in pending]


@router.get("/{conflict_id}", summary="One conflict: both candidates and the agreed value", responses=NOT_FOUND)
async def show(request: Request, conflict_id: ConflictId) -> ConflictInfo:
    return _info(await _get(_rt(request).store, conflict_id))


@router.post(
    "/{conflict_id}/resolve",
    summary="Choose the winning value; the running sync writes it to both sides",
    responses={**NOT_FOUND, **BAD},
)
async def resolve(request: Request, conflict_id: ConflictId, body: ResolveRequest) -> ResolutionOutcome:
    from tidesync.sync.conflicts import ConflictQueue, ResolutionError

    rt = _rt(request)
    store = rt.store
    await _get(store, conflict_id)
    try:
        res = await ConflictQueue(store).request_resolution(
            conflict_id,
            take=body.take,
            value=body.value,
            has_value=body.use_value,
            remember=body.remember,
            by="admin api",
            now=rt.now(),
        )
    except ResolutionError as exc:
        raise HTTPException(400, str(exc)) from None
    return ResolutionOutcome.model_validate(
        clean(
            {
                "conflict": res.conflict,
                "field": res.field,
                "take": res.take,
                "value": res.value,
                "remember": res.remember,
                "rule_line": res.rule_line,
                "note": "recorded; the running sync writes the chosen value to both sides and closes the conflict",
            }
        )
    )
