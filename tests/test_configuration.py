"""One typed configuration: both processes read the environment over one TOML file, refuse a name
that is no setting with the closest valid one, and docs/configuration.md is written from them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from compiler import tuning as compiler_tuning
from compiler.config_doc import PAGE, page
from compiler.settings import NAMESPACE as COMPILER
from compiler.settings import CompilerSettings
from proxy import tuning as proxy_tuning
from proxy.cli import main
from proxy.config import NOT_SETTINGS, ConfigError
from proxy.settings import NAMESPACE as PROXY
from proxy.settings import Settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test sets: CI's own SPECLEARN_* names must not decide a test here."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("SPECLEARN_"):
            monkeypatch.delenv(name)


def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "speclearn.toml"
    path.write_text(text)
    monkeypatch.setenv("SPECLEARN_CONFIG", str(path))
    return path


def problems(build: type[Settings] | type[CompilerSettings]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build()
    return caught.value.problems


# --- what is a setting ----------------------------------------------------------------------------


def test_fewer_than_40_public_settings() -> None:
    assert len(PROXY.public) + len(COMPILER.public) < 40
    # every one is documented by its own description, which the page shows
    for cls, ns in ((Settings, PROXY), (CompilerSettings, COMPILER)):
        for name in ns.public:
            assert cls.model_fields[name].description, f"{name} has no description for docs/configuration.md"


@pytest.mark.parametrize(("module", "tuning_cls"), [(proxy_tuning, proxy_tuning.ProxyTuning),
                                                    (compiler_tuning, compiler_tuning.CompilerTuning)])  # fmt: skip
def test_every_tuning_field_is_a_named_constant_with_its_reason(module: object, tuning_cls: type) -> None:
    """A tuning field's default is the module constant of its name in capitals, and the source
    says something beside that constant (the reason): on its line, or in the comment above it or
    above the group of constants it opens."""
    source = Path(module.__file__).read_text().splitlines()  # type: ignore[attr-defined]
    for name, info in tuning_cls.model_fields.items():
        constant = getattr(module, name.upper())
        default = info.default_factory() if info.default_factory else info.default
        assert default == (list(constant) if isinstance(constant, tuple) else constant), name
        line = next(i for i, text in enumerate(source) if re.match(rf"{name.upper()}(: [^=]+)? = ", text))
        above = line  # constants grouped under one comment share it
        while re.match(r"[A-Z_]+(: [^=]+)? = [^#]*$", source[above - 1]):
            above -= 1
        assert "#" in source[line] or source[above - 1].startswith("#"), f"{name.upper()} has no reason beside it"


def test_settings_and_constants_do_not_overlap() -> None:
    for ns in (PROXY, COMPILER):
        assert not set(ns.public) & set(ns.tuning)


# --- the environment --------------------------------------------------------------------------------


def test_a_misspelt_variable_names_the_closest_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECLEARN_LEDGER_RETENTON_DAYS", "30")
    monkeypatch.setenv("SPECLEARN_UPSTREAM_ULR", "http://x/v1")
    assert problems(Settings) == [
        "unknown setting SPECLEARN_LEDGER_RETENTON_DAYS: did you mean SPECLEARN_LEDGER_RETENTION_DAYS?",
        "unknown setting SPECLEARN_UPSTREAM_ULR: did you mean SPECLEARN_UPSTREAM_URL?",
    ]


def test_a_former_setting_names_its_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECLEARN_LEDGER_BATCH_SIZE", "64")
    monkeypatch.setenv("SPECLEARN_COMPILER_GATE_ALPHA", "0.5")
    assert problems(Settings) == [
        "unknown setting SPECLEARN_LEDGER_BATCH_SIZE: no longer a setting, a measured constant "
        "(LEDGER_BATCH_SIZE in proxy/tuning.py)"
    ]  # the proxy leaves SPECLEARN_COMPILER_* to the compiler, which refuses it
    monkeypatch.delenv("SPECLEARN_LEDGER_BATCH_SIZE")
    assert problems(CompilerSettings) == [
        "unknown setting SPECLEARN_COMPILER_GATE_ALPHA: no longer a setting, a measured constant "
        "(GATE_ALPHA in compiler/tuning.py)"
    ]


def test_the_compiler_checks_its_own_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECLEARN_COMPILER_JUDGE_MODLE", "m")
    assert Settings().upstream_url is None  # not the proxy's to judge
    assert problems(CompilerSettings) == [
        "unknown setting SPECLEARN_COMPILER_JUDGE_MODLE: did you mean SPECLEARN_COMPILER_JUDGE_MODEL?"
    ]


def test_names_with_no_setting_the_tools_use_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NOT_SETTINGS:
        monkeypatch.setenv(name, "1")
    monkeypatch.delenv("SPECLEARN_CONFIG")
    assert Settings().read_timeout == 600
    assert CompilerSettings().max_llm_calls == 400


def test_no_variable_sets_the_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECLEARN_TUNING", '{"ledger_batch_size": 1}')
    [problem] = problems(Settings)
    assert problem.startswith("unknown setting SPECLEARN_TUNING")
    monkeypatch.setenv("SPECLEARN_XYZZY", "1")
    assert "unknown setting SPECLEARN_XYZZY (every setting: docs/configuration.md)" in problems(Settings)


def test_a_variable_a_route_names_for_its_key_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECLEARN_BACKUP_KEY", "sk-b")
    [problem] = problems(Settings)
    assert problem.startswith("unknown setting SPECLEARN_BACKUP_KEY")
    route = {"chat": {"upstreams": [{"url": "http://b/v1", "model": "m", "api_key_env": "SPECLEARN_BACKUP_KEY"}]}}
    monkeypatch.setenv("SPECLEARN_ROUTES", json.dumps(route))
    assert Settings().routes["chat"].upstreams[0].api_key() == "sk-b"


def test_unrelated_variables_are_not_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECLEARNING_RATE", "1")
    monkeypatch.setenv("MY_SPECLEARN_X", "1")
    assert Settings().default_spec == "default"


# --- the file ------------------------------------------------------------------------------------------


def test_the_compiler_reads_its_table_and_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, monkeypatch, 'upstream_url = "http://file/v1"\n[compiler]\nmax_llm_calls = 50\n'
                 'judge_model = "from-file"\nrequire_approval = true\n')  # fmt: skip
    monkeypatch.setenv("SPECLEARN_COMPILER_JUDGE_MODEL", "from-env")
    compiler, settings = CompilerSettings(), Settings()
    assert (compiler.max_llm_calls, compiler.judge_model, compiler.require_approval) == (50, "from-env", True)
    assert settings.upstream_url == "http://file/v1"
    assert compiler.resolved_base_url(settings) == "http://file/v1"
    assert CompilerSettings(max_llm_calls=7).max_llm_calls == 7  # the constructor wins over both


def test_a_misspelt_key_names_the_closest_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, monkeypatch, 'ledger_retenton_days = 3\ncompiler_model = "m"\n'
                        '[compiler]\nmax_llm_cals = 3\nmetrics_port = 1\n')  # fmt: skip
    assert problems(Settings) == [
        f"unknown setting ledger_retenton_days in {path}: did you mean ledger_retention_days?",
        f"unknown setting compiler_model in {path}: the compiler's settings go in its [compiler] table "
        "(did you mean compiler.model?)",
    ]
    assert problems(CompilerSettings) == [
        f"unknown setting compiler.max_llm_cals in {path}: did you mean compiler.max_llm_calls?",
        f"unknown setting compiler.metrics_port in {path}: no longer a setting, a measured constant "
        "(METRICS_PORT in compiler/tuning.py)",
    ]


def test_tuning_tables_set_constants_for_the_processes_tests_start(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    path = write_config(tmp_path, monkeypatch, "[tuning]\nledger_flush_interval = 0.5\n"
                        "[compiler.tuning]\nholdout_fraction = 0.6\njudges = ['pairwise']\n")  # fmt: skip
    assert Settings().ledger_flush_interval == 0.5
    compiler = CompilerSettings()
    assert (compiler.holdout_fraction, compiler.judges, compiler.gate_alpha) == (0.6, ["pairwise"], 0.05)
    path.write_text("[tuning]\nledger_flush_intervall = 0.5\n")
    assert problems(Settings) == [
        f"unknown constant tuning.ledger_flush_intervall in {path}: did you mean tuning.ledger_flush_interval?"
    ]


def test_a_file_that_cannot_be_read_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECLEARN_CONFIG", str(tmp_path / "missing.toml"))
    assert problems(Settings) == [
        f"SPECLEARN_CONFIG={tmp_path / 'missing.toml'}: cannot read it (No such file or directory)"
    ]
    (tmp_path / "bad.toml").write_text("upstream_url = \n")
    monkeypatch.setenv("SPECLEARN_CONFIG", str(tmp_path / "bad.toml"))
    assert problems(Settings)[0].startswith(f"SPECLEARN_CONFIG={tmp_path / 'bad.toml'}: not TOML")


def test_constructor_keywords_are_checked_too() -> None:
    """Benchmarks pass `CompilerSettings(**overrides)`: a misspelt override fails, never runs the defaults."""
    from pydantic import ValidationError

    assert CompilerSettings(max_candidates=5, top_k=3).max_candidates == 5
    with pytest.raises(ValidationError, match="max_candidate"):
        CompilerSettings(max_candidate=5)


# --- start-up -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["serve"], ["compile", "default", "--dry-run"], ["feedback", "purge"]])
def test_start_up_refuses_unknown_names_one_line_each(command: list[str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPECLEARN_DATA_DIRR", str(tmp_path))
    monkeypatch.setenv("SPECLEARN_ADMIN_KYE", "k")
    assert main(command) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: unknown setting SPECLEARN_ADMIN_KYE: did you mean SPECLEARN_ADMIN_KEY?",
        "error: unknown setting SPECLEARN_DATA_DIRR: did you mean SPECLEARN_DATA_DIR?",
    ]
    assert not (tmp_path / "data").exists()  # it stopped before opening anything


def test_compile_takes_the_file_by_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    config = tmp_path / "c.toml"
    config.write_text("[compiler]\nmax_llm_call = 3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPECLEARN_CONFIG", "")  # the command sets it: undone after the test
    assert main(["compile", "default", "--dry-run", "--config", str(config)]) == 2
    assert "did you mean compiler.max_llm_calls?" in capsys.readouterr().err


# --- every SPECLEARN_ name the project writes is a setting, or says what it is ---------------------


def known_names() -> set[str]:
    return (
        {PROXY.env_name(f) for f in PROXY.public} | {COMPILER.env_name(f) for f in COMPILER.public} | set(NOT_SETTINGS)
    )


def test_every_name_the_code_deploy_files_and_tests_write_is_known() -> None:
    files = [*REPO.glob("proxy/**/*.py"), *REPO.glob("compiler/**/*.py"), *REPO.glob("tests/**/*.py"),
             *REPO.glob("deploy/**/*.y*ml"), *REPO.glob("scripts/*"), *REPO.glob("proxy/console/**/*.html"),
             REPO / "Dockerfile", REPO / "Makefile"]  # fmt: skip
    known = known_names()
    # this file writes wrong names on purpose; the page and its writer name the former ones
    allowed_here = {"tests/test_configuration.py", "compiler/config_doc.py"}
    unknown = {}
    for path in files:
        rel = str(path.relative_to(REPO))
        if rel in allowed_here or not path.is_file():
            continue
        for name in re.findall(r"\bSPECLEARN_[A-Z][A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="replace")):
            if name not in known and not name.startswith(("SPECLEARN_COMPILER_*",)):
                unknown.setdefault(name, rel)
    assert not unknown, f"names that are no setting (name: first file): {unknown}"


def test_every_name_the_docs_and_benchmarks_write_is_known() -> None:
    """A page that names a former setting sends an operator to a variable start-up refuses."""
    # docs/bench-log.md is a dated history and docs/configuration.md names the former ones on purpose
    skipped = {"docs/bench-log.md", "docs/configuration.md"}
    files = [REPO / "README.md", *REPO.glob("docs/*.md"), REPO / "deploy" / "README.md",
             REPO / "bench" / "README.md", *REPO.glob("bench/**/*.py")]  # fmt: skip
    known = known_names()
    unknown: dict[str, list[str]] = {}
    for path in files:
        rel = str(path.relative_to(REPO))
        if rel in skipped or not path.is_file():
            continue
        for name in sorted(set(re.findall(r"\bSPECLEARN_[A-Z][A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="replace")))):
            if name not in known:
                unknown.setdefault(rel, []).append(name)
    assert {"README.md", "docs/compiler.md", "deploy/README.md"} <= {str(f.relative_to(REPO)) for f in files}
    assert not unknown, f"former settings named (file: names; docs/configuration.md says what replaced each): {unknown}"


# --- the page ----------------------------------------------------------------------------------------------


def test_docs_configuration_md_is_what_the_settings_say() -> None:
    assert PAGE.read_text(encoding="utf-8") == page(), "docs/configuration.md is stale: python -m compiler.config_doc"


def test_the_page_lists_every_setting_with_its_default() -> None:
    text = page()
    for ns in (PROXY, COMPILER):
        for field in ns.public:
            assert f"| `{ns.env_name(field)}` |" in text
    assert "| `SPECLEARN_LEDGER_RETENTION_DAYS` | unset | rows older than this" in text
    assert "| `SPECLEARN_INJECTION` | `prepend` |" in text
    assert "| `LEDGER_BATCH_SIZE` | `512` | `SPECLEARN_LEDGER_BATCH_SIZE` |" in text
