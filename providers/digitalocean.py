"""DigitalOcean GPU Droplets through pydo.  See providers/base.py for the contract.

This module and providers/digitalocean_http.py (requests, retries, rate limits, error
classes) are the only ones that import pydo.  Facts and traps it relies on are in
../shared/reference/providers.md §1:

- A create is never retried: the next tick's reconcile finds its Droplets by token.
- GPU Droplets are only listed with `type="gpus"` (and `tag_name` cannot be combined
  with `type`), so a listing is `type=gpus` filtered on the client, plus `tag_name`
  for non-GPU sizes, every page at `per_page=200`.
- `droplets.destroy` returns a 404 body instead of raising: that id is gone.
- Launch candidates (size x region) are walked by `providers.base.CapacityWalk`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from providers.base import (
    DRAINING_TAG,
    FLEET_TAG,
    POOL_TAG,
    TOKEN_TAG,
    AuthError,
    BillingRule,
    Capabilities,
    CapacityMemory,
    CapacityWalk,
    DestroyFailure,
    ErrorKind,
    Headroom,
    InstanceStatus,
    InvalidRequest,
    LaunchResult,
    LaunchSpec,
    PoolTarget,
    ProviderError,
    ProviderInstance,
    TransientError,
)
from providers.digitalocean_http import (  # noqa: F401  (re-exported: the tests read these)
    MAX_RATE_WAIT_S,
    PER_PAGE,
    RATE_LIMIT_WAITS,
    READ_ATTEMPTS,
    DigitalOceanHttp,
)

log = logging.getLogger(__name__)

COUNT_REUSE_S = 5.0  # an account-wide count is reused this long (one tick)
BATCH = 10  # at most 10 `names` per create
MAX_USER_DATA = 64 * 1024
SIZES_TTL_S = 300.0
ACCOUNT_TTL_S = 300.0  # the droplet limit changes rarely (a support ticket); the counts are read every time
TAG_RE = re.compile(r"^[a-zA-Z0-9:_\-]{1,255}$")
STATUS = {"new": InstanceStatus.BOOTING, "active": InstanceStatus.READY,
          "off": InstanceStatus.STOPPED, "archive": InstanceStatus.STOPPED}
# After one of these the rest of a batch is not tried: it would fail the same way.
STOPS_A_BATCH = frozenset({ErrorKind.AUTH, ErrorKind.RATE_LIMITED})
# A size catalog failing this way fails the call too (no guessing past bad credentials or a limit).
CATALOG_FATAL = STOPS_A_BATCH


class DigitalOceanProvider:
    name = "digitalocean"
    billing = BillingRule(min_seconds=60.0)
    # Prices come from the API's size catalog at run time; a powered-off Droplet is billed in full.
    capabilities = Capabilities(local_prices=False, quotas=True, stop_start=True, bills_stopped_in_full=True)

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
        self._clock = clock
        self._http = DigitalOceanHttp(token=token, api_url=api_url, timeout_s=timeout_s, clock=clock, sleep=sleep)
        self._client = self._http.client
        self._walk: CapacityWalk[tuple[str, str | None]] = CapacityWalk(
            CapacityMemory(capacity_miss_ttl_s, clock), where=lambda c: _where(*c),
            quota_key=lambda c: "the account's droplet_limit", detail=str)
        self._existing_cache: tuple[float, int] | None = None
        self._sizes: dict[str, dict[str, Any]] | None = None
        self._sizes_at = 0.0
        self._limit: int | None = None
        self._limit_at = 0.0

    # ------------------------------------------------------------ the contract

    def list_instances(self, fleet: str) -> list[ProviderInstance]:
        tag = f"{FLEET_TAG}:{fleet}"
        what = f"listing droplets tagged {tag}"
        found: dict[int, dict[str, Any]] = {}
        for droplet in self._http.all_pages(what, "droplets", self._client.droplets.list, type="gpus"):
            if tag in (droplet.get("tags") or []):
                found[droplet["id"]] = droplet
        # Non-GPU Droplets (a pool may use a CPU size) are only in the default listing.
        for droplet in self._http.all_pages(what, "droplets", self._client.droplets.list, tag_name=tag):
            found[droplet["id"]] = droplet
        return [self._instance(d, what) for d in found.values()]

    def create(self, spec: LaunchSpec) -> LaunchResult:
        self._existing_cache = None  # the count changes now
        target = spec.target
        body = self._body(target, spec.token)
        notes: list[str] = []
        candidates = self._candidates(target, notes)
        # `spec.resume` is ignored: a Droplet create has no idempotency key to answer a retry with.
        landed = self._walk.run(candidates, lambda c: self._launch(spec, body, c[0], c[1], notes),
                                what=f"creating {spec.count} droplets for pool {target.pool}", notes=notes)
        size, region = landed.candidate
        return LaunchResult(instances=landed.instances, size=size, region=region, notes=landed.notes)

    def destroy(self, ids: Sequence[str]) -> list[DestroyFailure]:
        # A 404 body comes back without an exception: already gone counts as destroyed.
        return self._each_droplet(ids, "destroying", lambda droplet_id: self._http.read(
            f"destroying droplet {droplet_id}", lambda: self._client.droplets.destroy(int(droplet_id))))

    def mark_draining(self, ids: Sequence[str]) -> list[DestroyFailure]:
        """Tag each Droplet `fleet-draining`, one call each.  The tag is created the first time
        (assigning a tag that does not exist is a 404); a Droplet gone counts as marked."""

        def mark(droplet_id: str) -> None:
            if _not_found(self._assign_draining(droplet_id)):
                self._http.read(f"creating tag {DRAINING_TAG}",
                           lambda: self._client.tags.create(body={"name": DRAINING_TAG}))
                self._assign_draining(droplet_id)  # a 404 now: the Droplet is gone

        return self._each_droplet(dict.fromkeys(ids), "tagging", mark)

    def unmark_draining(self, ids: Sequence[str]) -> list[DestroyFailure]:
        """Take the `fleet-draining` tag off each Droplet; a 404 (no such tag, or no such Droplet)
        leaves nothing to take off."""
        def unmark(droplet_id: str) -> None:
            body = {"resources": [{"resource_id": droplet_id, "resource_type": "droplet"}]}
            self._http.read(f"untagging droplet {droplet_id} {DRAINING_TAG}",
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
            except ProviderError as err:
                failures.append(DestroyFailure(droplet_id, err))
                if err.kind in STOPS_A_BATCH:
                    stop = err
        return failures

    def _assign_draining(self, droplet_id: str) -> Any:
        body = {"resources": [{"resource_id": droplet_id, "resource_type": "droplet"}]}
        return self._http.read(f"tagging droplet {droplet_id} {DRAINING_TAG}",
                          lambda: self._client.tags.assign_resources(tag_id=DRAINING_TAG, body=body))

    def headroom(self, target: PoolTarget) -> Headroom:
        try:
            limit = self._droplet_limit()
            # Every Droplet on the account counts, GPU or not, ours or not.
            existing = self._existing_droplets()
        except ProviderError as err:
            if err.kind is ErrorKind.AUTH:
                raise
            return Headroom(None, f"droplet limit unknown: {err}")
        return Headroom(max(0, limit - existing),
                        f"account droplet_limit {limit} minus {existing} existing droplets")

    def price(self, size: str, region: str | None = None) -> float | None:
        try:
            info = self._catalog().get(size)
        except ProviderError as err:
            if err.kind is ErrorKind.AUTH:
                raise
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
        except ProviderError as err:  # the API itself will say what is unavailable
            if err.kind in CATALOG_FATAL:
                raise
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
                answer = self._http.once(what, _create_call(self._client, body))
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
            sizes = self._http.all_pages("listing droplet sizes", "sizes", self._client.sizes.list, ident="slug")
        except ProviderError as err:
            if self._sizes is not None and err.kind in (ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED):
                return self._sizes  # stale prices beat none
            raise
        self._sizes, self._sizes_at = {s["slug"]: s for s in sizes if "slug" in s}, now
        return self._sizes

    def _droplet_limit(self) -> int:
        now = self._clock()
        if self._limit is None or now - self._limit_at >= ACCOUNT_TTL_S:
            account = self._http.read("reading the account's droplet limit", self._client.account.get)
            self._limit, self._limit_at = _field_int(account, "reading the account's droplet limit",
                                                     "account", "droplet_limit"), now
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
        what = f"counting {kind} on the account"
        answer = self._http.read(what, lambda: self._client.droplets.list(per_page=1, type=kind))
        return _field_int(answer, what, "meta", "total")

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


def _create_call(client: Any, body: dict[str, Any]) -> Callable[[], Any]:
    return lambda: client.droplets.create(body)


def _field_int(answer: Any, what: str, *path: str) -> int:
    """answer[path...] as an int; an answer without it is unreadable (TransientError)."""
    value = answer
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TransientError(f"{what}: the answer has no {'.'.join(path)}")
    try:
        return int(value)
    except ValueError as err:
        raise TransientError(f"{what}: {'.'.join(path)} is {value!r}, not a number") from err


def _where(size: str, region: str | None) -> str:
    return f"{size} in {region or 'any region'}"


def _address(droplet: dict[str, Any], kind: str) -> str | None:
    """The Droplet's first IPv4 address of this type ("public" or "private"); a new Droplet has none."""
    for net in (droplet.get("networks") or {}).get("v4") or []:
        if isinstance(net, dict) and net.get("type") == kind and net.get("ip_address"):
            return str(net["ip_address"])
    return None


def _not_found(answer: Any) -> bool:
    """pydo hands back a 404 as its body (`{"id": "not_found", ...}`) instead of raising."""
    return isinstance(answer, dict) and answer.get("id") == "not_found"
