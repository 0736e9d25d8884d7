"""A spec's two parts: the text a person wrote, and the section the compiler owns.

A compile round edits a spec, it never rewrites it: the person's text (their instruction or their
whole production prompt, any length, any Markdown) is served byte for byte, and what the compiler
learned follows it under one heading that only the compiler writes. The heading is the delimiter,
so anyone reading a version file (or the diff of two) sees where the person's words end:

    <the person's text, unchanged>

    ## Learned from feedback

    - End every answer with "Hope this helps!".

Pure text functions, shared by the compiler (which writes the section) and the console (which
shows the two parts apart).
"""

from __future__ import annotations

LEARNED_HEADING = "## Learned from feedback"
_MARKER = "\n" + LEARNED_HEADING + "\n"


def split_spec(text: str) -> tuple[str, str]:
    """(human part, learned section body). The section starts at the last line that is exactly
    the heading and runs to the end; the blank lines before the heading belong to neither part,
    nor do trailing line breaks. A text without the heading is all human."""
    padded = "\n" + text + "\n"
    at = padded.rfind(_MARKER)
    if at < 0:
        return text.rstrip("\n"), ""
    return padded[1:at].rstrip("\n"), padded[at + len(_MARKER) :].strip("\n")


def compose(human: str, learned: str) -> str:
    """The served text: the human part byte for byte (it is a prefix of the result), then the
    learned section; just the human part when nothing was learned."""
    body = learned.strip("\n")
    if not body:
        return human
    if not human.strip():
        return f"{LEARNED_HEADING}\n\n{body}\n"
    gap = "" if human.endswith("\n\n") else "\n" if human.endswith("\n") else "\n\n"
    return f"{human}{gap}{LEARNED_HEADING}\n\n{body}\n"


def bullets(rules: list[str]) -> str:
    """The learned rules as a Markdown list, each in the words it was validated in."""
    return "\n".join(f"- {' '.join(rule.split())}" for rule in rules)
