"""`prometheus`: one number from an instant query over the HTTP API (GET /api/v1/query).

The query must reduce to one number: a scalar or a vector with exactly one sample.  An
empty result (no data), several series, `NaN`/`±Inf`, an error status or a sample older
than `max_age_s` is a missing signal, never zero.

Age: an instant query stamps every result with the *evaluation* time, not the time the
sample was scraped, so the age comes from a second query over `timestamp()`, which gives
the scrape time of raw series.  Presets ask for the oldest input series' timestamp; a
custom query is wrapped as `min(timestamp(<query>))`, which is exact for a plain
selector and reads as age 0 for an aggregate (Prometheus cannot know its inputs' age).

Presets build the PromQL from the pool's label `selector` (see providers.md part 4 for
the metric names and units: DCGM utilization is 0-100, vLLM's KV cache is 0-1).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from fleet.config import MachineWorkConfig, PrometheusSource
from fleet.signals.base import Missing, ReadFailed, SourceReading
from fleet.signals.http_json import bearer_headers, http_failure, public_url, redact


def escape_value(value: str) -> str:
    """A PromQL double-quoted string literal body (Go escaping rules)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def matchers(selector: dict[str, str]) -> str:
    """`{a="x",b="y"}` (or `""` for no selector); names are validated by the config."""
    if not selector:
        return ""
    return "{" + ",".join(f'{name}="{escape_value(value)}"' for name, value in sorted(selector.items())) + "}"


def _oldest(exprs: list[str]) -> str:
    """The smallest of one-element vectors: `(a < b) or b`, folded (an empty input empties it)."""
    out = exprs[0]
    for expr in exprs[1:]:
        out = f"(({out}) < ({expr})) or ({expr})"
    return out


def _stamp(metric: str, sel: str) -> str:
    return f"min(timestamp({metric}{sel}))"


# preset → (value query, age query), both from the matcher string
PRESETS: dict[str, Callable[..., tuple[str, str]]] = {
    "dcgm_gpu_utilization": lambda s: (
        f"avg(DCGM_FI_DEV_GPU_UTIL{s}) / 100",  # dcgm-exporter reports 0-100
        _stamp("DCGM_FI_DEV_GPU_UTIL", s),
    ),
    "dcgm_memory_used_fraction": lambda s: (
        # there is no FB_TOTAL metric: total = used + free
        f"sum(DCGM_FI_DEV_FB_USED{s}) / (sum(DCGM_FI_DEV_FB_USED{s}) + sum(DCGM_FI_DEV_FB_FREE{s}))",
        _oldest([_stamp("DCGM_FI_DEV_FB_USED", s), _stamp("DCGM_FI_DEV_FB_FREE", s)]),
    ),
    "vllm_queue": lambda s: (
        f"sum(vllm:num_requests_waiting{s}) + sum(vllm:num_requests_running{s})",
        _oldest([_stamp("vllm:num_requests_waiting", s), _stamp("vllm:num_requests_running", s)]),
    ),
    "vllm_kv_cache": lambda s: (
        # the new name first, then the one deprecated in vLLM 0.9 (already 0-1, no scaling)
        f"avg(vllm:kv_cache_usage_perc{s}) or avg(vllm:gpu_cache_usage_perc{s})",
        f"{_stamp('vllm:kv_cache_usage_perc', s)} or {_stamp('vllm:gpu_cache_usage_perc', s)}",
    ),
    # queue_wait signals: seconds the requests started over the last `rate_window_s` waited (no
    # request started: 0 / 0 = NaN, a missing reading, which the latency policy treats as no
    # evidence).  rate() needs two samples in the window: at least 2x the scrape interval.
    "vllm_queue_wait": lambda s, w: (
        # the 99th percentile of vLLM's queue-time histogram (seconds)
        f"histogram_quantile(0.99, sum by (le) (rate(vllm:request_queue_time_seconds_bucket{s}[{w}])))",
        _stamp("vllm:request_queue_time_seconds_bucket", s),
    ),
    "triton_queue_wait": lambda s, w: (
        # Triton keeps only the total: the mean wait, from a microsecond counter
        f"sum(rate(nv_inference_queue_duration_us{s}[{w}])) / sum(rate(nv_inference_request_success{s}[{w}]))"
        " / 1e6",
        _oldest([_stamp("nv_inference_queue_duration_us", s), _stamp("nv_inference_request_success", s)]),
    ),
    "triton_queue": lambda s: (
        f"sum(nv_inference_pending_request_count{s})",
        _stamp("nv_inference_pending_request_count", s),
    ),
    "tgi_queue": lambda s: (
        f"sum(tgi_queue_size{s})",
        _stamp("tgi_queue_size", s),
    ),
}


RATE_PRESETS = frozenset({"vllm_queue_wait", "triton_queue_wait"})  # read over rate_window_s


def build_queries(cfg: PrometheusSource) -> tuple[str, str]:
    """(value query, age query) for a preset or a custom query."""
    if cfg.preset in RATE_PRESETS:
        return PRESETS[cfg.preset](matchers(cfg.selector), f"{cfg.rate_window_s or 60:g}s")
    if cfg.preset is not None:
        return PRESETS[cfg.preset](matchers(cfg.selector))
    assert cfg.query is not None  # the config allows exactly one of the two
    return cfg.query, f"min(timestamp({cfg.query}))"


def describe(cfg: PrometheusSource) -> str:
    what = f"{cfg.preset}{matchers(cfg.selector)}" if cfg.preset else f"query {cfg.query}"
    return f"prometheus {what} @ {public_url(cfg.url)}"


class QueryFailed(ReadFailed):
    """A reason the reading is missing (this module and machine_work.py); `error_type` is
    Prometheus' own `errorType` when it answered with one (`bad_data`, `timeout`, ...)."""

    def __init__(self, code: Missing, message: str, error_type: str | None = None) -> None:
        super().__init__(code, message)
        self.error_type = error_type


def instant_query(client: httpx.Client, cfg: PrometheusSource | MachineWorkConfig, query: str,
                  budget_s: float) -> tuple[str, Any]:
    """Run one instant query within `budget_s`; (resultType, result)."""
    url = cfg.url.rstrip("/") + "/api/v1/query"
    where = f"querying {public_url(cfg.url)}"
    # Prometheus' own timeout stops the evaluation server-side; httpx bounds the wait.
    params = {"query": query, "timeout": f"{max(1, int(budget_s * 1000))}ms"}
    try:
        response = client.get(url, params=params, timeout=budget_s)
    except httpx.HTTPError as exc:
        failure = http_failure(exc, where, cfg.timeout_s)
        raise QueryFailed(failure.code, str(failure)) from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code in (401, 403):
        raise QueryFailed(Missing.AUTH, f"{where}: HTTP {response.status_code} (check token_env / headers)")
    if not isinstance(body, dict):
        raise QueryFailed(Missing.MALFORMED, f"{where}: HTTP {response.status_code} without a Prometheus JSON body")
    if body.get("status") != "success" or response.status_code != 200:
        kind = str(body.get("errorType", "error"))
        raise QueryFailed(Missing.TIMEOUT if kind == "timeout" else Missing.FAILED,
                          f"{where}: HTTP {response.status_code} {kind}: {body.get('error', 'no message')}", kind)
    data = body.get("data")
    if not isinstance(data, dict):
        raise QueryFailed(Missing.MALFORMED, f"{where}: response has no `data` object")
    return str(data.get("resultType")), data.get("result")


def _one_sample(result_type: str, result: Any) -> float:
    """The number a result reduces to, or QueryFailed with why not."""
    raw = _raw_sample(result_type, result)
    number = _parse(raw)
    if math.isnan(number):
        raise QueryFailed(Missing.MALFORMED, "query returned NaN (e.g. 0/0 or no GPUs reporting)")
    if math.isinf(number):
        raise QueryFailed(Missing.MALFORMED, f"query returned {raw}")
    return number


def _raw_sample(result_type: str, result: Any) -> Any:
    """The one sample's value as Prometheus sent it (a string)."""
    if result_type == "scalar":
        return result[1] if isinstance(result, list) and len(result) == 2 else None
    if result_type != "vector":
        raise QueryFailed(Missing.MALFORMED,
                          f"query returned a {result_type}; it must give an instant vector or a scalar")
    if not isinstance(result, list) or not result:
        raise QueryFailed(Missing.ABSENT, "query returned no data (empty result); a missing metric is not zero")
    if len(result) > 1:
        raise QueryFailed(Missing.MALFORMED, f"query returned {len(result)} series; aggregate it, e.g. sum(...)")
    value = result[0].get("value") if isinstance(result[0], dict) else None
    return value[1] if isinstance(value, list) and len(value) == 2 else None


def _parse(raw: Any) -> float:
    try:
        return float(raw)  # Prometheus sends values as strings ("NaN", "+Inf" included)
    except (TypeError, ValueError):
        raise QueryFailed(Missing.MALFORMED, f"unparsable sample value {raw!r}") from None


def read(cfg: PrometheusSource, now: Callable[[], float] = time.time) -> SourceReading:
    where = describe(cfg)
    headers, error = bearer_headers(cfg.headers, cfg.token_env)
    if error:
        return SourceReading.missing(where, error, Missing.AUTH)
    token = os.environ.get(cfg.token_env) if cfg.token_env else None
    try:
        with httpx.Client(headers=headers, follow_redirects=False) as client:
            value, age_s = _value_and_age(client, cfg, now)
    except QueryFailed as exc:
        return SourceReading.missing(where, redact(str(exc), token), exc.code)
    if age_s is not None and age_s > cfg.max_age_s:
        return SourceReading.missing(where, f"stale: the oldest input sample is {age_s:.0f}s old "
                                            f"(max_age_s={cfg.max_age_s:g})", Missing.STALE)
    return SourceReading(value=value, source=where, age_s=age_s)


def _value_and_age(client: httpx.Client, cfg: PrometheusSource, now: Callable[[], float]
                   ) -> tuple[float, float | None]:
    """The value, then its age, both within the one `timeout_s`."""
    value_query, age_query = build_queries(cfg)
    deadline = time.monotonic() + cfg.timeout_s
    value = _one_sample(*instant_query(client, cfg, value_query, cfg.timeout_s))
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise QueryFailed(Missing.TIMEOUT, f"timed out after {cfg.timeout_s:g}s before the sample age was read")
    return value, _age(client, cfg, age_query, remaining, now)


def _age(client: httpx.Client, cfg: PrometheusSource, query: str, budget_s: float,
         now: Callable[[], float]) -> float | None:
    try:
        stamp = _one_sample(*instant_query(client, cfg, query, budget_s))
    except QueryFailed as exc:
        # A scalar custom query has no timestamp(): its age is unknown, not a failure.
        if cfg.query is not None and exc.error_type == "bad_data":
            return None
        raise QueryFailed(exc.code, f"reading the sample age: {exc}", exc.error_type) from None
    return max(0.0, now() - stamp)
