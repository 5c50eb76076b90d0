"""The `fleet` command.  Nothing imports this module."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypedDict, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from fleet import logs
from fleet.cloud import WiringError, price_problems
from fleet.config import Config, ConfigError, ConfigWarning, load_config
from fleet.controller import Controller
from fleet.model import MachineState, PoolPlan, TickResult
from fleet.preflight import Problem, preflight
from fleet.render import plan_json, pool_plan_json
from fleet.store.db import SchemaOutOfDate, make_engine, upgrade
from fleet.store.repo import MachineRow, Store, month_start, to_dt, to_ts
from fleet.wiring import build_controller

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Keep GPU VM fleets sized to their work, under cooldowns, quotas and budget caps.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema (Alembic).")
app.add_typer(db_app, name="db")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Path to the TOML config.")]
log = logging.getLogger("fleet.config")


class Output(StrEnum):
    table = "table"
    json = "json"


def _setup_logging() -> None:
    try:
        logs.setup()
    except logs.LogLevelError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        raise typer.Exit(1) from None


F = TypeVar("F", bound=Callable[..., Any])


def _guarded(command: F) -> F:
    """No traceback for any input: what a command did not foresee is one line naming the
    command and the error (exit 2); FLEET_LOG_LEVEL=debug adds the traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            err.print(f"fleet {command.__name__}: interrupted", highlight=False, markup=False)
            raise typer.Exit(130) from None
        except Exception as exc:  # the last line of defence (RecursionError and MemoryError too)
            if os.environ.get("FLEET_LOG_LEVEL", "").lower() == "debug":
                traceback.print_exc()
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            err.print(f"error: fleet {command.__name__.replace('_', ' ')} failed: {type(exc).__name__}: {first}",
                      highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _config(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(f"[red]error[/red] {escape(problem)}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(1) from None


def _gate(cfg: Config, *, network: bool, port: bool, store: bool = True) -> None:
    """`fleet check`'s checks of what the config points at, at the start of `run` and `plan`."""
    problems = preflight(cfg, network=network, port=port, store=store)
    if problems:
        _print_problems(cfg.source_path or Path("<config>"), [str(p) for p in problems])
        raise typer.Exit(1)


def _print_problems(config: Path, problems: Sequence[str | Problem]) -> None:
    for problem in problems:
        err.print(f"error {config}: {problem}", highlight=False, markup=False, soft_wrap=True)


def _log_warnings(cfg: Config) -> None:
    """At the start of `run` and `plan`: every key set that has no effect, one log line each."""
    for warning in cfg.warnings():
        reason = warning.message.replace('"', "'")
        log.warning(f'event=config_key_unused file={cfg.source_path} path={warning.path} code={warning.code} '
                    f'reason="{reason}"')


def _controller(cfg: Config, migrate: bool = True) -> Controller:
    """The controller for a command; `migrate=False` (a dry run) writes nothing to the database."""
    try:
        controller = build_controller(cfg, migrate=migrate)
        problems = price_problems(cfg, controller.providers)
        if problems:
            raise WiringError("; ".join(problems))
        return controller
    except WiringError as exc:
        err.print(f"error: {cfg.source_path}: {exc}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    except SchemaOutOfDate as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    except SQLAlchemyError as exc:
        err.print(f"error: cannot open the database {cfg.fleet.database_url.split('@')[-1]}: "
                  f"{type(exc).__name__}: {str(exc).splitlines()[0]}", highlight=False, markup=False)
        raise typer.Exit(1) from None


StrictOpt = Annotated[bool, typer.Option("--strict", help="A key set that has no effect is an error, not a warning.")]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Connect to nothing: skip the database and "
                                                            "endpoint probes.")]


@app.command()
@_guarded
def check(config: ConfigOpt, strict: StrictOpt = False, offline: OfflineOpt = False) -> None:
    """Validate a config and what it points at (files, database, port, providers, endpoints):
    exit 0, or 1 with every error (key path and file).  Keys that are set and have no effect
    where they stand are warnings (errors with --strict)."""
    cfg = _config(config)
    problems: list[str | Problem] = [*preflight(cfg, network=not offline, port=True)]
    warnings = cfg.warnings()
    if strict:
        problems += [str(w) for w in warnings]
    else:
        _print_warnings(config, warnings)
    if problems:
        _print_problems(config, problems)
        raise typer.Exit(1)
    noted = f"; {len(warnings)} warning(s)" if warnings else ""
    out.print(f"{config}: ok ({len(cfg.pools)} pool(s): {', '.join(p.name for p in cfg.pools) or 'none'}{noted})",
              highlight=False)


def _print_warnings(config: Path, warnings: Sequence[ConfigWarning]) -> None:
    for warning in warnings:
        err.print(f"warning {config}: {warning}", highlight=False, markup=False, soft_wrap=True)


@app.command()
@_guarded
def plan(config: ConfigOpt, output: Annotated[Output, typer.Option("--output", "-o")] = Output.table) -> None:
    """One dry-run tick: observe and decide, change nothing."""
    _setup_logging()
    cfg = _config(config)
    _gate(cfg, network=False, port=False, store=False)  # a dry run opens the store its own way
    _log_warnings(cfg)
    result = _controller(cfg, migrate=False).tick(dry_run=True)
    if output is Output.json:
        out.print_json(json.dumps(plan_json(result)))
        return
    _print_plan(result)


def _print_plan(result: TickResult) -> None:
    table = Table(title="fleet plan" + (" (dry run: nothing changed)" if result.dry_run else ""))
    for col in ("pool", "provider", "ready", "booting", "desired", "actions"):
        table.add_column(col, overflow="fold")
    details = []
    for p in result.plan.pools:
        j = pool_plan_json(p, result.notes.get(p.pool))
        table.add_row(p.pool, p.provider, str(p.ready), str(p.booting),
                      str(p.desired) + (" (held)" if p.held else ""), _actions_text(j["actions"]))
        details += _pool_details(p, j)
    out.print(table)
    for line in details:
        out.print(line, highlight=False, soft_wrap=True)
    b = result.plan
    out.print(f"burn: ${b.burn_now_usd_per_hour:.2f}/h now, ${b.burn_planned_usd_per_hour:.2f}/h planned",
              highlight=False)


def _actions_text(actions: list[dict[str, Any]]) -> str:
    return "; ".join(f"create {a['count']} x {a['size']}" if a["action"] == "create"
                     else f"{a['action']} {', '.join(a['machines'])}" for a in actions) or "-"


def _pool_details(p: PoolPlan, j: dict[str, Any]) -> list[str]:
    """A pool's signals and reasons, under the plan table."""
    lines = [f"[bold]{p.pool}[/bold]"]
    for s in j["signals"]:
        value = f"{s['value']:g}" if s["value"] is not None else f"MISSING ({s['error']})"
        age = f", age {s['age_s']:.0f}s" if s["age_s"] is not None else ""
        lines.append(f"  signal {s['name']} = {value}  [dim]{s['source']}{age}[/dim]")
    lines += [f"  reason {reason}" for reason in j["reasons"] or ["steady"]]
    return lines


@app.command()
@_guarded
def run(config: ConfigOpt, once: Annotated[bool, typer.Option("--once", help="Run one tick and exit.")] = False
        ) -> None:
    """The long-lived service (or one tick with --once)."""
    _setup_logging()
    cfg = _config(config)
    _gate(cfg, network=True, port=not once)  # --once serves no /metrics
    _log_warnings(cfg)
    controller = _controller(cfg)
    if once:
        try:
            result = controller.tick()
            controller.release_lease()  # the next `--once` (or the service) acts at once
        except SQLAlchemyError as exc:
            err.print(f"error: the tick could not run: database: {str(exc).splitlines()[0]}", markup=False)
            raise typer.Exit(2) from None
        _print_plan(result)
        return
    from fleet.service import Service

    Service(controller).run()


class PoolStatus(TypedDict):
    pool: str
    configured: bool
    machines: dict[str, int]  # state → count
    burn_usd_per_hour: float
    spend_month_to_date_usd: float
    machine_list: list[dict[str, Any]]


@app.command()
@_guarded
def status(config: ConfigOpt, output: Annotated[Output, typer.Option("--output", "-o")] = Output.table) -> None:
    """Pools, machines by state, burn rate, month-to-date spend (from the database)."""
    cfg = _config(config)
    store = _store(cfg)
    machines = store.unfinished_machines()
    spend = {k: float(v) for k, v in store.spend_since(month_start(time.time())).items()}
    configured = [p.name for p in cfg.pools]
    names = configured + sorted({m.pool for m in machines} - set(configured))
    pools = [_pool_status(name, [m for m in machines if m.pool == name], name in configured, spend.get(name, 0.0))
             for name in names]
    doc = {"fleet": cfg.fleet.name, "pools": pools,
           "burn_usd_per_hour": round(sum(p["burn_usd_per_hour"] for p in pools), 6),
           "spend_month_to_date_usd": round(sum(spend.values()), 6)}
    if output is Output.json:
        out.print_json(json.dumps(doc))
        return
    _print_status(cfg.fleet.name, pools)
    out.print(f"burn ${doc['burn_usd_per_hour']:.2f}/h, month to date ${doc['spend_month_to_date_usd']:.2f}",
              highlight=False)


def _pool_status(name: str, mine: list[MachineRow], configured: bool, spend: float) -> PoolStatus:
    by_state: dict[str, int] = {}
    for m in mine:
        by_state[m.state.value] = by_state.get(m.state.value, 0) + 1
    return {
        "pool": name, "configured": configured, "machines": by_state,
        "burn_usd_per_hour": round(sum(m.price_hourly_usd for m in mine if m.state is not MachineState.TERMINATED),
                                   6),
        "spend_month_to_date_usd": round(spend, 6),
        "machine_list": [{"id": m.provider_id, "state": m.state.value, "size": m.size, "region": m.region,
                          "price_hourly_usd": m.price_hourly_usd} for m in mine],
    }


def _print_status(fleet: str, pools: list[PoolStatus]) -> None:
    table = Table(title=f"fleet {fleet}")
    for col in ("pool", "machines", "burn $/h", "spend MTD $"):
        table.add_column(col)
    for p in pools:
        states = ", ".join(f"{k} {v}" for k, v in sorted(p["machines"].items())) or "none"
        table.add_row(p["pool"] + ("" if p["configured"] else " (not in config)"), states,
                      f"{p['burn_usd_per_hour']:.2f}", f"{p['spend_month_to_date_usd']:.2f}")
    out.print(table)


@app.command()
@_guarded
def history(config: ConfigOpt, pool: Annotated[str | None, typer.Option("--pool")] = None,
            limit: Annotated[int, typer.Option("--limit", min=1)] = 20,
            output: Annotated[Output, typer.Option("--output", "-o")] = Output.table) -> None:
    """Recent decisions with their reasons."""
    cfg = _config(config)
    rows = _store(cfg).recent_decisions(pool, limit)
    docs = [{"at": _iso(r["at"]), "pool": r["pool"], "current": r["current"], "desired": r["desired"],
             "held": r["held"], "reasons": [x["message"] for x in r["reasons"]], "actions": r["actions"]}
            for r in rows]
    if output is Output.json:
        out.print_json(json.dumps(docs))
        return
    table = Table(title="recent decisions")
    for col in ("at", "pool", "from", "to", "reasons"):
        table.add_column(col, overflow="fold")
    for d in docs:
        table.add_row(d["at"], d["pool"], str(d["current"]), str(d["desired"]) + (" (held)" if d["held"] else ""),
                      "\n".join(d["reasons"]) or "steady")
    out.print(table)


def _iso(dt: datetime) -> str:
    ts = to_ts(dt)
    return "" if ts is None else to_dt(ts).isoformat(timespec="seconds")


def _store(cfg: Config) -> Store:
    try:
        engine = make_engine(cfg.fleet.database_url)
        from fleet.store.db import ensure_schema

        ensure_schema(engine)
        return Store(engine)
    except (SQLAlchemyError, SchemaOutOfDate) as exc:
        err.print(f"error: database: {str(exc).splitlines()[0]}", markup=False)
        raise typer.Exit(1) from None


@db_app.command("upgrade")
@_guarded
def db_upgrade(config: ConfigOpt, revision: Annotated[str, typer.Option("--revision")] = "head") -> None:
    """Apply Alembic migrations up to `revision`."""
    from alembic.util import CommandError

    cfg = _config(config)
    try:
        upgrade(make_engine(cfg.fleet.database_url), revision)
    except SQLAlchemyError as exc:
        err.print(f"error: database: {str(exc).splitlines()[0]}", markup=False)
        raise typer.Exit(1) from None
    except CommandError as exc:  # an unknown --revision
        err.print(f"error: --revision {revision}: {str(exc).splitlines()[0]}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    out.print(f"database upgraded to {revision}")


def _register_simulate() -> None:
    try:
        from fleet.sim.command import simulate
    except ImportError:
        return
    app.command("simulate")(_guarded(simulate))


_register_simulate()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # outside a command (while importing, parsing options)
        err.print("fleet: interrupted", highlight=False, markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
