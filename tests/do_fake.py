"""A stateful fake of the parts of the DigitalOcean API v2 that `fleet` uses, over real HTTP.

It serves `/v2/account`, `/v2/droplets` (list, create, destroy by tag),
`/v2/droplets/{id}` (get, destroy), `/v2/sizes` and `/v2/regions` on 127.0.0.1 with
the real JSON shapes (see ../shared/reference/providers.md §1.10 and
tests/digitalocean-openapi-subset.json; tests/test_do_fake.py validates every answer
against that schema).  Behaviour copied from the real API and its documentation:

- Bearer-token auth (401 `{"id": "Unauthorized", ...}` otherwise).
- `GET /v2/droplets` lists only non-GPU Droplets unless `type=gpus`; `tag_name`
  cannot be combined with `name` or `type`; pages follow `links.pages.next` and
  `meta.total`, `per_page` is capped (200 on the real API; configurable here so a
  test can force several pages).
- `POST /v2/droplets` answers 202 with `droplet` or `droplets`; at most 10 `names`;
  Droplets start `new` and turn `active` `boot_seconds` later on the injected clock.
- Rate limits: `ratelimit-limit/-remaining/-reset` on every answer, an hourly
  limit (429 without `retry-after`, remaining 0) and a per-minute burst limit (429
  with `retry-after`), both measured on the injected clock.
- Account `droplet_limit` enforced on create (422).

Fault injection (one-shot rules matched by method and path, see `Fault`): any status
with a DO error body (429 with `retry-after`, 500, 401, ...), slow answers, and the
lost response of a create that really happened (`Fault.lost()` closes the connection,
`Fault.lost(status=500)` answers 500).  `block(size, region)` makes that pair answer
422 "temporarily unavailable".  `chaos` (a callable) draws random faults for soak tests.
`requests` logs every request and its answer; `created` every Droplet id ever made.
"""

from __future__ import annotations

import functools
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

NAME_RE = re.compile(r"^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$")
TAG_RE = re.compile(r"^[a-zA-Z0-9:_\-]{1,255}$")
MAX_USER_DATA = 64 * 1024
CAPACITY_MESSAGE = ("The size you selected is temporarily unavailable in this region. "
                    "Please select a different size or region.")


def _size(slug: str, price_hourly: float, regions: list[str], *, vcpus: int, memory: int, disk: int,
          description: str, gpu: tuple[int, str, int] | None = None) -> dict[str, Any]:
    size: dict[str, Any] = {
        "slug": slug, "memory": memory, "vcpus": vcpus, "disk": disk, "transfer": 15.0,
        "price_monthly": round(price_hourly * 672, 2), "price_hourly": price_hourly,
        "regions": regions, "available": True, "description": description,
        "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}],
    }
    if gpu:
        count, model, vram = gpu
        size["gpu_info"] = {"count": count, "model": model, "vram": {"amount": vram, "unit": "gib"}}
    return size


# Prices from the DO pricing doc (May 2026, ../shared/reference/providers.md §1.5).
DEFAULT_SIZES: list[dict[str, Any]] = [
    _size("s-1vcpu-1gb", 0.00893, ["nyc1", "nyc2", "tor1", "ams3"], vcpus=1, memory=1024, disk=25,
          description="Basic"),
    _size("gpu-h100x1-80gb", 3.39, ["tor1", "nyc2"], vcpus=20, memory=245760, disk=720,
          description="H100 GPU - 1X", gpu=(1, "nvidia_h100", 80)),
    _size("gpu-l40sx1-48gb", 1.57, ["tor1", "nyc2"], vcpus=8, memory=65536, disk=500,
          description="L40S GPU - 1X", gpu=(1, "nvidia_l40s", 48)),
    _size("gpu-h100x8-640gb", 23.92, ["nyc2"], vcpus=160, memory=1966080, disk=2046,
          description="H100 GPU - 8X", gpu=(8, "nvidia_h100", 640)),
    _size("gpu-mi300x1-192gb", 1.99, ["atl1"], vcpus=20, memory=245760, disk=720,
          description="AMD MI300X - 1X", gpu=(1, "amd_mi300x", 192)),
]
REGION_NAMES = {"nyc1": "New York 1", "nyc2": "New York 2", "tor1": "Toronto 1",
                "ams3": "Amsterdam 3", "atl1": "Atlanta 1"}
IMAGES = {"gpu-h100x1-base": (166407044, "AI/ML Ready H100x1"),
          "gpu-h100x8-base": (166407045, "AI/ML Ready H100x8"),
          "gpu-amd-base": (166407046, "AI/ML Ready AMD"),
          "ubuntu-24-04-x64": (166407047, "24.04 (LTS) x64")}


@dataclass
class Fault:
    """What an injected rule does to one matching request."""

    status: int = 0  # answer this status with a DO error body (0: no status fault)
    error_id: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wall-clock delay before answering (slow responses)
    response_lost: bool = False  # perform the request, then lose the answer

    @classmethod
    def http(cls, status: int, message: str = "", error_id: str = "", **headers: str) -> Fault:
        ids = {401: "Unauthorized", 403: "forbidden", 404: "not_found", 422: "unprocessable_entity",
               429: "too_many_requests", 500: "server_error", 503: "service_unavailable"}
        return cls(status=status, error_id=error_id or ids.get(status, "error"),
                   message=message or f"injected {status}",
                   headers={k.replace("_", "-"): v for k, v in headers.items()})

    @classmethod
    def rate_limited(cls, retry_after: int | None = 1, remaining: int | None = None,
                     reset: int | None = None) -> Fault:
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        if remaining is not None:
            headers["ratelimit-remaining"] = str(remaining)
        if reset is not None:
            headers["ratelimit-reset"] = str(reset)
        return cls(status=429, error_id="too_many_requests", message="API Rate limit exceeded.",
                   headers=headers)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        return cls(delay_s=seconds)

    @classmethod
    def lost(cls, status: int = 0) -> Fault:
        """The request takes effect; its answer is a dropped connection (or `status`)."""
        return cls(response_lost=True, status=status, error_id="server_error" if status else "",
                   message="injected: response lost" if status else "")


@dataclass
class _Rule:
    method: str
    path: re.Pattern[str]
    fault: Fault
    times: int


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int = 0  # 0: the connection was dropped
    response: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None




class FakeDigitalOcean:
    def __init__(
        self,
        *,
        token: str = "dop_v1_fake_token_0123456789",
        clock: Callable[[], float] = time.time,
        boot_seconds: float = 60.0,
        max_per_page: int = 200,
        droplet_limit: int = 100,
        hourly_limit: int = 5000,
        burst_limit: int = 250,
        sizes: list[dict[str, Any]] | None = None,
    ):
        self.token = token
        self.clock = clock
        self.boot_seconds = boot_seconds
        self.max_per_page = max_per_page
        self.droplet_limit = droplet_limit
        self.hourly_limit = hourly_limit
        self.burst_limit = burst_limit
        self.sizes = [dict(s) for s in (sizes or DEFAULT_SIZES)]
        self.droplets: dict[int, dict[str, Any]] = {}  # id -> stored droplet (with "_ready_at")
        self.created: list[int] = []  # every id ever made, destroyed or not
        self.tag_names: set[str] = set()  # tags that exist on the account (POST /v2/tags, or a create's)
        self.blocked: set[tuple[str, str]] = set()  # (size, region) answering 422 capacity
        self.requests: list[LoggedRequest] = []
        self._rules: list[_Rule] = []
        # Random faults for soak tests: called for each request no rule matched; a Fault or None.
        self.chaos: Callable[[str, str], Fault | None] | None = None
        self._stamps: list[float] = []  # request times, for the rate limits
        self._next_id = 448_543_583
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeDigitalOcean:
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="do-fake",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeDigitalOcean:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ test handles

    def inject(self, method: str, path: str, fault: Fault, times: int = 1) -> None:
        """Apply `fault` to the next `times` requests whose path matches the regex `path`."""
        with self._lock:
            self._rules.append(_Rule(method.upper(), re.compile(path), fault, times))

    def block(self, size: str, region: str) -> None:
        with self._lock:
            self.blocked.add((size, region))

    def add_droplet(self, name: str, size: str, region: str, tags: list[str],
                    image: str = "gpu-h100x1-base", status: str | None = None) -> int:
        """Create a Droplet directly (someone else's machine, a pre-existing one)."""
        with self._lock:
            droplet = self._make(name, size, region, image, tags, vpc_uuid=None)
            if status:
                droplet["status"] = status
                droplet["_ready_at"] = None
            return droplet["id"]

    def set_status(self, droplet_id: int, status: str) -> None:
        with self._lock:
            self.droplets[droplet_id]["status"] = status
            self.droplets[droplet_id]["_ready_at"] = None

    def live(self) -> list[dict[str, Any]]:
        """Every Droplet on the account, as the API would render it."""
        with self._lock:
            return [self._render(d) for d in self.droplets.values()]

    def calls(self, method: str | None = None, path: str | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r.method == method.upper())
                    and (path is None or re.fullmatch(path, r.path))]

    # ------------------------------------------------------------ state

    def _size(self, slug: str) -> dict[str, Any] | None:
        return next((s for s in self.sizes if s["slug"] == slug), None)

    def _make(self, name: str, size_slug: str, region: str, image: str, tags: list[str],
              vpc_uuid: str | None) -> dict[str, Any]:
        size = self._size(size_slug)
        assert size is not None
        image_id, image_name = IMAGES.get(image, (1, image))
        now = self.clock()
        droplet_id = self._next_id
        self._next_id += 1
        public_size = {k: v for k, v in size.items()}
        droplet: dict[str, Any] = {
            "id": droplet_id, "name": name, "memory": size["memory"], "vcpus": size["vcpus"],
            "disk": size["disk"], "disk_info": size["disk_info"], "locked": False, "status": "new",
            "kernel": None,
            "created_at": datetime.fromtimestamp(int(now), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "features": ["droplet_agent", "private_networking"], "backup_ids": [],
            "next_backup_window": None, "snapshot_ids": [], "volume_ids": [], "tags": list(tags),
            "vpc_uuid": vpc_uuid or "e2fd5ee5-a7f2-4b32-9b4a-1b2c3d4e5f60",
            "image": {"id": image_id, "name": image_name, "slug": image, "type": "base",
                      "distribution": "Ubuntu", "public": True, "regions": [region],
                      "created_at": "2024-09-30T15:23:36Z", "min_disk_size": 25,
                      "size_gigabytes": 10.0, "status": "available", "tags": []},
            "size": public_size, "size_slug": size_slug,
            "networks": {"v4": [], "v6": []},
            "region": {"name": REGION_NAMES.get(region, region), "slug": region,
                       "features": ["backups", "ipv6", "metadata"], "available": True,
                       "sizes": [s["slug"] for s in self.sizes if region in s["regions"]]},
            "_ready_at": now + self.boot_seconds,
        }
        if "gpu_info" in size:
            droplet["gpu_info"] = size["gpu_info"]
        self.droplets[droplet_id] = droplet
        self.created.append(droplet_id)
        return droplet

    def _render(self, droplet: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in droplet.items() if not k.startswith("_")}
        ready_at = droplet["_ready_at"]
        if droplet["status"] == "new" and ready_at is not None and self.clock() >= ready_at:
            out["status"] = "active"
            last = droplet["id"] % 250
            out["networks"] = {"v4": [{"ip_address": f"192.0.2.{last}", "netmask": "255.255.255.0",
                                       "gateway": "192.0.2.1", "type": "public"},
                                      {"ip_address": f"10.116.0.{last}", "netmask": "255.255.240.0",
                                       "gateway": "<nil>", "type": "private"}], "v6": []}
        return out

    # ------------------------------------------------------------ rate limits

    def _ratelimit(self) -> tuple[dict[str, str], int | None]:
        """Count this request; return the headers and, when over a limit, a retry-after (or -1)."""
        now = self.clock()
        self._stamps = [t for t in self._stamps if t > now - 3600]
        minute = [t for t in self._stamps if t > now - 60]
        over: int | None = None
        if len(self._stamps) >= self.hourly_limit:
            over = -1  # hourly: no retry-after, wait for ratelimit-reset
        elif len(minute) >= self.burst_limit:
            over = max(1, int(minute[0] + 60 - now + 0.999))
        else:
            self._stamps.append(now)
        remaining = max(0, self.hourly_limit - len(self._stamps))
        reset = int((self._stamps[0] if self._stamps else now) + 3600)
        headers = {"ratelimit-limit": str(self.hourly_limit),
                   "ratelimit-remaining": str(remaining), "ratelimit-reset": str(reset)}
        return headers, over

    # ------------------------------------------------------------ request handling

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any,
               auth: str | None) -> tuple[int, Any, dict[str, str], Fault | None]:
        """The answer to one request: (status, json body or None, headers, fault applied)."""
        with self._lock:
            fault = self._take_fault(method, path)
            headers, over = self._ratelimit()
            if fault and fault.status and not fault.response_lost:
                return fault.status, {"id": fault.error_id, "message": fault.message}, \
                    {**headers, **fault.headers}, fault
            if auth != f"Bearer {self.token}":
                return 401, {"id": "Unauthorized", "message": "Unable to authenticate you"}, headers, fault
            if over is not None:
                if over > 0:
                    headers["retry-after"] = str(over)
                return 429, {"id": "too_many_requests", "message": "API Rate limit exceeded."}, \
                    headers, fault
            status, payload = self._route(method, path, query, body)
            if fault and fault.response_lost and fault.status:
                return fault.status, {"id": fault.error_id, "message": fault.message}, headers, fault
            return status, payload, headers, fault

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for rule in self._rules:
            if rule.times > 0 and rule.method == method and rule.path.fullmatch(path):
                rule.times -= 1
                return rule.fault
        return self.chaos(method, path) if self.chaos else None

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        if path == "/v2/account" and method == "GET":
            return 200, {"account": {
                "droplet_limit": self.droplet_limit, "floating_ip_limit": 3,
                "email": "fleet@example.com", "name": "fleet", "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef",
                "email_verified": True, "status": "active", "status_message": ""}}
        if path == "/v2/droplets" and method == "GET":
            return self._list_droplets(query)
        if path == "/v2/droplets" and method == "POST":
            return self._create(body)
        if path == "/v2/droplets" and method == "DELETE":
            tag = _one(query, "tag_name")
            if not tag:
                return _error(400, "bad_request", "tag_name is required")
            for droplet_id in [i for i, d in self.droplets.items() if tag in d["tags"]]:
                del self.droplets[droplet_id]
            return 204, None
        match = re.fullmatch(r"/v2/droplets/(\d+)", path)
        if match:
            droplet = self.droplets.get(int(match.group(1)))
            if droplet is None:
                return _error(404, "not_found", "The resource you were accessing could not be found.")
            if method == "GET":
                return 200, {"droplet": self._render(droplet)}
            if method == "DELETE":
                del self.droplets[droplet["id"]]
                return 204, None
        if path == "/v2/tags" and method == "POST":
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str) or not TAG_RE.match(name):
                return _error(400, "bad_request", "tag name may hold letters, numbers, colons, dashes and "
                                                  "underscores")
            self.tag_names.add(name)  # an existing name is answered like a new one
            tagged = sum(1 for d in self.droplets.values() if name in d["tags"])
            return 201, {"tag": {"name": name, "resources": {"count": tagged, "droplets": {"count": tagged}}}}
        match = re.fullmatch(r"/v2/tags/([^/]+)/resources", path)
        if match and method in ("POST", "DELETE"):
            return self._tag_resources(match.group(1), body, untag=method == "DELETE")
        if path == "/v2/sizes" and method == "GET":
            return self._page(query, "sizes", self.sizes)
        if path == "/v2/regions" and method == "GET":
            regions = sorted({r for s in self.sizes for r in s["regions"]})
            return self._page(query, "regions", [
                {"name": REGION_NAMES.get(r, r), "slug": r, "features": ["backups", "ipv6", "metadata"],
                 "available": True, "sizes": [s["slug"] for s in self.sizes if r in s["regions"]]}
                for r in regions])
        return _error(404, "not_found", "The resource you were accessing could not be found.")

    def _tag_resources(self, tag: str, body: Any, untag: bool = False) -> tuple[int, Any]:
        """POST (DELETE) /v2/tags/{tag}/resources: 404 for a tag that does not exist (or a
        Droplet that does not), else 204; tagging (untagging) twice changes nothing."""
        if tag not in self.tag_names:
            return _error(404, "not_found", "The resource you were accessing could not be found.")
        resources = body.get("resources") if isinstance(body, dict) else None
        if not isinstance(resources, list) or not resources:
            return _error(400, "bad_request", "resources is required")
        targets = []
        for item in resources:
            if not isinstance(item, dict) or item.get("resource_type") != "droplet":
                return _error(422, "unprocessable_entity", "only droplets are tagged by this fake")
            droplet_id = str(item.get("resource_id", ""))
            droplet = self.droplets.get(int(droplet_id)) if droplet_id.isdigit() else None
            if droplet is None:
                return _error(404, "not_found", "The resource you were accessing could not be found.")
            targets.append(droplet)
        for droplet in targets:
            if untag and tag in droplet["tags"]:
                droplet["tags"].remove(tag)
            elif not untag and tag not in droplet["tags"]:
                droplet["tags"].append(tag)
        return 204, None

    def _list_droplets(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        tag, name, kind = _one(query, "tag_name"), _one(query, "name"), _one(query, "type")
        if tag and (name or kind):
            return _error(422, "unprocessable_entity", "tag_name can not be combined with name or type")
        if kind not in (None, "droplets", "gpus"):
            return _error(422, "unprocessable_entity", f"invalid type {kind!r}")
        want_gpu = kind == "gpus"
        # Like the documented API: GPU Droplets are only listed with type=gpus.
        rows = [self._render(d) for d in self.droplets.values()
                if ("gpu_info" in d) == want_gpu
                and (tag is None or tag in d["tags"]) and (name is None or d["name"] == name)]
        return self._page(query, "droplets", rows)

    def _page(self, query: dict[str, list[str]], key: str, rows: list[dict[str, Any]]) -> tuple[int, Any]:
        try:
            per_page = int(_one(query, "per_page") or 20)
            page = int(_one(query, "page") or 1)
        except ValueError:
            return _error(400, "bad_request", "per_page and page must be integers")
        if not 1 <= per_page <= 200 or page < 1:
            return _error(400, "bad_request", "per_page must be 1..200 and page >= 1")
        per_page = min(per_page, self.max_per_page)
        last = max(1, -(-len(rows) // per_page))
        chunk = rows[(page - 1) * per_page: page * per_page]
        pages: dict[str, str] = {}

        def link(n: int) -> str:
            params = {k: v[0] for k, v in query.items()}
            params.update(page=str(n), per_page=str(per_page))
            return f"https://api.digitalocean.com/v2/{key}?{urlencode(params)}"

        if page > 1:
            pages.update(first=link(1), prev=link(page - 1))
        if page < last:
            pages.update(next=link(page + 1), last=link(last))
        return 200, {key: chunk, "links": {"pages": pages} if pages else {}, "meta": {"total": len(rows)}}

    def _create(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return _error(400, "bad_request", "the request body must be a JSON object")
        if ("name" in body) == ("names" in body):
            return _error(422, "unprocessable_entity", "give exactly one of name or names")
        names = [body["name"]] if "name" in body else body["names"]
        if not isinstance(names, list) or not 1 <= len(names) <= 10:
            return _error(422, "unprocessable_entity", "names must hold 1 to 10 names")
        bad = [n for n in names if not isinstance(n, str) or not NAME_RE.match(n) or len(n) > 255]
        if bad:
            return _error(422, "unprocessable_entity", f"Name is invalid: {bad[0]!r}")
        size, region, image = body.get("size"), body.get("region"), body.get("image")
        size_info = self._size(size) if isinstance(size, str) else None
        if size_info is None:
            return _error(422, "unprocessable_entity", "You specified an invalid size for Droplet creation.")
        if image not in IMAGES:
            return _error(422, "unprocessable_entity", "You specified an invalid image for Droplet creation.")
        tags = body.get("tags") or []
        if not all(isinstance(t, str) and TAG_RE.match(t) for t in tags):
            return _error(422, "unprocessable_entity", "tags may hold letters, numbers, colons, dashes "
                          "and underscores only")
        if len(str(body.get("user_data", "")).encode()) > MAX_USER_DATA:
            return _error(422, "unprocessable_entity", "user_data may not exceed 64 KiB")
        if region is None:
            region = size_info["regions"][0]
        if region not in size_info["regions"] or not size_info["available"]:
            return _error(422, "unprocessable_entity", "The size you selected is not available in this region.")
        if (size, region) in self.blocked:
            return _error(422, "unprocessable_entity", CAPACITY_MESSAGE)
        if len(self.droplets) + len(names) > self.droplet_limit:
            return _error(422, "unprocessable_entity",
                          "creating this/these droplet(s) will exceed your droplet limit")
        self.tag_names.update(tags)  # a create's tags are created if missing
        made = [self._render(self._make(n, size, region, image, tags, body.get("vpc_uuid"))) for n in names]
        links = {"actions": [{"id": 7515 + d["id"] % 1000, "rel": "create",
                              "href": f"https://api.digitalocean.com/v2/actions/{7515 + d['id'] % 1000}"}
                             for d in made]}
        if "name" in body:
            return 202, {"droplet": made[0], "links": links}
        return 202, {"droplets": made, "links": links}


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _error(status: int, error_id: str, message: str) -> tuple[int, Any]:
    return status, {"id": error_id, "message": message}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeDigitalOcean
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: avoid the 40 ms ACK delay

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (stdlib signature)
        pass  # the request log is `fake.requests`

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        method = self.command
        entry = LoggedRequest(method=method, path=parts.path, query=query, body=body)
        status, payload, headers, fault = self.fake.handle(
            method, parts.path, query, body, self.headers.get("Authorization"))
        with self.fake._lock:
            self.fake.requests.append(entry)
        if fault and fault.delay_s:
            time.sleep(fault.delay_s)  # a slow server: the client's read timeout is what is tested
        if fault and fault.response_lost and not fault.status:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        entry.status, entry.response, entry.headers = status, payload, headers
        data = b"" if payload is None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if payload is not None:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its read timeout): nothing to answer

    do_GET = do_POST = do_DELETE = do_PUT = _serve


# ---------------------------------------------------------------- honesty check against the OpenAPI spec

SPEC_PATH = Path(__file__).with_name("digitalocean-openapi-subset.json")
TAGS_SPEC_PATH = Path(__file__).with_name("digitalocean-openapi-tags.json")
_PATH_TEMPLATES = [("/v2/tags/{tag_id}/resources", re.compile(r"/v2/tags/[^/]+/resources")),
                   ("/v2/tags", re.compile(r"/v2/tags")),
                   ("/v2/droplets/{droplet_id}", re.compile(r"/v2/droplets/\d+")),
                   ("/v2/droplets", re.compile(r"/v2/droplets")), ("/v2/account", re.compile(r"/v2/account")),
                   ("/v2/sizes", re.compile(r"/v2/sizes")), ("/v2/regions", re.compile(r"/v2/regions"))]


def json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema → JSON Schema: `nullable: true` becomes a null type.

    Also undoes a YAML 1.1 artifact of the spec's conversion: the Droplet status enum
    `[new, active, off, archive]` reached the JSON file as `[..., false, ...]` (`off`
    read as a boolean), so a `false` inside a string enum is turned back into "off".
    """
    if isinstance(node, list):
        return [json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: json_schema(v) for k, v in node.items() if k not in ("nullable", "example", "discriminator")}
    if out.get("type") == "string" and isinstance(out.get("enum"), list):
        out["enum"] = ["off" if v is False else v for v in out["enum"]]
    if node.get("nullable") is True:
        if "type" in out:
            out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [{"type": "null"}, out]}
    return out


_VALIDATORS: dict[int, Any] = {}


@functools.cache
def _spec() -> dict[str, Any]:
    spec = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    spec["paths"].update(json.loads(TAGS_SPEC_PATH.read_text(encoding="utf-8"))["paths"])
    return spec


class OpenApiCheck:
    """Validates logged exchanges (request query and body, answer and headers) against the spec."""

    def __init__(self) -> None:
        from jsonschema import Draft202012Validator

        self._validator = Draft202012Validator
        self.spec = _spec()

    def _operation(self, method: str, path: str) -> dict[str, Any]:
        for template, pattern in _PATH_TEMPLATES:
            if pattern.fullmatch(path):
                op = self.spec["paths"][template].get(method.lower())
                if op is None:
                    raise AssertionError(f"{method} {template} is not in the spec")
                return op
        raise AssertionError(f"{method} {path} is not in the spec")

    def _check(self, schema: Any, value: Any, what: str) -> None:
        validator = _VALIDATORS.get(id(schema))
        if validator is None:  # the spec is loaded once, so its nodes' ids are stable keys
            validator = _VALIDATORS[id(schema)] = self._validator(json_schema(schema))
        errors = sorted(validator.iter_errors(value), key=lambda e: e.path)
        if errors:
            first = errors[0]
            raise AssertionError(f"{what}: {first.message} at {list(first.absolute_path)}")

    def request(self, entry: LoggedRequest) -> None:
        op = self._operation(entry.method, entry.path)
        what = f"request {entry.method} {entry.path}"
        for param in op.get("parameters", []):
            if param["in"] == "query" and param["name"] in entry.query:
                raw = entry.param(param["name"])
                kind = param["schema"].get("type")
                value: Any = int(raw) if kind == "integer" and raw is not None and raw.isdigit() else raw
                self._check(param["schema"], value, f"{what} query {param['name']}")
        unknown = set(entry.query) - {p["name"] for p in op.get("parameters", [])}
        assert not unknown, f"{what}: query parameters not in the spec: {unknown}"
        if "requestBody" in op:
            self._check(op["requestBody"]["content"]["application/json"]["schema"], entry.body, what)

    def response(self, entry: LoggedRequest) -> None:
        if entry.status == 0:
            return  # a dropped connection has no answer
        op = self._operation(entry.method, entry.path)
        what = f"answer {entry.status} to {entry.method} {entry.path}"
        spec = op["responses"].get(str(entry.status)) or op["responses"]["default"]
        for name in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
            assert entry.headers.get(name, "").isdigit(), f"{what}: header {name} is not an integer"
        content = spec.get("content")
        if content is None:
            assert entry.response is None, f"{what}: the spec has no body here"
            return
        self._check(content["application/json"]["schema"], entry.response, what)

    def all(self, entries: list[LoggedRequest], *, requests: bool = True) -> int:
        """Check every entry's answer (and request, unless the test sent bad ones on purpose)."""
        for entry in entries:
            if requests:
                self.request(entry)
            self.response(entry)
        return len(entries)
