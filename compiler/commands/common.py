"""Options and set-up shared by the compiler's commands."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from proxy.config import CONFIG_VAR
from proxy.extras import MissingExtra, check_storage
from proxy.ledger import open_ledger
from proxy.registry import open_registry
from proxy.settings import Settings

from ..errors import CompilerError, RoundBusy
from ..runner import Context
from ..settings import CompilerSettings


def add_llm_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("compiler LLM and budget")
    g.add_argument(
        "--base-url", help="OpenAI-compatible base URL (…/v1); default: the upstream, else the embedded model"
    )
    g.add_argument("--model", help="model name sent to that endpoint")
    g.add_argument("--api-key", help="API key for that endpoint")
    g.add_argument(
        "--local-model",
        action="store_true",
        help="use the embedded model even if an endpoint is configured (the default without one)",
    )
    g.add_argument(
        "--judge-model", help="judge model at --judge-base-url, or an embedded one (e.g. qwen2.5-coder-1.5b)"
    )
    g.add_argument("--judge-base-url", help="OpenAI-compatible base URL of the judge; default: the compiler's LLM")
    g.add_argument("--seed", type=int)
    g.add_argument("--max-calls", type=int, dest="max_llm_calls", help="LLM call budget of one round")
    g.add_argument("--max-tokens", type=int, help="token budget of one round")
    g.add_argument("--label", dest="publish_label", choices=["candidate", "production"])
    g.add_argument("--gate-margin", type=float)
    g.add_argument("--gate-regenerate", action="store_true", default=None,
                   help="also regenerate held-out answers under both specs (Wilson bound)")  # fmt: skip
    g.add_argument("--top-k", type=int)
    g.add_argument("--format", dest="spec_format", choices=["sections", "persona", "rules"])
    g.add_argument("--passes", type=int, dest="proposal_passes")
    g.add_argument("--validation-pairs", type=int)
    g.add_argument("--gate-pairs", type=int)
    g.add_argument("--no-cache", action="store_true", help="do not read or write the LLM response cache")
    g.add_argument("--config", help="TOML settings file (docs/configuration.md); sets SPECLEARN_CONFIG")
    g.add_argument("--specs-dir", type=Path)
    g.add_argument("--data-dir", type=Path)
    g.add_argument("-v", "--verbose", action="store_true")


OVERRIDES = ("base_url", "model", "judge_base_url", "judge_model", "seed", "max_llm_calls", "max_tokens", "publish_label",
             "gate_margin", "gate_regenerate", "top_k", "spec_format", "proposal_passes", "validation_pairs",
             "gate_pairs")  # fmt: skip


def build_settings(args: argparse.Namespace) -> tuple[Settings, CompilerSettings]:
    """The settings the command line and environment give; MissingExtra if the configured
    storage needs an extra that is not installed."""
    if getattr(args, "config", None):
        os.environ[CONFIG_VAR] = os.path.abspath(args.config)  # read like `speclearn serve --config`
    base: dict[str, Any] = {}
    if getattr(args, "specs_dir", None):
        base["specs_dir"] = args.specs_dir
    if getattr(args, "data_dir", None):
        base["data_dir"] = args.data_dir
    settings = Settings(**base)
    check_storage(settings)
    update = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k, None) is not None}
    if getattr(args, "api_key", None):
        update["api_key"] = SecretStr(args.api_key)
    compiler = CompilerSettings().model_copy(update=update)
    return settings, compiler


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per LLM call is noise


@contextlib.asynccontextmanager
async def context(settings: Settings, compiler: CompilerSettings, *, with_ledger: bool,
                  use_cache: bool = True) -> AsyncIterator[Context]:  # fmt: skip
    registry = open_registry(settings)
    await registry.start()
    ledger = open_ledger(settings) if with_ledger else None
    try:
        if ledger is not None:
            await ledger.start()
        yield Context(settings, compiler, registry, ledger, use_cache=use_cache)
    finally:
        if ledger is not None:
            await ledger.close()
        await registry.close()


def run_cleanly(main: Callable[[], int]) -> int:
    """Run a command; a known failure is one `error: ...` line on stderr, never a traceback:
    exit 75 for a busy spec, 2 for a missing extra, 1 for any other compiler error."""
    try:
        return main()
    except RoundBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 75
    except MissingExtra as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CompilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
