"""The spec version file: YAML front matter (metadata) + Markdown body (the spec text)."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml


class SpecFileError(ValueError):
    """A version file that must not be served (bad front matter or a body that fails its hash)."""


def body_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def render(meta: dict[str, Any], text: str) -> str:
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100)
    body = text if text.endswith("\n") else text + "\n"
    return f"---\n{front}---\n{body}"


def parse(raw: str) -> tuple[dict[str, Any], str]:
    """Split a version file and check the body against the recorded sha256."""
    if not raw.startswith("---\n"):
        return {}, raw
    end = raw.find("\n---\n", 3)
    if end < 0:
        raise SpecFileError("front matter is not closed by a '---' line")
    try:
        meta = yaml.safe_load(raw[4:end]) or {}
    except yaml.YAMLError as exc:
        raise SpecFileError(f"front matter is not valid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise SpecFileError("front matter must be a mapping")
    text = raw[end + 5 :]
    recorded = meta.get("sha256")
    if recorded and recorded != body_sha256(text):
        raise SpecFileError("body does not match the sha256 in its front matter")
    return meta, text
