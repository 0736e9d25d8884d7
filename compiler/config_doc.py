"""docs/configuration.md, written from the settings classes: `python -m compiler.config_doc`.

Every setting of both processes, its default and its meaning (the field's description), then the
`SPECLEARN_*` names that are no setting and the measured constants. It lives in the compiler
because the compiler is the package that sees both processes' settings (the proxy never imports
it). tests/test_configuration.py regenerates the page and fails when the file differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from proxy import tuning as proxy_tuning
from proxy.config import NOT_SETTINGS, Namespace
from proxy.settings import NAMESPACE as PROXY
from proxy.settings import Settings

from . import tuning as compiler_tuning
from .settings import NAMESPACE as COMPILER
from .settings import CompilerSettings

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

INTRO = """\
# Configuration

<!-- Written by `python -m compiler.config_doc` from proxy/settings.py and compiler/settings.py:
edit a setting's description there and run it again; tests/test_configuration.py fails when this
page differs from what it writes. -->

Both processes read their settings the same way: environment variables over one TOML file over
the defaults below. The proxy (`speclearn serve`, `specs`, `feedback`) reads `SPECLEARN_*` and the
file's top-level keys; the compiler (`speclearn compile`, `compiler`, `doctor`) reads
`SPECLEARN_COMPILER_*` and the file's `[compiler]` table, and the proxy's settings for the upstream
and the storage it shares. A key in the file is the variable's name after the prefix, in lower
case. The file is named by `SPECLEARN_CONFIG`, or by `--config` on the commands. Booleans are `1`
or `0` in the environment, `true` or `false` in the file; lists are comma-separated in the
environment, arrays in the file; maps are JSON in the environment, tables in the file. The
variables a route names for its upstreams' keys (`api_key_env`) are read as named.

```toml
# speclearn.toml: SPECLEARN_CONFIG=speclearn.toml speclearn serve
upstream_url = "https://api.openai.com/v1"
ledger_retention_days = 90

[routes.support-bot]
model = "gpt-4o-mini"
spec = "support"

[compiler]
embedding_model = "text-embedding-3-small"
require_approval = true
```

A name that is no setting stops the process at start-up, one line for each, with the closest
valid name (each process checks the names it owns: the proxy leaves `SPECLEARN_COMPILER_*` and
`[compiler]` to the compiler):

```
error: unknown setting SPECLEARN_LEDGER_RETENTON_DAYS: did you mean SPECLEARN_LEDGER_RETENTION_DAYS?
```
"""

CONSTANTS = """\
## Measured constants

Values an operator should not tune are no setting: they are named constants, each beside the
measurement or the reason that chose it, in [proxy/tuning.py](../proxy/tuning.py) and
[compiler/tuning.py](../compiler/tuning.py). Most were settings before; a variable of that name
is now refused at start-up and names the constant. Tests and benchmarks pass other values to the
settings' constructors; a process a test starts reads them from the file's `[tuning]` and
`[compiler.tuning]` tables. Some are options of a command, which a deploy file gives as `args`:
`speclearn compile` and `speclearn compiler` take `--label`, `--format`, `--passes`, `--top-k`,
`--gate-margin`, `--max-tokens` and `--seed`; `speclearn compiler` also `--auto-promote`,
`--interval`, `--min-feedback` and `--metrics-port`; `speclearn local-model` takes `--port`,
`--threads`, `--ctx` and `--parallel`.
"""


def shown(value: Any, *, python: bool = False) -> str:
    """A default as an operator would write it (a constant: as the code does)."""
    if value is None or isinstance(value, SecretStr):
        return "`None`" if python else "unset"
    if isinstance(value, bool):
        return f"`{value}`" if python else "`1`" if value else "`0`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if isinstance(value, Path):
        home = Path.home()
        if value.is_relative_to(home):
            return f"`~/{value.relative_to(home)}`"
        return f"`{value}`" if value.is_absolute() else f"`./{value}`"
    if isinstance(value, (list, tuple)):
        return f"`{','.join(map(str, value))}`" if value else "none"
    if isinstance(value, dict):
        return "none" if not value else f"`{value}`"
    return f"`{value}`"


def default_of(model: type[BaseModel], field: str) -> Any:
    info = model.model_fields[field]
    return info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]


def settings_table(settings_cls: type[BaseSettings], ns: Namespace) -> list[str]:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for field in ns.public:
        description = (settings_cls.model_fields[field].description or "").replace("|", "\\|")
        rows.append(f"| `{ns.env_name(field)}` | {shown(default_of(settings_cls, field))} | {description} |")
    return rows


def constants_table(tuning_cls: type[BaseModel], ns: Namespace, module: Any) -> list[str]:
    path = module.__name__.replace(".", "/") + ".py"
    rows = [f"| [{path}](../{path}) | value | was |", "| --- | --- | --- |"]
    for field in ns.tuning:
        rows.append(
            f"| `{field.upper()}` | {shown(default_of(tuning_cls, field), python=True)} | `{ns.env_name(field)}` |"
        )
    return rows


def page() -> str:
    """The whole of docs/configuration.md."""
    lines = [INTRO]
    lines += [f"## The proxy: {len(PROXY.public)} settings", "", *settings_table(Settings, PROXY), ""]
    lines += [f"## The compiler: {len(COMPILER.public)} settings", ""]
    lines += ["In the file: the `[compiler]` table, keys without `compiler_`.", ""]
    lines += [*settings_table(CompilerSettings, COMPILER), ""]
    lines += [
        "## Not settings",
        "",
        "`SPECLEARN_*` names that are read by the tools around the code; start-up accepts them.",
        "",
    ]
    lines += ["| variable | what reads it |", "| --- | --- |"]
    lines += [f"| `{name}` | {what} |" for name, what in NOT_SETTINGS.items()]
    lines += ["", CONSTANTS]
    lines += [*constants_table(proxy_tuning.ProxyTuning, PROXY, proxy_tuning), ""]
    lines += [*constants_table(compiler_tuning.CompilerTuning, COMPILER, compiler_tuning)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compiler.config_doc", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PAGE, help=f"default: {PAGE}")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file differs")
    args = parser.parse_args(argv)
    text = page()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: python -m compiler.config_doc", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
