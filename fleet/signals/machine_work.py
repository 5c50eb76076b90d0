"""Work on each machine, from one Prometheus instant query with one series per machine.

The pool-level signals say how much work there is, not where it runs; this says which
machine holds it, so a scale-down removes idle machines and leaves busy ones to finish.
The series are keyed by the value of the label that names the machine (`instance`,
`Hostname`, or the user's), turned into what the pool's `match` compares against:

- `private_ip` / `public_ip`: the label's host part (`10.0.0.5:8000` → `10.0.0.5`,
  `[fd00::1]:8000` → `fd00::1`); an EC2 hostname `ip-10-0-0-5[.ec2.internal]` is read as its
  address, so DCGM's `Hostname` matches EC2 machines too.
- `name` / `id`: the value as it is (a port, if any, stripped).

Several series for one machine (two servers on one host) add up.  A query that fails, or
returns nothing at all (a wrong selector, an exporter not scraped), is a missing reading:
no machine is known to be idle.  A NaN or negative sample is no reading for its machine.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from fleet.config import MachineWorkConfig
from fleet.signals.base import Missing
from fleet.signals.http_json import bearer_headers, public_url, redact
from fleet.signals.prometheus import QueryFailed, instant_query, matchers

PRESETS = {
    # requests queued and running on each vLLM server
    "vllm": lambda s: (f"sum by (instance) (vllm:num_requests_waiting{s})"
                       f" + sum by (instance) (vllm:num_requests_running{s})"),
    # the busiest GPU of each host, 0-1 (dcgm-exporter reports 0-100)
    "dcgm": lambda s: f"max by (Hostname) (DCGM_FI_DEV_GPU_UTIL{s}) / 100",
}

_EC2_HOSTNAME = re.compile(r"^ip-(\d{1,3})-(\d{1,3})-(\d{1,3})-(\d{1,3})(\..*)?$")


@dataclass(frozen=True)
class MachineWorkReading:
    """Work per machine key; `work is None` when the query gave no usable answer."""

    work: Mapping[str, float] | None
    source: str
    error: str | None = None
    unreadable: tuple[str, ...] = field(default=())  # keys whose sample was NaN or negative
    code: Missing | None = None  # why `work` is None (None when it is not)

    @property
    def missing(self) -> bool:
        return self.work is None


def build_query(cfg: MachineWorkConfig) -> str:
    if cfg.preset is not None:
        return PRESETS[cfg.preset](matchers(cfg.selector))
    assert cfg.query is not None  # the config allows exactly one of the two
    return cfg.query


def describe(cfg: MachineWorkConfig) -> str:
    what = f"{cfg.preset}{matchers(cfg.selector)}" if cfg.preset else f"query {cfg.query}"
    return f"prometheus per-machine {what} by {cfg.machine_label} @ {public_url(cfg.url)}"


def machine_key(label_value: str, match: str) -> str:
    """What a label value says about the machine, in the terms of `match`."""
    host = label_value.strip()
    if host.startswith("["):  # [IPv6]:port
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:  # host:port (a bare IPv6 address has several colons)
        host = host.split(":", 1)[0]
    if match == "private_ip" and (m := _EC2_HOSTNAME.match(host)):
        host = ".".join(m.groups()[:4])
    return host


def read(cfg: MachineWorkConfig) -> MachineWorkReading:
    where = describe(cfg)
    headers, error = bearer_headers(cfg.headers, cfg.token_env)
    if error:
        return MachineWorkReading(None, where, error, code=Missing.AUTH)
    token = os.environ.get(cfg.token_env) if cfg.token_env else None
    try:
        with httpx.Client(headers=headers, follow_redirects=False) as client:
            result_type, result = instant_query(client, cfg, build_query(cfg), cfg.timeout_s)
        return _per_machine(cfg, where, _series(cfg, result_type, result))
    except QueryFailed as exc:
        return MachineWorkReading(None, where, redact(str(exc), token), code=exc.code)


def _series(cfg: MachineWorkConfig, result_type: str, result: Any) -> list[tuple[str, Any]]:
    """(machine label value, sample) of each series that carries the label."""
    if result_type != "vector" or not isinstance(result, list):
        raise QueryFailed(Missing.MALFORMED, f"query returned a {result_type}; it must give one series per "
                                             f"machine, e.g. sum by ({cfg.machine_label}) (...)")
    if not result:
        raise QueryFailed(Missing.ABSENT, "query returned no data: no machine is known to be idle (check the "
                                          "selector and that the servers are scraped)")
    items = [item for item in result if isinstance(item, dict)]
    labelled = [(str(name), item.get("value")) for item in items
                if isinstance(metric := item.get("metric"), dict) and (name := metric.get(cfg.machine_label))]
    if not labelled:
        raise QueryFailed(Missing.MALFORMED, f"no series carries the label {cfg.machine_label!r}: aggregate "
                                             f"by it, e.g. sum by ({cfg.machine_label}) (...)")
    return labelled


def _sample(value: Any) -> float:
    """A series' number, NaN when it has none."""
    try:
        return float(value[1]) if isinstance(value, list) and len(value) == 2 else math.nan
    except (TypeError, ValueError):
        return math.nan


def _per_machine(cfg: MachineWorkConfig, where: str, series: list[tuple[str, Any]]) -> MachineWorkReading:
    work: dict[str, float] = {}
    unreadable: set[str] = set()
    for name, value in series:
        key = machine_key(name, cfg.match)
        number = _sample(value)
        if math.isnan(number) or math.isinf(number) or number < 0:
            unreadable.add(key)
            continue
        work[key] = work.get(key, 0.0) + number
    for key in unreadable:
        work.pop(key, None)  # one bad series of a machine: its total is unknown
    return MachineWorkReading(work, where, unreadable=tuple(sorted(unreadable)))
