"""Builders for policy tests: a config, a pool view and readings from plain values."""

from __future__ import annotations

from typing import Any

from fleet.config import Config
from fleet.model import Fleet, History, Machine, MachineState, PoolHistory, PoolView, SignalReading
from tests import builders

NOW = 1_000_000.0


def make_config(budget: float | None = None, **overrides: Any) -> Config:
    """One pool `p` with no cooldowns and no stabilization; `overrides` are the pool's keys."""
    return builders.make_config(
        builders.pool(**dict(scale_up_cooldown_s=0, scale_down_cooldown_s=0, scale_down_stabilization_s=0) | overrides),
        budget=budget)


def machines(ready: int = 0, booting: int = 0, price: float = 3.0, created_at: float = NOW - 60,
             pool: str = "p") -> tuple[Machine, ...]:
    out = [Machine(id=f"r{i}", pool=pool, state=MachineState.READY, size="gpu-h100x1-80gb", region="sim1",
                   price_hourly_usd=price, created_at=created_at - 600, work_left=float(i))
           for i in range(ready)]
    out += [Machine(id=f"b{i}", pool=pool, state=MachineState.BOOTING, size="gpu-h100x1-80gb", region="sim1",
                    price_hourly_usd=price, created_at=created_at + i) for i in range(booting)]
    return tuple(out)


def view(ready: int = 0, booting: int = 0, price: float = 3.0, **kw: Any) -> PoolView:
    return PoolView(name="p", machines=machines(ready, booting, price), launch_price_hourly_usd=price, **kw)


def reading(value: float | None, kind: str = "queue_depth", name: str = "q") -> SignalReading:
    return SignalReading(name=name, kind=kind, value=value, source="test",
                         error=None if value is not None else "down")


def fleet_of(*views: PoolView) -> Fleet:
    return Fleet(pools={v.name: v for v in views})


def history(**kw: Any) -> History:
    return History(pools={"p": PoolHistory(**kw)})
