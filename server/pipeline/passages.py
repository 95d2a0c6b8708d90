"""A knowledge file's passages: a venue's facts in Markdown or TOML, read into `Passage`s (one
per section, FAQ entry or fact) for the index (knowledge.py). Pure code: text in, passages out.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from server.errors import ChinwagException


class KnowledgeFileError(ChinwagException):
    """A knowledge file is missing or malformed (a deployment error, reported at start-up)."""


Kind = Literal["fact", "faq"]


@dataclass(frozen=True)
class Passage:
    """One section, FAQ entry or fact of a knowledge file."""

    title: str
    text: str
    kind: Kind = "fact"
    keywords: tuple[str, ...] = ()

    def render(self) -> str:
        """How the passage is shown to the model."""
        if self.kind == "faq":
            return f"Q: {self.title}\nA: {self.text}"
        return f"{self.title}: {self.text}" if self.title else self.text

    def units(self) -> list[str]:
        """The passage cut into sentences and list items, for extractive answers."""
        out: list[str] = []
        for line in self.text.splitlines():
            line = line.strip().lstrip("-*• ").strip()
            if not line:
                continue
            out.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9])", line) if s)
        return out


def parse_markdown(text: str) -> tuple[str | None, list[Passage]]:
    """`#` names the venue; each `##` section is a passage, and each `###` under it one more
    (a question heading makes an FAQ entry). HTML comments are left out."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    title: str | None = None
    passages: list[Passage] = []
    section: str | None = None
    heading: str | None = None
    body: list[str] = []

    def close() -> None:
        content = "\n".join(body).strip()
        if heading is not None and content:
            is_faq = heading.endswith("?")
            passages.append(Passage(heading, content, "faq" if is_faq else "fact"))
        body.clear()

    for line in text.splitlines():
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match is None:
            if heading is not None or section is not None:
                body.append(line)
            continue
        level, name = len(match.group(1)), match.group(2).strip()
        close()
        if level == 1:
            title, section, heading = name, None, None
        elif level == 2:
            section, heading = name, name
        else:
            heading = name if name.endswith("?") or section is None else f"{section}, {name}"
    close()
    return title, passages


def parse_toml(text: str, source: str) -> tuple[str | None, str | None, list[Passage]]:
    """`name` and `ask` at the top (or under [venue]); `[[facts]]` with title, text and
    optional keywords; `[[faq]]` with question and answer; any other table of strings becomes
    one passage per table (key: value lines)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KnowledgeFileError(f"{source}: {exc}") from exc
    venue = data.get("venue", {}) if isinstance(data.get("venue"), dict) else {}
    title = _str(data.get("name") or venue.get("name"))
    ask = _str(data.get("ask") or venue.get("ask"))
    passages: list[Passage] = []
    for entry in _tables(data.get("facts", []), source, "facts"):
        passages.append(
            Passage(
                _required(entry, "title", source),
                _required(entry, "text", source),
                "fact",
                tuple(str(k) for k in entry.get("keywords", [])),
            )
        )
    for entry in _tables(data.get("faq", []), source, "faq"):
        passages.append(
            Passage(
                _required(entry, "question", source),
                _required(entry, "answer", source),
                "faq",
                tuple(str(k) for k in entry.get("keywords", [])),
            )
        )
    for key, value in data.items():
        if key in {"facts", "faq"} or not isinstance(value, dict):
            continue
        lines = [f"{k.replace('_', ' ')}: {v}" for k, v in value.items() if isinstance(v, str)]
        if key == "venue":
            lines = [
                line for line in lines if not line.startswith(("name:", "ask:"))
            ]  # fmt: skip
        if lines:
            passages.append(Passage(key.replace("_", " ").capitalize(), "\n".join(lines)))
    return title, ask, passages


def _str(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _tables(value: object, source: str, key: str) -> Iterable[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise KnowledgeFileError(f"{source}: [[{key}]] must be an array of tables")
    return value


def _required(entry: dict[str, Any], key: str, source: str) -> str:
    value = _str(entry.get(key))
    if value is None:
        raise KnowledgeFileError(f"{source}: every entry needs a non-empty {key!r}")
    return value
