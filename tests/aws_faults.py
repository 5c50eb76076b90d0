"""What moto lacks, injected at botocore's HTTP layer, plus a Service Quotas responder.

- `Ec2Faults(client)`: one `before-send` hook on an EC2 client that records every
  request's parameters (what the adapter really sent), answers matching requests
  with real EC2 error XML (which then goes through botocore's parsing), and makes
  moto fill MaxCount: moto launches exactly MinCount, so the hook rewrites
  MinCount to min(MaxCount, capacity) before the request leaves, as EC2 would fill.
- `QuotaResponder`: a local HTTP server speaking the Service Quotas JSON protocol
  (moto only implements ServiceCode "vpc"), for the adapter's real quota client.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode

from botocore.awsrequest import AWSResponse

ERROR_XML = ('<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
             '<Message>{message}</Message></Error></Errors><RequestID>injected</RequestID></Response>')


class _RawBody:
    """The minimal urllib3-like body botocore reads."""

    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_: Any):
        yield self._body


def error_response(url: str, code: str, status: int, message: str = "injected by the test") -> AWSResponse:
    body = ERROR_XML.format(code=code, message=message).encode()
    return AWSResponse(url, status, {}, _RawBody(body))


@dataclass
class _Rule:
    action: str
    code: str
    status: int
    times: int
    when: Callable[[dict[str, str]], bool]
    message: str


@dataclass
class Ec2Faults:
    client: Any
    capacity: int | None = None  # None: EC2 fills MaxCount; k: at most k per run_instances
    sent: list[dict[str, str]] = field(default_factory=list)
    rules: list[_Rule] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client.meta.events.register("before-send.ec2", self._hook, unique_id=f"faults-{id(self)}")

    def fail(self, action: str, code: str, status: int, *, times: int = 1_000_000,
             when: Callable[[dict[str, str]], bool] = lambda p: True, message: str = "injected by the test") -> None:
        self.rules.append(_Rule(action, code, status, times, when, message))

    def no_capacity(self, instance_type: str, *, spot_only: bool = False, subnet: str | None = None) -> None:
        """InsufficientInstanceCapacity for this type (only spot requests, only one subnet, if asked)."""
        def when(p: dict[str, str]) -> bool:
            return (p.get("InstanceType") == instance_type
                    and (not spot_only or p.get("InstanceMarketOptions.MarketType") == "spot")
                    and (subnet is None or p.get("SubnetId") == subnet))
        self.fail("RunInstances", "InsufficientInstanceCapacity", 500, when=when,
                  message=f"We currently do not have sufficient {instance_type} capacity")

    def calls(self, action: str) -> list[dict[str, str]]:
        return [p for p in self.sent if p.get("Action") == action]

    def _hook(self, request: Any, **_: Any) -> AWSResponse | None:
        body = request.body or b""
        pairs = parse_qsl(body.decode() if isinstance(body, bytes) else body, keep_blank_values=True)
        params = dict(pairs)
        self.sent.append(params)
        for rule in self.rules:
            if rule.times > 0 and rule.action == params.get("Action") and rule.when(params):
                rule.times -= 1
                return error_response(request.url, rule.code, rule.status, rule.message)
        if params.get("Action") == "RunInstances":
            wanted = int(params["MaxCount"])
            fill = wanted if self.capacity is None else max(int(params["MinCount"]), min(wanted, self.capacity))
            new = urlencode([(k, str(fill) if k == "MinCount" else v) for k, v in pairs]).encode()
            request.body = new
            request.headers["Content-Length"] = str(len(new))
        return None  # on to moto


class QuotaResponder:
    """Service Quotas over HTTP: applied values, AWS defaults, or AccessDenied."""

    def __init__(self) -> None:
        self.applied: dict[str, float] = {}
        self.defaults: dict[str, float] = {}
        self.deny = False
        self.requests: list[tuple[str, dict[str, Any]]] = []
        responder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                op = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1]
                responder.requests.append((op, payload))
                status, body = responder.answer(op, payload)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, op: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        code = payload.get("QuotaCode", "")
        if self.deny:
            return 400, {"__type": "AccessDeniedException",
                         "Message": "User is not authorized to perform: servicequotas:GetServiceQuota"}
        table = self.applied if op == "GetServiceQuota" else self.defaults
        if op in ("GetServiceQuota", "GetAWSDefaultServiceQuota") and code in table:
            return 200, {"Quota": {"ServiceCode": "ec2", "QuotaCode": code, "Value": table[code],
                                   "Unit": "None", "Adjustable": True}}
        return 400, {"__type": "NoSuchResourceException", "Message": f"no quota {code}"}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
