"""What moto lacks, injected at botocore's HTTP layer, plus a Service Quotas responder.

- `Ec2Faults(client)`: one `before-send` hook on an EC2 client that records every
  request's parameters (what the adapter really sent), answers matching requests
  with real EC2 error XML (which then goes through botocore's parsing), and makes
  moto fill MaxCount: moto launches exactly MinCount, so the hook rewrites
  MinCount to min(MaxCount, capacity) before the request leaves, as EC2 would fill.
  With `dedupe`, it also gives EC2's ClientToken idempotency: a RunInstances whose
  token already launched gets a real RunInstancesResponse XML naming the original
  instances, and nothing new is made.  `hide_listings` makes the next tagged
  listings come back empty, as an eventually consistent DescribeInstances can.
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
from xml.sax.saxutils import escape

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
    dedupe: bool = False
    hide_listings: int = 0
    sent: list[dict[str, str]] = field(default_factory=list)
    rules: list[_Rule] = field(default_factory=list)
    launched: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # ClientToken → instances

    def __post_init__(self) -> None:
        events = self.client.meta.events
        events.register("before-send.ec2", self._hook, unique_id=f"faults-{id(self)}")
        events.register("after-call.ec2.RunInstances", self._after_run, unique_id=f"faults-run-{id(self)}")

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
        if params.get("Action") == "RunInstances" and self.dedupe and params.get("ClientToken") in self.launched:
            return AWSResponse(request.url, 200, {}, _RawBody(run_instances_xml(self.launched[params["ClientToken"]])))
        if params.get("Action") == "DescribeInstances" and self.hide_listings > 0 and "tag:fleet" in params.values():
            self.hide_listings -= 1
            name = next(k for k, v in pairs if v == "tag:fleet")
            value = name.replace(".Name", ".Value.1")
            pairs = [(k, "hidden-by-the-test" if k == value else v) for k, v in pairs]
            self._rewrite(request, pairs)
        if params.get("Action") == "RunInstances":
            wanted = int(params["MaxCount"])
            fill = wanted if self.capacity is None else max(int(params["MinCount"]), min(wanted, self.capacity))
            self._rewrite(request, [(k, str(fill) if k == "MinCount" else v) for k, v in pairs])
        return None  # on to moto

    @staticmethod
    def _rewrite(request: Any, pairs: list[tuple[str, str]]) -> None:
        body = urlencode(pairs).encode()
        request.body = body
        request.headers["Content-Length"] = str(len(body))

    def _after_run(self, parsed: dict[str, Any], **_: Any) -> None:
        for inst in parsed.get("Instances", []):
            known = self.launched.setdefault(inst.get("ClientToken") or "", [])
            if inst["InstanceId"] not in {i["InstanceId"] for i in known}:
                known.append(inst)


def run_instances_xml(instances: list[dict[str, Any]]) -> bytes:
    """EC2's RunInstancesResponse for instances already launched (what a repeated ClientToken returns)."""
    items = []
    for inst in instances:
        tags = "".join(f"<item><key>{escape(t['Key'])}</key><value>{escape(t['Value'])}</value></item>"
                       for t in inst.get("Tags", []))
        lifecycle = (f"<instanceLifecycle>{inst['InstanceLifecycle']}</instanceLifecycle>"
                     if inst.get("InstanceLifecycle") else "")
        items.append(
            f"<item><instanceId>{inst['InstanceId']}</instanceId><imageId>{inst.get('ImageId', '')}</imageId>"
            f"<instanceState><code>16</code><name>running</name></instanceState>"
            f"<instanceType>{inst['InstanceType']}</instanceType>"
            f"<launchTime>{inst['LaunchTime'].isoformat()}</launchTime>"
            f"<placement><availabilityZone>{inst['Placement']['AvailabilityZone']}</availabilityZone></placement>"
            f"{lifecycle}<clientToken>{escape(inst['ClientToken'])}</clientToken><tagSet>{tags}</tagSet></item>")
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            '<RunInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            '<requestId>deduplicated</requestId><reservationId>r-deduplicated</reservationId>'
            f'<ownerId>123456789012</ownerId><groupSet/><instancesSet>{"".join(items)}</instancesSet>'
            '</RunInstancesResponse>').encode()


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
