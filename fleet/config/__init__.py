"""TOML → validated, frozen config.  Every error names its key path and file.

The key names here are the user-facing contract (see config.example.toml):
add keys freely, never rename one.  Unknown keys are errors everywhere, so a
misspelled cap can never be silently ignored.

One module per part of the file: `sections` ([fleet], [budget], [providers.*]),
`sources` and `signals` (what a pool reads), `pools`, `root` (the whole `Config`),
`errors` and `load` (TOML to `Config`, problems named by key path), `unused` (keys
accepted that have no effect where they stand: `Config.warnings()`).  Import the
names from `fleet.config`.
"""

from fleet.config.base import LABEL_NAME, NAME_PATTERN, ConfigPath, NonNegFloat, PositiveFloat, Strict
from fleet.config.errors import ConfigError
from fleet.config.load import load_config, parse_config
from fleet.config.pools import (
    AWS_KEYS,
    MACHINE_WORK_PRESETS,
    MachineWorkConfig,
    PoolConfig,
    SimulationSettings,
)
from fleet.config.root import Config
from fleet.config.sections import (
    AwsProviderConfig,
    BudgetSection,
    DigitalOceanProviderConfig,
    FleetSection,
    ProvidersSection,
    SimulatedProviderConfig,
)
from fleet.config.signals import (
    PRESET_KINDS,
    BacklogSecondsSignal,
    GpuUtilizationSignal,
    MemoryPressureSignal,
    QueueDepthSignal,
    QueueWaitSignal,
    Signal,
    SignalConfig,
    signal_name,
)
from fleet.config.sources import (
    FileSource,
    HttpJsonSource,
    PrometheusSource,
    RabbitMQSource,
    RedisSource,
    SourceConfig,
    SqsSource,
    StaticSource,
)
from fleet.config.unused import ConfigWarning, WarningCode, unused_keys

__all__ = [
    "AWS_KEYS", "LABEL_NAME", "MACHINE_WORK_PRESETS", "NAME_PATTERN", "PRESET_KINDS",
    "AwsProviderConfig", "BacklogSecondsSignal", "BudgetSection", "Config", "ConfigError", "ConfigPath", "ConfigWarning",
    "DigitalOceanProviderConfig", "FileSource", "FleetSection", "GpuUtilizationSignal", "HttpJsonSource",
    "MachineWorkConfig", "MemoryPressureSignal", "NonNegFloat", "PoolConfig", "PositiveFloat",
    "PrometheusSource", "ProvidersSection", "QueueDepthSignal", "QueueWaitSignal", "RabbitMQSource",
    "RedisSource", "Signal", "SignalConfig", "SimulatedProviderConfig", "SimulationSettings", "SourceConfig",
    "SqsSource", "StaticSource", "Strict", "WarningCode", "load_config", "parse_config", "signal_name", "unused_keys",
]
