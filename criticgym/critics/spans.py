r"""Reading a critic LM's answer, and finding the spans it names in the completion.

The answer format our prompts ask for::

    Positive spans:
    Span 1: "a joy to watch"
    Negative spans:
    None identified

and the three layouts of RELC's published critic prompts, which a user may point the critic at::

    Identified Positive Text Span:        Toxic Spans Identified in the Sentence:
    [Span 1]: really need to appreciate   Toxic Span 1: kill you
    Identified Negative Text Span:        Toxic Span 2: yelling
    None identified
                                          Problematic Spans Identified in the Summary:
                                          Span 1: why did you switch? (Label: Irrelevant)

Real answers drift: bullets instead of "Span N:", missing or curly quotes, a whole sentence around the span,
"None" or "N/A", junk characters. :func:`parse_answer` takes what it can and never raises; :func:`locate` finds
each named span by character offsets (exact text first, then ignoring case and runs of whitespace), choosing
the occurrence after the previous span of the answer when a phrase repeats.

Lines break at ``\n`` and ``\r`` only: vertical tabs, form feeds, ``\x1c``-``\x1e``, ``\x85`` and the Unicode
line separators, which :meth:`str.splitlines` also breaks at, can occur inside a generated text, so inside a span.
Control, format and replacement characters around a line's structure are ignored.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_POLARITY = r"positive|good|negative|bad|toxic|offensive|problematic|flawed|flaws|errors?"
_SPAN_WORD = r"spans?|phrases?|parts?|texts?|segments?"
_MARKUP = r"[\s*#_~`]*"  # markdown around a header
# a header line: a polarity word (optionally after "identified", "the", ...) and nothing after its colon
_HEADER = re.compile(
    rf"^\W*(?:[a-z]+\s+){{0,2}}?({_POLARITY})\b(?:[a-z ]*?\b(?:{_SPAN_WORD})\b[a-z ]*?{_MARKUP}:?|{_MARKUP}:|[a-z ]*?:)"
    rf"{_MARKUP}$",
    re.I,
)
_INLINE_HEADER = re.compile(rf"^\W*({_POLARITY})\s+(?:{_SPAN_WORD})\s*:\s*(.+)$", re.I)
_ITEM = re.compile(
    rf"^\W*?(?:\[?\s*(?:({_POLARITY})\s+)?span\s*\d+\s*\]?\s*[:.)-]|[-*\u2022]|\d+\s*[.)])\s*(.+?)\s*$", re.I
)
_NONE = re.compile(r"^\W*(none( identified| found)?|n/?a|no spans?( identified| found)?|nothing)\W*$", re.I)
_LABEL = re.compile(r"\s*\(\s*(?:label|type|reason|error)\s*:\s*([^()]*)\)\W*$", re.I)
_OPEN_QUOTES = "\"\u201c\u201d\u00ab\u00bb'`"
_QUOTED = re.compile(
    r"[\"\u201c\u201d\u00ab\u00bb]([^\"\u201c\u201d\u00ab\u00bb]+?)[\"\u201c\u201d\u00ab\u00bb]|(?<!\w)'([^']+?)'(?!\w)"
)
_LINES = re.compile(r"\r\n|\r|\n")
# what surrounds a line's structure without being text: whitespace, C0/C1 controls, format characters,
# the replacement character of invalid bytes, lone surrogates
_JUNK = "".join(chr(c) for c in (*range(0x00, 0x21), *range(0x7F, 0xA1))) + "\u200b\u200c\u200d\u2060\ufeff\ufffd"
_EDGES = re.compile(f"^[\\s{re.escape(_JUNK)}]+|[\\s{re.escape(_JUNK)}]+$")
_POSITIVE = {"positive", "good"}


class NamedSpan(NamedTuple):
    """A span as the critic wrote it: its text, its sign (+1 good, -1 bad), and its label when it gave one."""

    text: str
    sign: int
    label: str | None = None


class Parsed(NamedTuple):
    """What could be read from an answer."""

    spans: list[NamedSpan]
    ok: bool  # False when the answer had no recognizable structure at all


def _clean(text: str) -> str:
    """Drop junk at both ends, and lone surrogates (invalid bytes decoded with ``surrogateescape``) anywhere."""
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        text = "".join(ch for ch in text if not "\ud800" <= ch <= "\udfff")
    return _EDGES.sub("", text)


def _sign(word: str) -> int:
    return 1 if word.lower() in _POSITIVE else -1


def _item_text(item: str) -> tuple[str, str | None]:
    """The span text of one item, and its label: ``"text" (Label: Irrelevant)`` -> ``(text, "Irrelevant")``."""
    item = _clean(item)
    label = None
    found = _LABEL.search(item)
    if found:
        label = _clean(found.group(1)) or None
        item = _clean(item[: found.start()])
    if item[:1] in _OPEN_QUOTES:
        quoted = _QUOTED.match(item) or _QUOTED.search(item)
        if quoted:
            return _clean(quoted.group(1) or quoted.group(2)), label
        return _clean(item.strip(_OPEN_QUOTES)), label
    quoted = [q for pair in _QUOTED.findall(item) for q in pair if q]
    if quoted and not item[-1:].isalnum():  # a phrase quoted inside a sentence: `the phrase "x" is bad.`
        return _clean(max(quoted, key=len)), label
    return item, label


def header_sign(line: str) -> int | None:
    """The sign of a span-list header line ("Negative spans:", "Identified Positive Text Span:"), else None."""
    header = _HEADER.match(_clean(line))
    return _sign(header.group(1)) if header else None


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
    for raw in _LINES.split(answer):
        line = _clean(raw)
        if not line:
            continue
        inline = _INLINE_HEADER.match(line)
        if inline:
            structured = True
            sign = _sign(inline.group(1))
            if not _NONE.match(inline.group(2)):
                text, label = _item_text(inline.group(2))
                if text:
                    spans.append(NamedSpan(text, sign, label))
            continue
        item = _ITEM.match(line)
        if item and header_sign(line) is None:
            structured = True
            if _NONE.match(item.group(2)):
                continue
            text, label = _item_text(item.group(2))
            if text:
                spans.append(NamedSpan(text, _sign(item.group(1)) if item.group(1) else sign, label))
            continue
        header = header_sign(line)
        if header is not None:
            structured = True
            sign = header
            continue
        if _NONE.match(line):
            structured = True
            continue
        quoted = [q for pair in _QUOTED.findall(line) for q in pair if q.strip()]
        if quoted:  # a quoted phrase in free text still names a span
            structured = True
            spans.extend(NamedSpan(_clean(q), sign) for q in quoted if _clean(q))
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
