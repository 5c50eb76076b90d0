"""Keys that are accepted and then have no effect where they stand.

A key the user set (pydantic's `model_fields_set`: never a default) that nothing reads in
its context is named with its key path, a stable code and the reason.  `fleet check`
prints them (`--strict` makes them errors) and `fleet run` / `fleet plan` log them at
start.  Each rule below says where the code that ignores the key lives, so a rule goes
when that code starts reading the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from fleet.config.pools import AWS_KEYS, PoolConfig

if TYPE_CHECKING:
    from fleet.config.root import Config


class WarningCode(StrEnum):
    LATENCY_POOL_KEY = "latency_pool_key"  # a threshold-policy key on a pool with latency_budget_s
    LATENCY_SIGNAL_TARGET = "latency_signal_target"  # a signal's sizing target on a latency pool
    LATENCY_SIGNAL_KIND = "latency_signal_kind"  # a signal kind the latency policy does not read
    LATENCY_NO_DEMAND = "latency_no_demand"  # a latency pool with nothing to size from
    THRESHOLD_SLOTS = "threshold_slots"  # slots_per_machine without latency_budget_s
    THRESHOLD_BOOT_SECONDS = "threshold_boot_seconds"  # boot_seconds that only the simulator reads
    PROVIDER_KEY = "provider_key"  # a launch setting of another provider
    SPOT_FALLBACK = "spot_fallback_without_spot"  # spot_fallback while capacity is on-demand
    PROVIDER_UNUSED = "provider_unused"  # a [providers.*] section no pool uses
    METRICS_OFF = "metrics_host_unserved"  # metrics_host with metrics_port = 0
    SEED_UNUSED = "seed_without_errors"  # the simulated cloud's seed with no error rate to draw


@dataclass(frozen=True)
class ConfigWarning:
    path: str  # key path, as the config errors give it: pools[0].tolerance
    code: WarningCode
    message: str  # why the key has no effect there

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.code}]"


# decide skips these for a pool with latency_budget_s (fleet/policy/decide.py, decide_pool)
LATENCY_IGNORES = ("scale_up_cooldown_s", "scale_down_cooldown_s", "scale_down_stabilization_s", "tolerance",
                   "max_step_up", "max_step_up_percent")
# signal kinds fleet/policy/latency.py reads a value from (the others count only when missing)
LATENCY_READS = ("queue_depth", "gpu_utilization", "queue_wait")
LATENCY_SIZES_FROM = ("queue_depth", "gpu_utilization")
DIGITALOCEAN_KEYS = ("image", "ssh_keys", "user_data_file", "vpc_uuid")
# launch settings each adapter reads (fleet/cloud.py launch_target, then providers/*.py)
PROVIDER_READS: dict[str, tuple[str, ...]] = {
    "simulated": (),
    "digitalocean": DIGITALOCEAN_KEYS,
    "aws": ("image", "user_data_file", *AWS_KEYS),
}
_OWNER = {**{k: "an AWS" for k in AWS_KEYS}, **{k: "a DigitalOcean" for k in DIGITALOCEAN_KEYS},
          "image": "a DigitalOcean and AWS", "user_data_file": "a DigitalOcean and AWS"}


def unused_keys(config: Config) -> tuple[ConfigWarning, ...]:
    """Every key the user set that has no effect where it stands, in file order."""
    out = [*_fleet_section(config), *_providers_section(config)]
    for i, pool in enumerate(config.pools):
        out += _pool(f"pools[{i}]", pool)
    return tuple(out)


def _fleet_section(config: Config) -> Iterator[ConfigWarning]:
    fleet = config.fleet
    if "metrics_host" in fleet.model_fields_set and fleet.metrics_port == 0:
        yield ConfigWarning("fleet.metrics_host", WarningCode.METRICS_OFF,
                            "no effect: metrics_port = 0 turns the /metrics and /healthz endpoint off")


def _providers_section(config: Config) -> Iterator[ConfigWarning]:
    used = {pool.provider for pool in config.pools}
    for name in config.providers.configured():
        if name not in used:
            # fleet/cloud.py build_providers builds only the providers a pool names
            yield ConfigWarning(f"providers.{name}", WarningCode.PROVIDER_UNUSED,
                                f"no effect: no pool has provider = {name!r}, so it is never built or listed")
    sim = config.providers.simulated
    if sim is not None and "seed" in sim.model_fields_set and sim.capacity_error_rate == 0:
        yield ConfigWarning("providers.simulated.seed", WarningCode.SEED_UNUSED,
                            "no effect with capacity_error_rate = 0: the seed only draws the simulated "
                            "capacity errors (`fleet simulate` takes --seed)")


def _pool(where: str, pool: PoolConfig) -> Iterator[ConfigWarning]:
    if pool.latency_budget_s is not None:
        yield from _latency_pool(where, pool)
    else:
        yield from _threshold_pool(where, pool)
    yield from _launch_settings(where, pool)


def _latency_pool(where: str, pool: PoolConfig) -> Iterator[ConfigWarning]:
    for key in LATENCY_IGNORES:
        if key in pool.model_fields_set:
            yield ConfigWarning(f"{where}.{key}", WarningCode.LATENCY_POOL_KEY,
                                "no effect on a pool with latency_budget_s: the latency policy holds capacity "
                                "a boot ahead and releases only machines idle for a hold window, so cooldowns, "
                                "stabilization, tolerance and step limits apply only to pools without it")
    for j, signal in enumerate(pool.signals):
        if signal.kind not in LATENCY_READS:
            yield ConfigWarning(f"{where}.signals[{j}]", WarningCode.LATENCY_SIGNAL_KIND,
                                f"the latency policy (latency_budget_s) reads no {signal.kind} value: it sizes "
                                f"from queue_depth and gpu_utilization; this signal only stops scale-down "
                                f"while its reading is missing")
            continue
        for key in ("target_per_machine", "target"):
            if key in signal.model_fields_set:
                yield ConfigWarning(f"{where}.signals[{j}].{key}", WarningCode.LATENCY_SIGNAL_TARGET,
                                    "no effect on a pool with latency_budget_s: the latency policy counts "
                                    "machines in slots_per_machine, not by a signal's target")
    if not any(s.kind in LATENCY_SIZES_FROM for s in pool.signals):
        yield ConfigWarning(f"{where}.latency_budget_s", WarningCode.LATENCY_NO_DEMAND,
                            "no queue_depth or gpu_utilization signal: the latency policy has nothing to size "
                            "from, so `fleet run` holds the pool at its size (within min and max); add a "
                            "queue_depth signal (`fleet simulate` reads its own queue instead)")


def _threshold_pool(where: str, pool: PoolConfig) -> Iterator[ConfigWarning]:
    if "slots_per_machine" in pool.model_fields_set:
        yield ConfigWarning(f"{where}.slots_per_machine", WarningCode.THRESHOLD_SLOTS,
                            "no effect on `fleet run` without latency_budget_s: each signal's target sizes "
                            "the pool; only `fleet simulate` reads it here")
    if "boot_seconds" in pool.model_fields_set and pool.provider != "simulated":
        # read by the latency policy, the simulated cloud (its boot time) and `fleet simulate` only
        yield ConfigWarning(f"{where}.boot_seconds", WarningCode.THRESHOLD_BOOT_SECONDS,
                            f"no effect on `fleet run` for a {pool.provider} pool without latency_budget_s "
                            "(max_boot_seconds replaces a slow boot); only `fleet simulate` reads it here")


def _launch_settings(where: str, pool: PoolConfig) -> Iterator[ConfigWarning]:
    reads = PROVIDER_READS.get(pool.provider)
    if reads is None:
        return
    for key in (*DIGITALOCEAN_KEYS, *AWS_KEYS):
        # a foreign key with a value other than its default is refused (PoolConfig._consistent)
        if key in pool.model_fields_set and key not in reads:
            yield ConfigWarning(f"{where}.{key}", WarningCode.PROVIDER_KEY,
                                f"no effect on a {pool.provider} pool: {_OWNER[key]} launch setting")
    if pool.provider == "aws" and "spot_fallback" in pool.model_fields_set and pool.capacity != "spot":
        # providers/aws.py falls back to on-demand only from capacity = "spot"
        yield ConfigWarning(f"{where}.spot_fallback", WarningCode.SPOT_FALLBACK,
                            f"no effect with capacity = {pool.capacity!r}: it applies to capacity = \"spot\"")
