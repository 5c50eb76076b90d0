"""A corpus of bad configs (issue 21, item 9): each one is refused by `fleet check` AND by
`fleet run --once` with one clear line naming what is wrong (its key path, or the file), exit 1,
no traceback, no hang.  The cases are data (CASES); each runs in-process (typer's CliRunner,
bounded by an alarm), and a handful also as real subprocesses (bounded by their timeout).

Only 127.0.0.1 is ever contacted: an "unreachable" endpoint is a free local port, a "wrong" one
a local HTTP server that is not the API.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fleet.cli import app
from tests.do_fake import FakeDigitalOcean
from tests.servers import POSTGRES_URL, free_port, tcp_answers, unavailable

ROOT = Path(__file__).resolve().parents[1]
NAME = "corpus.toml"
TOKEN = "dop_v1_corpus_token"

BASE = """\
[fleet]
name = "corpus"
database_url = "sqlite:///fleet.db"
tick_seconds = 15
metrics_port = 0

[budget]
max_hourly_usd = 40.0

[providers.simulated]

[[pools]]
name = "p"
provider = "simulated"
size = "gpu-h100x1-80gb"
max = 10

  [[pools.signals]]
  kind = "queue_depth"
  target_per_machine = 4
  source = { type = "static", value = 12 }
"""

DO = """\
[fleet]
name = "corpus"
database_url = "sqlite:///fleet.db"
metrics_port = 0

[providers.digitalocean]
token_env = "FLEET_CORPUS_DO_TOKEN"
api_url = "{api_url}"

[[pools]]
name = "p"
provider = "digitalocean"
size = "gpu-h100x1-80gb"
region = "tor1"
image = "gpu-h100x1-base"
max = 2
"""

AWS = """\
[fleet]
name = "corpus"
database_url = "sqlite:///fleet.db"
metrics_port = 0

[providers.aws]
region = "{region}"
{endpoint}

[[pools]]
name = "p"
provider = "aws"
size = "g6e.xlarge"
subnets = ["subnet-a"]
launch_template = "gpu-worker"
max = 2
"""


@dataclass
class World:
    """The local servers some cases point at."""

    tmp: Path
    taken_port: int  # a port something listens on
    free_port: int  # a port nothing listens on
    not_an_api: str  # an HTTP server answering 404 to everything
    do_url: str  # the DigitalOcean fake (expects TOKEN)


Build = Callable[[World], str | bytes]


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    build: Build
    expect: str  # in the error line: the key path, or what is wrong with the file
    code: str | None = None  # the preflight's code, when the problem is found by it
    once_ok: bool = False  # `fleet run --once` is unaffected (it binds no port): it must succeed
    subprocess: bool = False  # also run as a real process
    needs_postgres: bool = False


def base(old: str = "", new: str = "") -> Build:
    return lambda w: BASE.replace(old, new, 1) if old else BASE


def fleet_key(line: str) -> Build:
    return base("[fleet]\n", f"[fleet]\n{line}\n")


def pool_key(line: str) -> Build:
    return base("max = 10\n", f"max = 10\n{line}\n")


def source(text: str) -> Build:
    return base('source = { type = "static", value = 12 }', f"source = {text}")


def db(url: str) -> Build:
    return base('database_url = "sqlite:///fleet.db"', f'database_url = "{url}"')


def do(api_url: Callable[[World], str]) -> Build:
    return lambda w: DO.format(api_url=api_url(w))


def aws(region: str = "us-east-1", endpoint: Callable[[World], str] | None = None) -> Build:
    return lambda w: AWS.format(region=region, endpoint=f'endpoint_url = "{endpoint(w)}"' if endpoint else "")


def with_file(name: str, content: bytes | None, then: Build) -> Build:
    """Write `name` next to the config (None: make a FIFO), then the config."""
    def build(w: World) -> str | bytes:
        path = w.tmp / name
        if content is None:
            os.mkfifo(path)
        else:
            path.write_bytes(content)
        return then(w)
    return build


def with_dir(name: str, then: Build) -> Build:
    def build(w: World) -> str | bytes:
        (w.tmp / name).mkdir()
        return then(w)
    return build


def raw(content: bytes | str) -> Build:
    return lambda w: content


SIGNAL = "[[pools.signals]]\n  kind = \"queue_depth\"\n  target_per_machine = 4\n"
CASES = [
    # ------------------------------------------------ typos
    Case("typo-fleet-key", "typo", fleet_key('nmae = "x"'), "fleet.nmae: unknown key"),
    Case("typo-pool-key", "typo", pool_key("max_hourly_usdd = 5"), "pools[0].max_hourly_usdd: unknown key"),
    Case("typo-budget-key", "typo", base("max_hourly_usd = 40.0", "max_hourly = 40.0"), "budget.max_hourly"),
    Case("typo-signal-key", "typo", base("target_per_machine = 4", "target_per_machin = 4"),
         "pools[0].signals[0].target_per_machin"),
    Case("typo-section", "typo", base("[providers.simulated]", "[provider.simulated]"), "provider: unknown key"),
    Case("typo-signal-kind", "typo", base('kind = "queue_depth"', 'kind = "queue_dept"'), "pools[0].signals[0]"),
    Case("typo-source-type", "typo", source('{ type = "statik", value = 1 }'), "pools[0].signals[0].source"),
    Case("typo-capacity", "typo", pool_key('capacity = "spott"'), "pools[0].capacity"),
    Case("typo-provider-name", "typo", base('provider = "simulated"', 'provider = "simulted"'),
         "pools[0].provider"),
    # ------------------------------------------------ wrong types
    Case("type-max-string", "type", base("max = 10", 'max = "ten"'), "pools[0].max"),
    Case("type-tick-string", "type", base("tick_seconds = 15", 'tick_seconds = "15s"'), "fleet.tick_seconds"),
    Case("type-size-number", "type", base('size = "gpu-h100x1-80gb"', "size = 5"), "pools[0].size"),
    Case("type-pools-string", "type", raw('pools = "x"\n[fleet]\nname = "corpus"\n'), "pools"),
    Case("type-port-float", "type", base("metrics_port = 0", "metrics_port = 1.5"), "fleet.metrics_port"),
    Case("type-fleet-value", "type", raw("fleet = 1\n"), "fleet"),
    Case("type-region-ints", "type", pool_key("region = [1, 2]"), "pools[0].region[0]"),
    Case("type-headers-string", "type",
         source('{ type = "prometheus", url = "http://127.0.0.1:9090", query = "q", headers = "x" }'),
         "pools[0].signals[0].source.headers"),
    Case("type-date-for-seconds", "type", base("tick_seconds = 15", "tick_seconds = 1979-05-27"),
         "fleet.tick_seconds"),
    # ------------------------------------------------ NaN and inf
    Case("nan-tick", "nan", base("tick_seconds = 15", "tick_seconds = nan"), "fleet.tick_seconds: must be a finite"),
    Case("inf-tick", "nan", base("tick_seconds = 15", "tick_seconds = inf"), "fleet.tick_seconds: must be a finite"),
    Case("inf-price", "nan", pool_key("price_hourly_usd = inf"), "pools[0].price_hourly_usd"),
    Case("nan-tolerance", "nan", pool_key("tolerance = nan"), "pools[0].tolerance: must be a finite"),
    Case("nan-gpu-target", "nan", base("max = 10\n", "max = 10\n\n  [[pools.signals]]\n  kind = \"gpu_utilization\"\n"
                                       "  target = nan\n  source = { type = \"static\", value = 1 }\n"),
         "pools[0].signals[0].target"),
    Case("inf-static-value", "nan", source('{ type = "static", value = -inf }'),
         "pools[0].signals[0].source.value"),
    Case("nan-budget", "nan", base("max_hourly_usd = 40.0", "max_hourly_usd = nan"), "budget.max_hourly_usd"),
    Case("nan-error-rate", "nan", base("[providers.simulated]", "[providers.simulated]\ncapacity_error_rate = nan"),
         "providers.simulated.capacity_error_rate"),
    Case("nan-latency-budget", "nan", pool_key("latency_budget_s = nan"), "pools[0].latency_budget_s"),
    # ------------------------------------------------ overflow and ranges
    Case("overflow-lease", "overflow", fleet_key("lease_seconds = 1e300"), "fleet.lease_seconds: must be <="),
    Case("overflow-retention", "overflow", fleet_key("decisions_retention_days = 1000000"),
         "fleet.decisions_retention_days: must be <="),
    Case("overflow-stabilization", "overflow", pool_key("scale_down_stabilization_s = 1e300"),
         "pools[0].scale_down_stabilization_s"),
    Case("overflow-cooldown", "overflow", pool_key("scale_up_cooldown_s = 1e12"), "pools[0].scale_up_cooldown_s"),
    Case("overflow-price", "overflow", pool_key("price_hourly_usd = 1e300"), "pools[0].price_hourly_usd: must be <="),
    Case("overflow-price-table", "overflow", pool_key('price_hourly_usd = { "gpu-h100x1-80gb" = 1e300 }'),
         "pools[0].price_hourly_usd.gpu-h100x1-80gb"),
    Case("overflow-max-huge-int", "overflow", base("max = 10", "max = 99999999999999999999"), "pools[0].max"),
    Case("overflow-max-int32", "overflow", base("max = 10", "max = 2147483648"), "pools[0].max: must be <="),
    Case("overflow-max-boot", "overflow", pool_key("max_boot_seconds = 1e20"), "pools[0].max_boot_seconds"),
    Case("overflow-boot", "overflow", pool_key("boot_seconds = 1e10"), "pools[0].boot_seconds"),
    Case("overflow-destroy-timeout", "overflow", pool_key("destroy_timeout_s = 1e9"), "pools[0].destroy_timeout_s"),
    Case("overflow-port", "overflow", base("metrics_port = 0", "metrics_port = 70000"), "fleet.metrics_port"),
    Case("overflow-step-up", "overflow", pool_key("max_step_up = 1000000000000000000"), "pools[0].max_step_up"),
    Case("overflow-slots", "overflow", pool_key("slots_per_machine = 1000000000"), "pools[0].slots_per_machine"),
    Case("overflow-budget", "overflow", base("max_hourly_usd = 40.0", "max_hourly_usd = 1e300"),
         "budget.max_hourly_usd"),
    Case("overflow-sim-prices", "overflow",
         base("[providers.simulated]", '[providers.simulated]\nprices = { "gpu-h100x1-80gb" = 1e300 }'),
         "providers.simulated.prices.gpu-h100x1-80gb"),
    Case("overflow-quota", "overflow", base("[providers.simulated]", "[providers.simulated]\nquota_machines = "
                                            "1000000000000000"), "providers.simulated.quota_machines"),
    Case("range-tick-tiny", "overflow", base("tick_seconds = 15", "tick_seconds = 0.001"), "fleet.tick_seconds"),
    Case("overflow-latency-budget", "overflow", pool_key("latency_budget_s = 1e300"), "pools[0].latency_budget_s"),
    Case("overflow-static-value", "overflow", source('{ type = "static", value = 1e308 }'),
         "pools[0].signals[0].source.value"),
    Case("overflow-max-age", "overflow", source('{ type = "file", path = "s.json", key = "k", max_age_s = 1e300 }'),
         "pools[0].signals[0].source.max_age_s"),
    Case("overflow-decode-tps", "overflow", pool_key("simulation = { decode_tps = 1e-300 }"),
         "pools[0].simulation.decode_tps"),
    Case("range-max-negative", "overflow", base("max = 10", "max = -1"), "pools[0].max: must be >= 0"),
    Case("range-min-over-max", "overflow", pool_key("min = 11"), "pools[0]: max (10) must be >= min (11)"),
    Case("range-size-too-long", "overflow", base('size = "gpu-h100x1-80gb"', f'size = "{"x" * 100}"'),
         "pools[0].size[0]"),
    Case("range-timeout-over-tick", "overflow",
         source('{ type = "http_json", url = "http://127.0.0.1:1/x", path = "a", timeout_s = 20 }'),
         "pools[0].signals[0].source.timeout_s"),
    # ------------------------------------------------ empty, binary, deep, big, not TOML
    Case("empty-file", "file", raw(""), "fleet: field required"),
    Case("comments-only", "file", raw("# nothing here\n\n"), "fleet: field required"),
    Case("binary", "file", raw(bytes(range(256)) * 4), "not UTF-8 text", subprocess=True),
    Case("nul-bytes", "file", raw(b"[fleet]\nname = \"a\0b\"\n"), "invalid TOML"),
    Case("deep-arrays", "file", raw("a = " + "[" * 100_000 + "]" * 100_000 + "\n"), "nested too deeply",
         subprocess=True),
    Case("deep-tables", "file", raw("[" + ".".join(f"t{i}" for i in range(100)) + "]\nx = 1\n"),
         "nested too deeply"),
    Case("ten-megabytes-comment", "file", raw(BASE + "#" * (10 * 1024 * 1024) + "\n"), "larger than",
         subprocess=True),
    Case("ten-megabytes-string", "file", raw(BASE.replace('name = "p"', f'name = "{"p" * 10_000_000}"')),
         "larger than"),
    Case("twenty-thousand-pools", "file", raw('[fleet]\nname = "corpus"\n' + "[[pools]]\n" * 20_000),
         "more problems"),  # 80,000 problems: the first 50 printed (a quadratic dedupe once took minutes)
    Case("invalid-toml", "file", raw("[fleet]\nname = \n"), "invalid TOML"),
    Case("duplicate-key", "file", base("tick_seconds = 15", "tick_seconds = 15\ntick_seconds = 16"), "invalid TOML"),
    Case("utf8-bom", "file", raw(b"\xef\xbb\xbf" + BASE.encode()), "invalid TOML"),
    Case("huge-string-value", "file", pool_key(f'image = "{"i" * 20_000}"'), "pools[0].image"),
    # ------------------------------------------------ databases
    Case("db-mysql", "database", db("mysql://u@127.0.0.1/x"), "fleet.database_url", subprocess=True),
    Case("db-garbage", "database", db("not a url"), "fleet.database_url"),
    Case("db-postgres-wrong-role", "database", db("postgresql+psycopg://no_such_role_corpus@127.0.0.1:5432/test"),
         "fleet.database_url", code="db_unreachable", needs_postgres=True),
    Case("db-unknown-driver", "database", db("postgresql+nosuchdriver://u@127.0.0.1/x"), "fleet.database_url",
         code="db_driver"),
    Case("db-sqlite-no-dir", "database", db("sqlite:///no/such/dir/fleet.db"), "fleet.database_url", code="db_path"),
    Case("db-sqlite-not-a-db", "database", with_file("fleet.db", b"hello, I am text\n" * 10, base()),
         "fleet.database_url", code="db_path"),
    Case("db-sqlite-a-dir", "database", with_dir("fleet.db", base()), "fleet.database_url", code="db_path"),
    Case("db-newline", "database", db("sqlite:///fleet.db\\nx"), "fleet.database_url"),
    Case("db-unreachable", "database", lambda w: db(f"postgresql+psycopg://u@127.0.0.1:{w.free_port}/x")(w),
         "fleet.database_url", code="db_unreachable", subprocess=True),
    Case("db-no-such-database", "database",
         lambda w: db(POSTGRES_URL.rsplit("/", 1)[0] + "/fleet_corpus_no_such_db")(w), "fleet.database_url",
         code="db_unreachable", needs_postgres=True),
    # ------------------------------------------------ providers, endpoints, regions
    Case("do-api-url-ftp", "endpoint", do(lambda w: "ftp://api.digitalocean.com"),
         "providers.digitalocean.api_url"),
    Case("do-api-url-plain-http", "endpoint", do(lambda w: "http://api.digitalocean.com"),
         "providers.digitalocean.api_url"),
    Case("do-api-url-no-host", "endpoint", do(lambda w: "https://"), "providers.digitalocean.api_url"),
    Case("do-api-url-bad-port", "endpoint", do(lambda w: "https://api.digitalocean.com:99999"),
         "providers.digitalocean.api_url"),
    Case("do-unreachable", "endpoint", do(lambda w: f"http://127.0.0.1:{w.free_port}"),
         "providers.digitalocean.api_url", code="endpoint_unreachable", subprocess=True),
    Case("do-wrong-endpoint", "endpoint", do(lambda w: w.not_an_api), "providers.digitalocean.api_url",
         code="endpoint_wrong"),
    Case("do-token-refused", "endpoint", lambda w: do(lambda w: w.do_url)(w).replace(
        "FLEET_CORPUS_DO_TOKEN", "FLEET_CORPUS_WRONG_TOKEN"), "providers.digitalocean.token_env",
        code="token_refused"),
    Case("do-token-missing", "endpoint", lambda w: do(lambda w: w.do_url)(w).replace(
        "FLEET_CORPUS_DO_TOKEN", "FLEET_CORPUS_NO_SUCH_TOKEN"), "providers.digitalocean.token_env",
        code="provider"),
    Case("do-token-env-nul", "endpoint", lambda w: do(lambda w: w.do_url)(w).replace(
        '"FLEET_CORPUS_DO_TOKEN"', '"A\\u0000B"'), "providers.digitalocean.token_env"),
    Case("aws-region-typo", "endpoint", aws("us-east1"), "providers.aws.region"),
    Case("aws-region-zone", "endpoint", aws("us-east-1a"), "providers.aws.region"),
    Case("aws-region-empty", "endpoint", aws(""), "providers.aws.region"),
    Case("aws-region-injection", "endpoint", aws("us-east-1; rm -rf /"), "providers.aws.region"),
    Case("aws-endpoint-garbage", "endpoint", aws(endpoint=lambda w: "not a url"), "providers.aws.endpoint_url"),
    Case("aws-endpoint-bad-port", "endpoint", aws(endpoint=lambda w: "http://127.0.0.1:99999"),
         "providers.aws.endpoint_url"),
    Case("aws-endpoint-unreachable", "endpoint", aws(endpoint=lambda w: f"http://127.0.0.1:{w.free_port}"),
         "providers.aws.endpoint_url", code="endpoint_unreachable"),
    Case("provider-not-configured", "endpoint", base('provider = "simulated"', 'provider = "aws"'),
         "pools[0].provider"),
    Case("sim-state-corrupt", "endpoint", with_file("fleet.db.simcloud.json", b"{not json", base()),
         "providers.simulated", code="provider"),
    # ------------------------------------------------ signal sources
    Case("prometheus-no-scheme", "source", source('{ type = "prometheus", url = "prometheus:9090", query = "q" }'),
         "pools[0].signals[0].source.url"),
    Case("redis-wrong-scheme", "source", source('{ type = "redis", url = "http://127.0.0.1:6379", key = "q" }'),
         "pools[0].signals[0].source.url"),
    Case("amqp-wrong-scheme", "source", source('{ type = "rabbitmq", url = "redis://127.0.0.1", queue = "q" }'),
         "pools[0].signals[0].source.url"),
    Case("http-json-space", "source", source('{ type = "http_json", url = "http://127.0.0.1/a b", path = "a" }'),
         "pools[0].signals[0].source.url"),
    Case("header-newline", "source", source('{ type = "http_json", url = "http://127.0.0.1/a", path = "a", '
                                            'headers = { "X-A" = "b\\r\\nX-Evil: 1" } }'),
         "pools[0].signals[0].source.headers"),
    Case("token-env-space", "source", source('{ type = "http_json", url = "http://127.0.0.1/a", path = "a", '
                                             'token_env = "MY TOKEN" }'), "pools[0].signals[0].source.token_env"),
    Case("sqs-region", "source", source('{ type = "sqs", queue_url = "http://127.0.0.1:1/q", region = "mars" }'),
         "pools[0].signals[0].source.region"),
    Case("signal-file-fifo", "source", with_file("s.fifo", None, source('{ type = "file", path = "s.fifo", '
                                                                         'key = "k" }')),
         "pools[0].signals[0].source.path", code="file_kind"),
    # ------------------------------------------------ files
    Case("user-data-missing", "file-ref", pool_key('user_data_file = "nope.yaml"'), "pools[0].user_data_file",
         code="file_missing", subprocess=True),
    Case("user-data-dir", "file-ref", with_dir("ud", pool_key('user_data_file = "ud"')), "pools[0].user_data_file",
         code="file_kind"),
    Case("user-data-too-big", "file-ref", with_file("ud.yaml", b"#" * 70_000, pool_key('user_data_file = "ud.yaml"')),
         "pools[0].user_data_file", code="file_too_large"),
    Case("user-data-binary", "file-ref", with_file("ud.bin", b"\xff\xfe\x00", pool_key('user_data_file = "ud.bin"')),
         "pools[0].user_data_file", code="file_not_text"),
    # ------------------------------------------------ ports and hosts
    Case("port-taken", "port", lambda w: base("metrics_port = 0", f"metrics_port = {w.taken_port}")(w),
         "fleet.metrics_port", code="port_in_use", once_ok=True, subprocess=True),
    Case("host-nul", "port", base("metrics_port = 0", 'metrics_port = 9\nmetrics_host = "a\\u0000b"'),
         "fleet.metrics_host", code="host_unusable", once_ok=True),
    Case("host-not-local", "port", base("metrics_port = 0", 'metrics_port = 9\nmetrics_host = "10.255.255.1"'),
         "fleet.metrics_host", code="host_unusable", once_ok=True),
    # ------------------------------------------------ names and cross-checks
    Case("fleet-name", "name", base('name = "corpus"', 'name = "My Fleet"'), "fleet.name"),
    Case("pool-name-dupe", "name", lambda w: BASE + BASE[BASE.index("[[pools]]"):], "pool names must be unique"),
    Case("queue-wait-without-budget", "name", base('kind = "queue_depth"\n  target_per_machine = 4',
                                                   'kind = "queue_wait"'), "pools[0]"),
    Case("config-is-a-dir", "file", lambda w: "", "it is a directory"),  # the test makes corpus.toml a directory
]

assert len(CASES) >= 70 and len({c.id for c in CASES}) == len(CASES)


class Hang(BaseException):
    """A case ran past its bound (BaseException: the CLI's guard must not swallow it)."""


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()

    class NotAnApi(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b"not here")

        def log_message(self, *args: Any) -> None:
            pass

    wrong = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotAnApi)
    threading.Thread(target=wrong.serve_forever, daemon=True).start()
    with FakeDigitalOcean(token=TOKEN) as fake:
        yield {"taken_port": taken.getsockname()[1], "not_an_api": f"http://127.0.0.1:{wrong.server_port}",
               "do_url": fake.url}
    wrong.shutdown()
    taken.close()


def _world(tmp: Path, servers: dict[str, Any]) -> World:
    return World(tmp=tmp, free_port=free_port(), **servers)


def _write(case: Case, world: World) -> Path:
    content = case.build(world)
    path = world.tmp / NAME
    if case.id == "config-is-a-dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


ENV = {"FLEET_CORPUS_DO_TOKEN": TOKEN, "FLEET_CORPUS_WRONG_TOKEN": "dop_v1_not_the_token",
       "FLEET_LOG_LEVEL": "WARNING"}


def _in_process(args: list[str], cwd: Path, bound_s: float = 20.0) -> Any:
    def hang(*_: Any) -> None:
        raise Hang(f"fleet {' '.join(args)} ran past {bound_s}s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, bound_s)
    here = os.getcwd()
    try:
        os.chdir(cwd)
        return CliRunner().invoke(app, args, env={**ENV, "FLEET_CORPUS_NO_SUCH_TOKEN": None}, catch_exceptions=True)
    finally:
        os.chdir(here)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _assert_refused(case: Case, command: str, code: int, stderr: str, exception: Any = None) -> None:
    what = f"{case.id}: fleet {command}"
    assert exception is None or isinstance(exception, SystemExit), f"{what} raised {exception!r}"
    assert "Traceback" not in stderr, f"{what}:\n{stderr}"
    assert code == 1, f"{what} exited {code}:\n{stderr}"
    errors = [line for line in stderr.splitlines() if line.startswith("error")]
    named = [line for line in errors if case.expect.lower() in line.lower()]
    assert named, f"{what}: no error line names {case.expect!r}:\n{stderr}"
    assert all(NAME in line for line in named), f"{what}: the file is not named:\n{stderr}"
    if case.code is not None:
        assert any(line.endswith(f"[{case.code}]") for line in named), f"{what}: no [{case.code}]:\n{stderr}"
    assert len(stderr.splitlines()) <= 51, f"{what}: one line per problem, at most 50 and a count:\n{stderr}"
    if case.kind != "file":
        assert len(stderr.splitlines()) <= 3, f"{what}: one line per problem expected:\n{stderr}"


def _needs(case: Case) -> None:
    if case.needs_postgres and not tcp_answers("127.0.0.1", 5432):
        unavailable("PostgreSQL on 127.0.0.1:5432 is not running")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_check_and_run_once_refuse_each_bad_config(case: Case, tmp_path: Path, servers: dict[str, Any]) -> None:
    _needs(case)
    _write(case, _world(tmp_path, servers))
    check = _in_process(["check", "--config", NAME], tmp_path)
    _assert_refused(case, "check", check.exit_code, check.stderr, check.exception)
    once = _in_process(["run", "--once", "--config", NAME], tmp_path)
    if case.once_ok:  # a port only the service binds: the one tick runs
        assert once.exit_code == 0, once.stderr
        service = _in_process(["run", "--config", NAME], tmp_path)  # refused before it serves
        _assert_refused(case, "run", service.exit_code, service.stderr, service.exception)
        return
    _assert_refused(case, "run --once", once.exit_code, once.stderr, once.exception)
    assert not (tmp_path / "fleet.db").exists() or case.id.startswith("db-sqlite"), "run --once wrote a database"


SUBPROCESS = [c for c in CASES if c.subprocess]


@pytest.mark.parametrize("case", SUBPROCESS, ids=[c.id for c in SUBPROCESS])
def test_real_processes_refuse_them_too(case: Case, tmp_path: Path, servers: dict[str, Any]) -> None:
    _write(case, _world(tmp_path, servers))
    env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                                              if p)}
    for args in (["check"], ["run"] if case.once_ok else ["run", "--once"]):
        result = subprocess.run([sys.executable, "-m", "fleet.cli", *args, "--config", NAME], cwd=tmp_path, env=env,
                                text=True, capture_output=True, timeout=60)
        _assert_refused(case, " ".join(args), result.returncode, result.stderr)


def test_the_corpus_covers_every_kind() -> None:
    kinds = {c.kind for c in CASES}
    assert {"typo", "type", "nan", "overflow", "file", "database", "endpoint", "source", "file-ref", "port"} <= kinds
