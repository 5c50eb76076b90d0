"""DigitalOcean GPU Droplets through pydo.  See providers/base.py for the contract.

This is the only module that imports pydo.  Facts and traps it relies on are in
../shared/reference/providers.md §1:

- azure-core's retry policy is off for the whole client: it retries POSTs on 5xx
  (duplicate Droplets, DO has no idempotency key) and sleeps on the wall clock.
  Reads and deletes are retried here with tenacity on the injected sleep; a create
  is never retried: the next tick's reconcile finds its Droplets by token.
- GPU Droplets are only listed with `type="gpus"` (and `tag_name` cannot be combined
  with `type`), so a listing is `type=gpus` filtered on the client, plus `tag_name`
  for non-GPU sizes, every page at `per_page=200`.
- `droplets.destroy` returns a 404 body instead of raising: that id is gone.
- Rate limits: a 429 waits for `retry-after`, else for `ratelimit-reset` when
  `ratelimit-remaining` is 0; requests slow down while `ratelimit-remaining` is low.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qs, urlsplit

import pydo
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.policies import HeadersPolicy, RetryPolicy
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from providers.base import (
    DRAINING_TAG,
    FLEET_TAG,
    POOL_TAG,
    TOKEN_TAG,
    AuthError,
    BillingRule,
    CapacityError,
    CapacityMemory,
    DestroyFailure,
    Headroom,
    InstanceStatus,
    InvalidRequest,
    LaunchResult,
    LaunchSpec,
    PoolTarget,
    ProviderError,
    ProviderInstance,
    QuotaExceeded,
    RateLimited,
    TransientError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

PER_PAGE = 200  # the API's maximum
COUNT_REUSE_S = 5.0  # an account-wide count is reused this long (one tick)
MAX_PAGES = 1000  # a guard against a `next` link that never ends
LISTING_READS = 3  # a listing that changed while paged is read again, at most this often in all
BATCH = 10  # at most 10 `names` per create
MAX_USER_DATA = 64 * 1024
SIZES_TTL_S = 300.0
ACCOUNT_TTL_S = 300.0  # the droplet limit changes rarely (a support ticket); the counts are read every time
READ_ATTEMPTS = 3  # GET and DELETE: 1 try + 2 retries on transient errors
RATE_LIMIT_WAITS = 3  # 429s waited out per request before giving up
MAX_RATE_WAIT_S = 60.0  # a longer wait is the next tick's business
LOW_REMAINING = 20  # below this many requests left in the hour, pace the calls
MAX_PACE_S = 5.0
TAG_RE = re.compile(r"^[a-zA-Z0-9:_\-]{1,255}$")
CAPACITY_WORDS = ("unavailable", "not available", "capacity", "insufficient", "sold out")
STATUS = {"new": InstanceStatus.BOOTING, "active": InstanceStatus.READY,
          "off": InstanceStatus.STOPPED, "archive": InstanceStatus.STOPPED}


@dataclass
class _RateState:
    remaining: int | None = None
    reset: float | None = None


class DigitalOceanProvider:
    name = "digitalocean"
    billing = BillingRule(min_seconds=60.0)

    def __init__(
        self,
        *,
        token: str,
        api_url: str = "https://api.digitalocean.com",
        timeout_s: float = 30.0,
        capacity_miss_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not token:
            raise AuthError("DigitalOcean API token is empty")
        self._token = token
        self._clock = clock
        self._sleep = sleep
        self._misses = CapacityMemory(capacity_miss_ttl_s, clock)  # (size, region) candidates
        self._existing_cache: tuple[float, int] | None = None
        self._sizes: dict[str, dict[str, Any]] | None = None
        self._sizes_at = 0.0
        self._limit: int | None = None
        self._limit_at = 0.0
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
        self._client = pydo.Client(
            token=token, endpoint=api_url.rstrip("/"),
            retry_policy=RetryPolicy.no_retries(),  # see the module docstring
            connection_timeout=timeout_s, read_timeout=timeout_s,
            raw_response_hook=self._observe_headers,
            **kwargs,
        )

    # ------------------------------------------------------------ the contract

    def list_instances(self, fleet: str) -> list[ProviderInstance]:
        tag = f"{FLEET_TAG}:{fleet}"
        what = f"listing droplets tagged {tag}"
        found: dict[int, dict[str, Any]] = {}
        for droplet in self._all_pages(what, "droplets", self._client.droplets.list, type="gpus"):
            if tag in (droplet.get("tags") or []):
                found[droplet["id"]] = droplet
        # Non-GPU Droplets (a pool may use a CPU size) are only in the default listing.
        for droplet in self._all_pages(what, "droplets", self._client.droplets.list, tag_name=tag):
            found[droplet["id"]] = droplet
        return [self._instance(d, what) for d in found.values()]

    def create(self, spec: LaunchSpec) -> LaunchResult:
        self._existing_cache = None  # the count changes now
        target = spec.target
        body = self._body(target, spec.token)
        notes: list[str] = []
        candidates = self._candidates(target, notes)
        ages = {c: self._misses.age(c) for c in candidates}
        remembered = [c for c in candidates if ages[c] is not None]
        fresh = [c for c in candidates if ages[c] is None]
        for size, region in remembered:
            if fresh:
                notes.append(f"{_where(size, region)}: skipped, no capacity {ages[(size, region)]:.0f} s ago")
        errors: list[CapacityError] = []
        for size, region in fresh or remembered:
            try:
                made = self._launch(spec, body, size, region, notes)
            except CapacityError as err:
                self._misses.remember((size, region))
                notes.append(f"{_where(size, region)}: no capacity ({err})")
                errors.append(err)
                continue
            return LaunchResult(instances=tuple(made), size=size, region=region, notes=tuple(notes))
        raise CapacityError(
            f"creating {spec.count} droplets for pool {target.pool}: no candidate had capacity: "
            + "; ".join(notes)) from (errors[-1] if errors else None)

    def destroy(self, ids: Sequence[str]) -> list[DestroyFailure]:
        # A 404 body comes back without an exception: already gone counts as destroyed.
        return self._each_droplet(ids, "destroying", lambda droplet_id: self._read(
            f"destroying droplet {droplet_id}", lambda: self._client.droplets.destroy(int(droplet_id))))

    def mark_draining(self, ids: Sequence[str]) -> list[DestroyFailure]:
        """Tag each Droplet `fleet-draining`, one call each.  The tag is created the first time
        (assigning a tag that does not exist is a 404); a Droplet gone counts as marked."""

        def mark(droplet_id: str) -> None:
            if _not_found(self._assign_draining(droplet_id)):
                self._read(f"creating tag {DRAINING_TAG}",
                           lambda: self._client.tags.create(body={"name": DRAINING_TAG}))
                self._assign_draining(droplet_id)  # a 404 now: the Droplet is gone

        return self._each_droplet(dict.fromkeys(ids), "tagging", mark)

    def unmark_draining(self, ids: Sequence[str]) -> list[DestroyFailure]:
        """Take the `fleet-draining` tag off each Droplet; a 404 (no such tag, or no such Droplet)
        leaves nothing to take off."""
        def unmark(droplet_id: str) -> None:
            body = {"resources": [{"resource_id": droplet_id, "resource_type": "droplet"}]}
            self._read(f"untagging droplet {droplet_id} {DRAINING_TAG}",
                       lambda: self._client.tags.unassign_resources(tag_id=DRAINING_TAG, body=body))

        return self._each_droplet(dict.fromkeys(ids), "untagging", unmark)

    def _each_droplet(self, ids: Iterable[str], doing: str, call: Callable[[str], Any]) -> list[DestroyFailure]:
        """`call` for each id; the ids that failed, with why.  After an auth error or a rate limit
        the rest are not tried: they would fail the same way."""
        failures: list[DestroyFailure] = []
        stop: ProviderError | None = None
        for droplet_id in ids:
            if stop is not None:
                failures.append(DestroyFailure(droplet_id, stop))
                continue
            if not droplet_id.isdigit():
                failures.append(DestroyFailure(droplet_id, InvalidRequest(
                    f"{doing} droplet {droplet_id!r}: not a DigitalOcean droplet id")))
                continue
            try:
                call(droplet_id)
            except (AuthError, RateLimited) as err:
                stop = err
                failures.append(DestroyFailure(droplet_id, err))
            except ProviderError as err:
                failures.append(DestroyFailure(droplet_id, err))
        return failures

    def _assign_draining(self, droplet_id: str) -> Any:
        body = {"resources": [{"resource_id": droplet_id, "resource_type": "droplet"}]}
        return self._read(f"tagging droplet {droplet_id} {DRAINING_TAG}",
                          lambda: self._client.tags.assign_resources(tag_id=DRAINING_TAG, body=body))

    def headroom(self, target: PoolTarget) -> Headroom:
        try:
            limit = self._droplet_limit()
            # Every Droplet on the account counts, GPU or not, ours or not.
            existing = self._existing_droplets()
        except AuthError:
            raise
        except (ProviderError, KeyError, TypeError, ValueError) as err:
            return Headroom(None, f"droplet limit unknown: {err}")
        return Headroom(max(0, limit - existing),
                        f"account droplet_limit {limit} minus {existing} existing droplets")

    def price(self, size: str, region: str | None = None) -> float | None:
        try:
            info = self._catalog().get(size)
        except AuthError:
            raise
        except ProviderError as err:
            log.warning("provider=digitalocean size=%s price unknown: %s", size, err)
            return None
        if info is None or info.get("price_hourly") is None:
            return None
        return float(info["price_hourly"])

    # ------------------------------------------------------------ create helpers

    def _body(self, target: PoolTarget, token: str) -> dict[str, Any]:
        opts = target.options
        image = opts.get("image")
        if not image:
            raise InvalidRequest(f"pool {target.pool}: DigitalOcean needs an image")
        tags = [f"{FLEET_TAG}:{target.fleet}", f"{POOL_TAG}:{target.pool}", f"{TOKEN_TAG}:{token}"]
        bad = [t for t in tags if not TAG_RE.match(t)]
        if bad:
            raise InvalidRequest(f"pool {target.pool}: tag {bad[0]!r} has characters DigitalOcean "
                                 "tags do not allow (letters, digits, ':', '-', '_')")
        body: dict[str, Any] = {"image": image, "tags": tags}
        if opts.get("ssh_keys"):
            body["ssh_keys"] = list(opts["ssh_keys"])
        user_data = opts.get("user_data")
        if user_data:
            if len(str(user_data).encode()) > MAX_USER_DATA:
                raise InvalidRequest(f"pool {target.pool}: user_data exceeds DigitalOcean's 64 KiB")
            body["user_data"] = str(user_data)
        if opts.get("vpc_uuid"):
            body["vpc_uuid"] = str(opts["vpc_uuid"])
        return body

    def _candidates(self, target: PoolTarget, notes: list[str]) -> list[tuple[str, str | None]]:
        """Sizes × regions in preference order, minus pairs the size catalog rules out."""
        regions: tuple[str | None, ...] = target.regions or (None,)
        try:
            catalog = self._catalog()
        except (AuthError, RateLimited):
            raise
        except ProviderError as err:  # the API itself will say what is unavailable
            notes.append(f"size catalog unavailable ({err}); trying every candidate")
            catalog = {}
        out: list[tuple[str, str | None]] = []
        for size in target.sizes:
            info = catalog.get(size)  # per-contract sizes are absent from the catalog: try them
            for region in regions:
                if info is not None and not info.get("available", True):
                    notes.append(f"{_where(size, region)}: size not available")
                elif info is not None and region and region not in (info.get("regions") or []):
                    notes.append(f"{_where(size, region)}: size not offered in this region")
                else:
                    out.append((size, region))
        return out

    def _launch(self, spec: LaunchSpec, base: dict[str, Any], size: str, region: str | None,
                notes: list[str]) -> list[ProviderInstance]:
        """Create spec.count Droplets in batches of 10; a capacity error before any is made raises."""
        names = [f"{spec.token}-{i}" for i in range(spec.count)]
        made: list[ProviderInstance] = []
        for start in range(0, len(names), BATCH):
            batch = names[start:start + BATCH]
            body = {**base, "names": batch, "size": size}
            if region:
                body["region"] = region
            what = f"creating {len(batch)} droplets of {_where(size, region)} for pool {spec.target.pool}"
            try:
                # One attempt only (no tenacity): a retried POST can duplicate Droplets.
                answer = self._once(what, lambda b=body: self._client.droplets.create(b))
            except ProviderError as err:
                if not made:
                    raise
                notes.append(f"{_where(size, region)}: stopped after {len(made)} of {spec.count}: {err}")
                return made
            droplets = answer.get("droplets") or ([answer["droplet"]] if answer.get("droplet") else [])
            made.extend(self._instance(d, what) for d in droplets)
        return made

    # ------------------------------------------------------------ reads

    def _catalog(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        if self._sizes is not None and now - self._sizes_at < SIZES_TTL_S:
            return self._sizes
        try:
            sizes = self._all_pages("listing droplet sizes", "sizes", self._client.sizes.list, ident="slug")
        except (TransientError, RateLimited):
            if self._sizes is not None:
                return self._sizes  # stale prices beat none
            raise
        self._sizes, self._sizes_at = {s["slug"]: s for s in sizes if "slug" in s}, now
        return self._sizes

    def _droplet_limit(self) -> int:
        now = self._clock()
        if self._limit is None or now - self._limit_at >= ACCOUNT_TTL_S:
            account = self._read("reading the account's droplet limit", self._client.account.get)
            self._limit, self._limit_at = int(account["account"]["droplet_limit"]), now
        return self._limit

    def _existing_droplets(self) -> int:
        """Every Droplet on the account, shared by the pools of one tick (a tick asks for each
        pool's headroom within a moment; the API budget is 5,000 requests an hour)."""
        cached = self._existing_cache
        if cached is not None and self._clock() - cached[0] < COUNT_REUSE_S:
            return cached[1]
        existing = sum(self._total(kind) for kind in ("gpus", "droplets"))
        self._existing_cache = (self._clock(), existing)
        return existing

    def _total(self, kind: str) -> int:
        answer = self._read(f"counting {kind} on the account",
                            lambda: self._client.droplets.list(per_page=1, type=kind))
        return int(answer["meta"]["total"])

    def _all_pages(self, what: str, key: str, call: Callable[..., Any], ident: str = "id",
                   **kw: Any) -> list[dict[str, Any]]:
        """Every page of a listing.  Pages are offsets: a Droplet destroyed between two page
        reads shifts the rest up by one, and a live one is skipped.  `meta.total` changing
        between pages, or fewer distinct `ident`s than it says, shows that: the listing is read again."""
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
            answer = self._read(f"{what} (page {page})",
                                lambda p=page: call(per_page=PER_PAGE, page=p, **kw))
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

    def _instance(self, d: dict[str, Any], what: str) -> ProviderInstance:
        try:
            tags = [t for t in d.get("tags") or [] if isinstance(t, str)]
            keyed = dict(t.split(":", 1) for t in tags if ":" in t)
            size = d.get("size") or {}
            created = d.get("created_at")
            return ProviderInstance(
                id=str(d["id"]), pool=keyed.get(POOL_TAG, ""),
                size=d.get("size_slug") or size.get("slug", ""),
                region=(d.get("region") or {}).get("slug", ""),
                status=STATUS.get(d.get("status", ""), InstanceStatus.BOOTING),
                created_at=datetime.fromisoformat(created) if created else None,
                token=keyed.get(TOKEN_TAG), name=d.get("name", ""),
                price_hourly_usd=float(size["price_hourly"]) if size.get("price_hourly") is not None else None,
                tags=keyed, private_ip=_address(d, "private"), public_ip=_address(d, "public"),
                draining=DRAINING_TAG in tags,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise TransientError(f"{what}: unreadable droplet {d.get('id')!r}: {err!r}") from err

    # ------------------------------------------------------------ calls, errors, rate limits

    def _read(self, what: str, call: Callable[[], T]) -> T:
        """An idempotent call (GET, DELETE): transient failures are retried, bounded."""
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(READ_ATTEMPTS),
            wait=wait_exponential(multiplier=0.5, max=4.0),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(self._once, what, call)

    def _once(self, what: str, call: Callable[[], T]) -> T:
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
                    raise RateLimited(f"{what}: DigitalOcean rate limit (HTTP 429) "
                                      f"after {waits} waits", retry_after_s=wait) from err
                waits += 1
                log.info("provider=digitalocean rate_limited=%s wait_s=%.1f", what, wait)
                self._sleep(wait)
            except AzureError as err:
                self._raise(what, err)

    def _rate_wait(self, err: HttpResponseError) -> float | None:
        headers = err.response.headers if err.response is not None else {}
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

    def _raise(self, what: str, err: AzureError) -> NoReturn:
        """Classify an SDK error into the taxonomy (once, here) and raise it chained."""
        if isinstance(err, HttpResponseError) and err.status_code is not None:
            status = err.status_code
            error_id, message = _error_body(err)
            detail = self._scrub(f"HTTP {status} {error_id}: {message}".strip())
            if status in (401, 403) or isinstance(err, ClientAuthenticationError):
                raise AuthError(f"{what}: DigitalOcean refused the token ({detail})") from err
            if status == 422 and any(w in message.lower() for w in CAPACITY_WORDS):
                raise CapacityError(f"{what}: {detail}") from err
            if status == 422 and "limit" in message.lower():
                raise QuotaExceeded(f"{what}: {detail}") from err
            if status == 408 or status >= 500:
                raise TransientError(f"{what}: {detail}") from err
            raise InvalidRequest(f"{what}: {detail}") from err
        if isinstance(err, (ServiceRequestError, ServiceResponseError)):
            hint = " (it may have taken effect; the next tick finds it by token)" \
                if what.startswith("creating") else ""
            raise TransientError(f"{what}: {type(err).__name__}{hint}: {self._scrub(str(err))}") from err
        raise TransientError(f"{what}: {type(err).__name__}: {self._scrub(str(err))}") from err

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***")


def _error_body(err: HttpResponseError) -> tuple[str, str]:
    try:
        body = err.response.json() if err.response is not None else None
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


def _where(size: str, region: str | None) -> str:
    return f"{size} in {region or 'any region'}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _address(droplet: dict[str, Any], kind: str) -> str | None:
    """The Droplet's first IPv4 address of this type ("public" or "private"); a new Droplet has none."""
    for net in (droplet.get("networks") or {}).get("v4") or []:
        if isinstance(net, dict) and net.get("type") == kind and net.get("ip_address"):
            return str(net["ip_address"])
    return None


def _not_found(answer: Any) -> bool:
    """pydo hands back a 404 as its body (`{"id": "not_found", ...}`) instead of raising."""
    return isinstance(answer, dict) and answer.get("id") == "not_found"
