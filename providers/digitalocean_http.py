"""DigitalOcean's API through pydo: requests, retries, rate limits, paging, error classes.

The transport half of the DigitalOcean adapter (providers/digitalocean.py holds the
contract).  Facts it relies on are in ../shared/reference/providers.md §1:

- azure-core's retry policy is off for the whole client: it retries POSTs on 5xx
  (duplicate Droplets, DO has no idempotency key) and sleeps on the wall clock.
  Reads and deletes are retried here with tenacity on the injected sleep, only on
  `TransientError`; a create is sent once.
- Rate limits: a 429 waits for `retry-after`, else for `ratelimit-reset` when
  `ratelimit-remaining` is 0; requests slow down while `ratelimit-remaining` is low.
- Errors are classified by HTTP status and the body's error `id`; only an SDK error is
  classified, anything else (a bug here, a serialization error) propagates unchanged.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qs, urlsplit

import pydo
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
    TooManyRedirectsError,
)
from azure.core.pipeline.policies import HeadersPolicy, RetryPolicy
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from providers.base import (
    AuthError,
    CapacityError,
    InvalidRequest,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    TransientError,
)

log = logging.getLogger("providers.digitalocean")

T = TypeVar("T")

PER_PAGE = 200  # the API's maximum
MAX_PAGES = 1000  # a guard against a `next` link that never ends
LISTING_READS = 3  # a listing that changed while paged is read again, at most this often in all
READ_ATTEMPTS = 3  # GET and DELETE: 1 try + 2 retries on transient errors
RATE_LIMIT_WAITS = 3  # 429s waited out per request before giving up
MAX_RATE_WAIT_S = 60.0  # a longer wait is the next tick's business
LOW_REMAINING = 20  # below this many requests left in the hour, pace the calls
MAX_PACE_S = 5.0

# HTTP status → the taxonomy.  422 (`unprocessable_entity`) is split below.
STATUS_ERRORS: Mapping[int, type[ProviderError]] = {
    401: AuthError, 403: AuthError, 408: TransientError, 429: RateLimited,
}
# DigitalOcean answers a capacity miss, a droplet-limit refusal and a bad request alike: HTTP 422
# with the id `unprocessable_entity` and no finer code (providers.md §1.4).  Only there is the
# message read, for these phrases of the API's own messages.
UNPROCESSABLE = "unprocessable_entity"
CAPACITY_PHRASES = ("unavailable", "not available", "capacity", "insufficient", "sold out")
QUOTA_PHRASES = ("limit",)


@dataclass
class _RateState:
    remaining: int | None = None
    reset: float | None = None


class DigitalOceanHttp:
    """One pydo client with the adapter's retry, pacing and classification rules."""

    def __init__(self, *, token: str, api_url: str, timeout_s: float, clock: Callable[[], float],
                 sleep: Callable[[float], None]):
        self._token = token
        self._clock = clock
        self._sleep = sleep
        self._rate = _RateState()
        kwargs: dict[str, Any] = {}
        parts = urlsplit(api_url)
        if parts.scheme == "http":
            # azure's bearer policy refuses http; allow it only to this machine (tests, a local proxy)
            if not _is_loopback(parts.hostname or ""):
                raise InvalidRequest(f"api_url {api_url!r}: plain http is only allowed to a loopback host")
            kwargs["authentication_policy"] = HeadersPolicy({"Authorization": f"Bearer {token}"})
        elif parts.scheme != "https":
            raise InvalidRequest(f"api_url {api_url!r} must be an http(s) URL")
        self.client = pydo.Client(
            token=token, endpoint=api_url.rstrip("/"),
            retry_policy=RetryPolicy.no_retries(),  # see the module docstring
            connection_timeout=timeout_s, read_timeout=timeout_s,
            raw_response_hook=self._observe_headers,
            **kwargs,
        )

    # ------------------------------------------------------------ calls

    def read(self, what: str, call: Callable[[], T]) -> T:
        """An idempotent call (GET, DELETE): transient failures are retried, bounded."""
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(READ_ATTEMPTS),
            wait=wait_exponential(multiplier=0.5, max=4.0),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(self.once, what, call)

    def once(self, what: str, call: Callable[[], T]) -> T:
        """One request, waiting out up to RATE_LIMIT_WAITS 429s as the API tells; errors classified."""
        waits = 0
        while True:
            self._pace(what)
            try:
                return call()
            except HttpResponseError as err:
                if err.status_code != 429:
                    self._raise(what, err)
                wait = self._rate_wait(err)
                if wait is None or waits >= RATE_LIMIT_WAITS or wait > MAX_RATE_WAIT_S:
                    raise RateLimited(f"{what}: DigitalOcean rate limit (HTTP 429) after {waits} waits",
                                      retry_after_s=wait, code="too_many_requests") from err
                waits += 1
                log.info("provider=digitalocean rate_limited=%s wait_s=%.1f", what, wait)
                self._sleep(wait)
            except (ServiceRequestError, ServiceResponseError) as err:
                self._raise(what, err)

    def all_pages(self, what: str, key: str, call: Callable[..., Any], ident: str = "id",
                  **kw: Any) -> list[dict[str, Any]]:
        """Every page of a listing.  Pages are offsets: a Droplet destroyed between two page
        reads shifts the rest up by one, and a live one is skipped.  `meta.total` changing
        between pages, or fewer distinct `ident`s than it says, shows that: the listing is read again."""
        totals: list[int] = []
        for _ in range(LISTING_READS):
            out, totals = self._pages_once(what, key, call, **kw)
            distinct = len({item.get(ident) for item in out if isinstance(item, dict)})
            if not totals or (len(set(totals)) == 1 and distinct >= totals[0]):
                return out
        raise TransientError(f"{what}: the listing changed while it was read, {LISTING_READS} times "
                             f"(meta.total {totals}); refusing a partial view")

    def _pages_once(self, what: str, key: str, call: Callable[..., Any],
                    **kw: Any) -> tuple[list[dict[str, Any]], list[int]]:
        out: list[dict[str, Any]] = []
        totals: list[int] = []  # meta.total of each page, where the answer has it
        page = 1
        for _ in range(MAX_PAGES):
            answer = self.read(f"{what} (page {page})", _page_call(call, page, kw))
            if not isinstance(answer, dict) or not isinstance(answer.get(key), list):
                raise TransientError(f"{what} (page {page}): the answer has no {key!r} list")
            out.extend(answer[key])
            total = (answer.get("meta") or {}).get("total")
            if isinstance(total, int):
                totals.append(total)
            next_url = ((answer.get("links") or {}).get("pages") or {}).get("next")
            if not next_url:
                return out, totals
            page = _page_of(next_url, page + 1)
        raise TransientError(f"{what}: more than {MAX_PAGES} pages; refusing a partial view")

    # ------------------------------------------------------------ rate limits

    def _rate_wait(self, err: HttpResponseError) -> float | None:
        headers: Mapping[str, str] = getattr(err.response, "headers", None) or {}
        retry_after = _number(headers.get("retry-after"))
        if retry_after is not None:
            return max(0.0, retry_after)
        if _number(headers.get("ratelimit-remaining")) == 0:
            reset = _number(headers.get("ratelimit-reset"))
            if reset is not None:
                return max(0.0, reset - self._clock())
        return None  # no guidance: the next tick tries again

    def _pace(self, what: str) -> None:
        """Spread the last requests of the hour until the oldest one expires."""
        remaining, reset = self._rate.remaining, self._rate.reset
        if remaining is None or reset is None or remaining >= LOW_REMAINING:
            return
        until_reset = reset - self._clock()
        if until_reset <= 0:
            return
        if remaining == 0:
            if until_reset > MAX_RATE_WAIT_S:
                raise RateLimited(f"{what}: no DigitalOcean requests left until the rate limit resets "
                                  f"in {until_reset:.0f} s", retry_after_s=until_reset)
            self._sleep(until_reset)
            return
        self._sleep(min(MAX_PACE_S, until_reset / (remaining + 1)))

    def _observe_headers(self, response: Any) -> None:
        headers = response.http_response.headers
        remaining = _number(headers.get("ratelimit-remaining"))
        if remaining is not None:
            self._rate = _RateState(int(remaining), _number(headers.get("ratelimit-reset")))

    # ------------------------------------------------------------ errors

    def _raise(self, what: str, err: AzureError) -> NoReturn:
        """Classify an SDK error into the taxonomy (once, here) and raise it chained."""
        if isinstance(err, HttpResponseError) and err.status_code is not None:
            raise self._from_status(what, err, err.status_code) from err
        hint = " (it may have taken effect; the next tick finds it by token)" if what.startswith("creating") else ""
        raise TransientError(f"{what}: {type(err).__name__}{hint}: {self._scrub(str(err))}",
                             code=type(err).__name__) from err

    def _from_status(self, what: str, err: HttpResponseError, status: int) -> ProviderError:
        error_id, message = _error_body(err)
        detail = self._scrub(f"HTTP {status} {error_id}: {message}".strip())
        if isinstance(err, ClientAuthenticationError) or STATUS_ERRORS.get(status) is AuthError:
            return AuthError(f"{what}: DigitalOcean refused the token ({detail})", code=error_id or str(status))
        kind = _unprocessable(message) if status == 422 else STATUS_ERRORS.get(status)
        if kind is None:
            kind = TransientError if status >= 500 or isinstance(err, DecodeError) else InvalidRequest
        if isinstance(err, TooManyRedirectsError):
            kind = InvalidRequest
        return kind(f"{what}: {detail}", code=error_id or str(status))

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***")


def _unprocessable(message: str) -> type[ProviderError]:
    lowered = message.lower()
    if any(p in lowered for p in CAPACITY_PHRASES):
        return CapacityError
    if any(p in lowered for p in QUOTA_PHRASES):
        return QuotaExceeded
    return InvalidRequest


def _page_call(call: Callable[..., Any], page: int, kw: Mapping[str, Any]) -> Callable[[], Any]:
    return lambda: call(per_page=PER_PAGE, page=page, **kw)


def _error_body(err: HttpResponseError) -> tuple[str, str]:
    try:
        body = err.response.json() if err.response is not None else None  # type: ignore[attr-defined]
    except (ValueError, AttributeError, TypeError):
        body = None
    if isinstance(body, dict):
        return str(body.get("id", "")), str(body.get("message", ""))
    return "", str(err.reason or "")


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _page_of(url: str, default: int) -> int:
    values = parse_qs(urlsplit(url).query).get("page")
    try:
        return int(values[0]) if values else default
    except ValueError:
        return default


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
