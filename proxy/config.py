"""How settings are loaded, by the proxy and the compiler alike: the environment, then one TOML
file, then the defaults; a name that is no setting stops the process, naming the closest one.

Each process owns a namespace. The proxy: `SPECLEARN_*` and the file's top-level keys. The
compiler: `SPECLEARN_COMPILER_*` and the file's `[compiler]` table. A process checks the names it
owns and leaves the other's alone (the proxy never imports the compiler, so it cannot know them;
the compiler also loads the proxy's settings, so it checks both).

Values the operator should not tune are no setting: they are named constants with their measured
reason in `proxy/tuning.py` and `compiler/tuning.py`. Tests and benchmarks pass other values to the
settings' constructors, or, for a process they start, in the file's `[tuning]` (proxy) and
`[compiler.tuning]` tables; no environment variable sets them.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import tomllib
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

PREFIX = "SPECLEARN_"
CONFIG_VAR = "SPECLEARN_CONFIG"  # the TOML file (`speclearn serve --config` sets it for its workers)
TUNING_TABLE = "tuning"

# `SPECLEARN_*` names that are no setting, read by the tools around the code: start-up accepts them.
NOT_SETTINGS: dict[str, str] = {
    CONFIG_VAR: "the TOML file both processes read",
    "SPECLEARN_REQUIRE_REAL_MODEL": "tests: `1` fails the real-model tests that would skip (the Makefile's `make test`)",
    "SPECLEARN_TEST_DATABASE_URL": "tests and `bench.purge`: the PostgreSQL they use (scripts/ci-postgres.sh prints it)",
    "SPECLEARN_SCREENSHOTS": "tests: where the console's browser tests save screenshots",
    "SPECLEARN_PG_CLUSTER": "scripts/ci-postgres.sh: the PostgreSQL cluster it starts",
    "SPECLEARN_HEALTHCHECK_URL": "the container's health check (Dockerfile): /metrics for the compiler",
    "SPECLEARN_PORT": "deploy/docker-compose.yml: the host port of the proxy",
    "SPECLEARN_EXTRAS": "Dockerfile build argument: the extras installed in the image",
}


class ConfigError(ValueError):
    """Names that are no setting (or a file that cannot be read): one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Namespace:
    """The names one process owns: its environment prefix, its table in the file, its settings."""

    env_prefix: str  # SPECLEARN_ or SPECLEARN_COMPILER_
    table: str | None  # None: the file's top level; "compiler": its [compiler] table
    public: tuple[str, ...]  # settings, from the environment and the file
    tuning: tuple[str, ...]  # measured constants: constructor and [tuning] table only
    tuning_module: str  # where the constants live, for the message that names one
    others_env: tuple[str, ...] = ()  # environment prefixes another process owns
    others_keys: tuple[str, ...] = ()  # keys of this table another process owns

    @classmethod
    def of(cls, settings_cls: type[BaseSettings], tuning_cls: type[BaseModel], **kw: Any) -> Namespace:
        tuning = tuple(tuning_cls.model_fields)
        public = tuple(n for n in settings_cls.model_fields if n not in tuning)
        return cls(public=public, tuning=tuning, tuning_module=tuning_cls.__module__, **kw)

    def env_name(self, field: str) -> str:
        return f"{self.env_prefix}{field.upper()}"

    def key(self, field: str) -> str:
        return f"{self.table}.{field}" if self.table else field


def closest(name: str, candidates: list[str]) -> str | None:
    """The one valid name a misspelt one most likely meant, if any is close (difflib)."""
    found = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return found[0] if found else None


def _unknown(shown: str, suggestion: str | None, tuning_constant: str | None, ns: Namespace) -> str:
    if tuning_constant is not None:
        path = ns.tuning_module.replace(".", "/") + ".py"
        return f"unknown setting {shown}: no longer a setting, a measured constant ({tuning_constant} in {path})"
    if suggestion is not None:
        return f"unknown setting {shown}: did you mean {suggestion}?"
    return f"unknown setting {shown} (every setting: docs/configuration.md)"


def route_key_variables(environ: Mapping[str, str], table: Mapping[str, Any]) -> set[str]:
    """The variables routes name for their upstreams' keys (`api_key_env`): no setting, but no
    mistake either, whatever their name."""
    routes: Any = table.get("routes", {})
    with contextlib.suppress(ValueError):
        routes = json.loads(environ.get(f"{PREFIX}ROUTES", "")) or routes
    names = set()
    for route in routes.values() if isinstance(routes, dict) else ():
        for upstream in route.get("upstreams", []) if isinstance(route, dict) else ():
            if isinstance(upstream, dict) and isinstance(upstream.get("api_key_env"), str):
                names.add(upstream["api_key_env"].upper())
    return names


def unknown_env(ns: Namespace, environ: Mapping[str, str], allowed: AbstractSet[str] = frozenset()) -> list[str]:
    """One line per `SPECLEARN_*` variable in this namespace that is no setting (`allowed`: named
    by another setting)."""
    known = {ns.env_name(f): f for f in ns.public}
    tuning = {ns.env_name(f): f for f in ns.tuning}
    problems = []
    for raw in sorted(environ):
        name = raw.upper()
        if not name.startswith(ns.env_prefix) or name in known or name in NOT_SETTINGS or name in allowed:
            continue
        if any(name.startswith(p) for p in ns.others_env):
            continue
        constant = tuning[name].upper() if name in tuning else None
        # compared without the prefix every candidate shares, which would make any two names close
        candidates = {n.removeprefix(ns.env_prefix): n for n in [*known, *NOT_SETTINGS] if n.startswith(ns.env_prefix)}
        suggestion = closest(name.removeprefix(ns.env_prefix), list(candidates))
        problems.append(_unknown(raw, candidates[suggestion] if suggestion else None, constant, ns))
    return problems


def unknown_keys(ns: Namespace, table: Mapping[str, Any], where: str) -> list[str]:
    """One line per key of this namespace's table in the file that is no setting."""
    problems = []
    for key in table:
        if key in ns.public or key in ns.others_keys or key == TUNING_TABLE:
            continue
        shown = f"{ns.key(key)} in {where}"
        if ns.table is None and key.startswith("compiler_"):
            problems.append(f"unknown setting {shown}: the compiler's settings go in its [compiler] table "
                            f"(did you mean compiler.{key.removeprefix('compiler_')}?)")  # fmt: skip
            continue
        constant = key.upper() if key in ns.tuning else None
        suggestion = closest(key, list(ns.public))
        problems.append(_unknown(shown, ns.key(suggestion) if suggestion else None, constant, ns))
    tuning = table.get(TUNING_TABLE, {})
    if not isinstance(tuning, dict):
        return [*problems, f"{ns.key(TUNING_TABLE)} in {where} must be a table"]
    for key in tuning:
        if key not in ns.tuning:
            suggestion = closest(key, list(ns.tuning))
            hint = f": did you mean {ns.key(TUNING_TABLE)}.{suggestion}?" if suggestion else ""
            problems.append(f"unknown constant {ns.key(TUNING_TABLE)}.{key} in {where}{hint}")
    return problems


def config_path(environ: Mapping[str, str]) -> Path | None:
    value = environ.get(CONFIG_VAR)
    return Path(value) if value else None


def read_file(path: Path) -> dict[str, Any]:
    """The TOML file as a dict; ConfigError (one line) if it is missing or not TOML."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError([f"{CONFIG_VAR}={path}: cannot read it ({exc.strerror})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{CONFIG_VAR}={path}: not TOML ({exc})"]) from None


def table_of(ns: Namespace, data: dict[str, Any], where: str) -> dict[str, Any]:
    if ns.table is None:
        return data
    table = data.get(ns.table, {})
    if not isinstance(table, dict):
        raise ConfigError([f"{ns.table} in {where} must be a table ([{ns.table}])"])
    return table


class ConfigSource(PydanticBaseSettingsSource):
    """The environment over the file, for the settings; the file's [tuning] table for the
    constants. Every unknown name is reported at once, before any value is read."""

    def __init__(self, settings_cls: type[BaseSettings], ns: Namespace) -> None:
        super().__init__(settings_cls)
        self.ns = ns
        self.env = EnvSettingsSource(settings_cls)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        raise NotImplementedError  # __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        environ = os.environ
        table: dict[str, Any] = {}
        problems: list[str] = []
        path = config_path(environ)
        if path is not None:
            table = table_of(self.ns, read_file(path), str(path))
            problems = unknown_keys(self.ns, table, str(path))
        problems = unknown_env(self.ns, environ, route_key_variables(environ, table)) + problems
        if problems:
            raise ConfigError(problems)
        values = {k: v for k, v in table.items() if k in self.ns.public}
        values.update(table.get(TUNING_TABLE, {}))
        values.update({k: v for k, v in self.env().items() if k in self.ns.public})
        return values


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string


def write_tuning(path: Path, proxy: Mapping[str, object] | None = None,
                 compiler: Mapping[str, object] | None = None) -> dict[str, str]:  # fmt: skip
    """A config file holding only constants for a process a test or a benchmark starts; returns
    the environment that names it. Its values are checked like any file's when the process starts."""
    lines = [f"[{TUNING_TABLE}]", *(f"{k} = {_toml_value(v)}" for k, v in (proxy or {}).items())]
    lines += [f"[compiler.{TUNING_TABLE}]", *(f"{k} = {_toml_value(v)}" for k, v in (compiler or {}).items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {CONFIG_VAR: str(path)}


class ConfiguredSettings(BaseSettings):
    """Settings read from one namespace of the environment and the config file (`ConfigSource`),
    never from pydantic's own sources, which would accept any name; `namespace` is set once the
    class it describes exists."""

    namespace: ClassVar[Namespace]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, ConfigSource(settings_cls, cls.namespace)
