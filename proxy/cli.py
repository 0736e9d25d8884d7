"""The `speclearn` command. Each sub-command lives in its own module, imported only when used,
so `speclearn specs list` never loads the server and the proxy never imports the compiler: this
file names the compiler's commands as strings, the one place in proxy/ that does (the import
contract in pyproject.toml holds every other module to it)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from types import ModuleType

from .config import ConfigError

# name -> (module with configure(parser) and run(args), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("proxy.commands.serve", "run the OpenAI-compatible proxy"),
    "specs": ("proxy.commands.specs", "list, show, diff, publish, label, approve/reject spec versions; experiments"),
    "feedback": ("proxy.commands.feedback", "export feedback joined to inferences as JSONL"),
    "local-model": ("proxy.commands.local_model", "serve the embedded local model on loopback"),
    "compile": ("compiler.commands.compile", "compile a new spec version from feedback (one round)"),
    "compiler": ("compiler.commands.sidecar", "run the compiler sidecar loop"),
    "doctor": ("compiler.commands.doctor", "check the compiler's endpoints: model, key, logprobs, embeddings"),
    "demo": ("compiler.commands.demo", "the whole learning loop on the local model, before/after"),
}

# A proxy command whose options stay its own (one --help) but whose work, for some arguments, is the
# compiler's: command -> (does this parse need the compiler?, the compiler module whose run(args) does it)
HANDOFFS: dict[str, tuple[Callable[[argparse.Namespace], bool], str]] = {
    "feedback": (lambda a: a.action == "export" and a.format == "dpo", "compiler.commands.feedback_dpo"),
}


def _usage() -> str:
    lines = ["usage: speclearn COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "speclearn COMMAND --help for the options of one command"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"speclearn: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[name]
    module = _load(name, module_name)
    if module is None:
        return 2
    parser = argparse.ArgumentParser(prog=f"speclearn {name}", description=help_)
    module.configure(parser)
    args = parser.parse_args(rest)
    handoff = HANDOFFS.get(name)
    if handoff is not None and handoff[0](args):
        module = _load(name, handoff[1])
        if module is None:
            return 2
    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:  # a misspelt setting: one line each, naming the closest valid one
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2


def _load(name: str, module_name: str) -> ModuleType | None:
    """The command's module; None (after one line on stderr) if an extra it needs is missing."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        print(f"speclearn {name}: not available ({exc})", file=sys.stderr)
        return None


if __name__ == "__main__":
    raise SystemExit(main())
