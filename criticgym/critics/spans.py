"""Reading a critic LM's answer, and finding the spans it names in the completion.

The answer format the prompts ask for::

    Positive spans:
    Span 1: "a joy to watch"
    Negative spans:
    None identified

Real answers drift: bullets instead of "Span N:", missing or curly quotes, a whole sentence around the span,
"None" or "N/A", junk. :func:`parse_answer` takes what it can and never raises; :func:`locate` finds each named
span by character offsets (exact text first, then ignoring case and runs of whitespace), choosing the occurrence
after the previous span of the answer when a phrase repeats.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_HEADER = re.compile(
    r"^\W*(positive|good|negative|bad|toxic|offensive|error)[\w ]*(spans?|phrases?|parts?)?\W*:?\W*$", re.I
)
_INLINE_HEADER = re.compile(r"^\W*(positive|good|negative|bad|toxic|offensive)\s+spans?\s*:\s*(.+)$", re.I)
_ITEM = re.compile(r"^\s*(?:span\s*\d+\s*[:.)-]|[-*\u2022]|\d+\s*[.)])\s*(.+?)\s*$", re.I)
_NONE = re.compile(r"^\W*(none( identified| found)?|n/?a|no spans?( identified| found)?|nothing)\W*$", re.I)
_QUOTED = re.compile(r"[\"\u201c\u201d\u00ab\u00bb']([^\"\u201c\u201d\u00ab\u00bb]+?)[\"\u201c\u201d\u00ab\u00bb']")
_POSITIVE = {"positive", "good"}


class NamedSpan(NamedTuple):
    """A span as the critic wrote it: its text and its sign (+1 good, -1 bad)."""

    text: str
    sign: int


class Parsed(NamedTuple):
    """What could be read from an answer."""

    spans: list[NamedSpan]
    ok: bool  # False when the answer had no recognizable structure at all


def _strip(item: str) -> str:
    quoted = _QUOTED.findall(item)
    if quoted:
        return max(quoted, key=len).strip()
    return item.strip().strip("\"'\u201c\u201d`").strip()


def parse_answer(answer: str, default_sign: int = -1) -> Parsed:
    """Read the named spans out of a critic's answer. Never raises.

    Args:
        answer: the critic's text.
        default_sign: the sign of spans listed before any "Positive"/"Negative" header.
    """
    if not isinstance(answer, str):
        return Parsed([], False)
    spans: list[NamedSpan] = []
    sign = default_sign
    structured = False
    for line in answer.splitlines():
        if not line.strip():
            continue
        inline = _INLINE_HEADER.match(line)
        if inline:
            structured = True
            sign = 1 if inline.group(1).lower() in _POSITIVE else -1
            line = inline.group(2)
            if _NONE.match(line):
                continue
            text = _strip(line)
            if text:
                spans.append(NamedSpan(text, sign))
            continue
        header = _HEADER.match(line)
        if header:
            structured = True
            sign = 1 if header.group(1).lower() in _POSITIVE else -1
            continue
        if _NONE.match(line):
            structured = True
            continue
        item = _ITEM.match(line)
        if item:
            structured = True
            if _NONE.match(item.group(1)):
                continue
            text = _strip(item.group(1))
            if text:
                spans.append(NamedSpan(text, sign))
        elif _QUOTED.search(line):  # a quoted phrase in free text still names a span
            structured = True
            spans.extend(NamedSpan(q.strip(), sign) for q in _QUOTED.findall(line) if q.strip())
    return Parsed(spans, structured)


def _loose_pattern(text: str) -> re.Pattern[str] | None:
    words = text.split()
    if not words:
        return None
    return re.compile(r"\s+".join(re.escape(w) for w in words), re.I)


def locate(text: str, completion: str, after: int = 0) -> tuple[int, int] | None:
    """Character offsets of ``text`` in ``completion``, or None.

    Exact match first, then case- and whitespace-insensitive. When the phrase occurs more than once, the first
    occurrence at or after ``after`` is taken (critics list spans in reading order), else the first one.
    """
    text = text.strip()
    if not text:
        return None
    for start in (after, 0):
        index = completion.find(text, start)
        if index >= 0:
            return index, index + len(text)
    pattern = _loose_pattern(text)
    if pattern is not None:
        for start in (after, 0):
            match = pattern.search(completion, start)
            if match:
                return match.start(), match.end()
    return None
