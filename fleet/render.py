"""Plans and readings as JSON: `fleet plan -o json`, and the decision rows the recorder writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fleet.model import Action, CreateAction, PoolPlan, Reason, SignalReading, TickResult
from fleet.store.repo import to_dt


def signal_json(s: SignalReading) -> dict[str, Any]:
    return {"name": s.name, "kind": s.kind, "value": s.value, "source": s.source, "age_s": s.age_s,
            "error": s.error}


def action_json(a: Action) -> dict[str, Any]:
    if isinstance(a, CreateAction):
        return {"action": "create", "count": a.count, "size": a.size, "region": a.region,
                "price_hourly_usd": a.price_hourly_usd}
    return {"action": a.action, "machines": list(a.machine_ids)}


def reason_json(r: Reason) -> dict[str, str]:
    return {"code": r.code, "message": r.message}


def pool_plan_json(p: PoolPlan, notes: Sequence[Reason] | None = ()) -> dict[str, Any]:
    return {
        "pool": p.pool, "provider": p.provider, "ready": p.ready, "booting": p.booting, "draining": p.draining,
        "current": p.current,
        "recommendation": p.recommendation, "desired": p.desired, "held": p.held,
        "actions": [action_json(a) for a in p.actions],
        "reasons": [r.message for r in (*p.reasons, *(notes or ()))],
        "signals": [signal_json(s) for s in p.signals],
    }


def plan_json(result: TickResult) -> dict[str, Any]:
    plan = result.plan
    return {
        "at": to_dt(plan.at).isoformat(),
        "dry_run": result.dry_run,
        "pools": [pool_plan_json(p, result.notes_of(p.pool)) for p in plan.pools],
        "burn_usd_per_hour": {"now": round(plan.burn_now_usd_per_hour, 6),
                              "planned": round(plan.burn_planned_usd_per_hour, 6)},
    }
