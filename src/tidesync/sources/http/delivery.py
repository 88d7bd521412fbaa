"""The API client's errors as delivery errors: the one boundary of every sink that writes through it.

::

    CredentialRejected    -> SystemicError    every write would be refused alike: the pipeline blocks
    SourceTransientError  -> TransientError   the client's own retries ran out (5xx, 408, lost connection, 429s)
    ApiStatusError        -> what ``rejected`` makes of it (each API words and sorts its refusals itself)
    any other SourceError -> ``otherwise``    (a credential that could not be read, say)

Used by the Stripe, HubSpot and Google Sheets sinks; the webhook sink speaks
raw HTTP to an endpoint of its own kind (410 disables it) and translates there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tidesync.errors import DeliveryError, SourceError, SourceTransientError, SystemicError, TransientError
from tidesync.sources.http.client import ApiStatusError, CredentialRejected

__all__ = ["delivery_errors"]


@contextmanager
def delivery_errors(
    rejected: Callable[[ApiStatusError], DeliveryError],
    *,
    refused: str | None = None,
    entity: str | None = None,
    otherwise: type[DeliveryError] = TransientError,
) -> Iterator[None]:
    """Raise, in place of a client error inside the block, its delivery error (``raise ... from exc``).

    ``refused`` prefixes the message of a rejected credential (``"HubSpot refused the token"``);
    ``entity`` goes with that SystemicError.
    """
    try:
        yield
    except CredentialRejected as exc:
        raise SystemicError(f"{refused}: {exc}" if refused else str(exc), entity=entity) from exc
    except SourceTransientError as exc:
        raise TransientError(str(exc)) from exc
    except ApiStatusError as exc:
        raise rejected(exc) from exc
    except SourceError as exc:
        raise otherwise(str(exc)) from exc
