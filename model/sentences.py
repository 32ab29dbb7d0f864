"""Sentence spans of a text, and the pieces the model reads: a small rule set, tested, pure Python.

``sentences(text)`` returns ``(start, end)`` pairs, Python ``str`` indices (code points), such that
``text[start:end]`` is the sentence, without the whitespace around it; together they cover every
non-whitespace character of the text, in order.

A sentence ends after ``.``, ``!``, ``?`` or ``…`` (runs of them, then closing quotes or brackets, then
emoji that follow it, as in ``Great! 😍``) when what follows makes it an end:

- ``!`` and ``?`` end a sentence before whitespace, and before a capital letter with no space
  (``Great!Love it``);
- ``.`` ends one before whitespace (lower case may follow: reviews are often written that way), and
  before a capital and a small letter with no space after a word of two or more letters
  (``It broke.Then``); never inside a
  number (``3.50``), a URL or an e-mail address, after a title (``Dr.``, ``e.g.``, ``vs.``), after a
  single capital other than I (``J. Smith``), and after ``etc.``, ``U.S.``, ``Inc.``... only before a capital;
- a blank line always ends one; a single line break (LF, CRLF or CR) does when the next line does not
  begin with a small letter (a list, or lines without full stops; a hard-wrapped paragraph goes on).

Why not a library: ``pysbd`` 0.3.4 (the usual choice, last released 2021) split a URL at its ``?``,
did not split ``It broke.Then`` nor ``wow!!! so good``, and took 280 ms for 20,000 characters, more
than the whole request may (docs/quality.md, "Sentences").
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

Span = tuple[int, int]

# Never end a sentence after these (lower case, without the final dot).
TITLES = frozenset(
    "mr mrs ms dr prof sr jr st mt vs v e.g i.e cf fig figs no nos vol pp p approx ca dept gen col lt "  # noqa: SIM905
    "sgt capt rev hon gov sen rep pres jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
# End a sentence after these only before a capital: they end sentences as often as they go on.
ABBREVIATIONS = frozenset("etc inc ltd co corp bros u.s u.k u.n a.m p.m al ft oz lb lbs min max".split())  # noqa: SIM905

_TERMINAL = re.compile(r"[.!?…]+[\"'\u2019\u201d)\]»]*")
# A URL or e-mail address, without the punctuation that may end a sentence after it.
_PROTECTED = re.compile(
    # (?<!...): an address starts where its run of characters does, so each run is scanned once.
    r"(?:(?:https?://|www\.)\S+?|(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+)"
    r"(?=[.!?,;:)\]'\"\u2019\u201d]*(?:\s|$))",
    re.IGNORECASE,
)
# Emoji (with skin tones, variation selectors, joiners, keycaps) that close a sentence: "Great! 😍😍"
_EMOJI = re.compile(r"\s*(?:[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\uFE0F\u200D\u20E3])+(?=\s|$)")
_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"  # combining marks
_WORD_BEFORE = re.compile(rf"(\w[\w.{_MARKS}]*)$")
_NOT_MARK = re.compile(rf"[^{_MARKS}]")
_BREAK = re.compile(r"(?:\r\n|\r|\n|\u2028|\u2029)[ \t]*(?=(\S))")  # and the next line's first character
_BLANK_LINE = re.compile(r"(?:\r\n|\r|\n)[^\S\r\n]*(?:\r\n|\r|\n)")


def sentences(text: str) -> list[Span]:
    """The sentences of ``text`` as ``(start, end)`` code-point spans, whitespace trimmed, in order."""
    cuts = sorted(set(_punctuation_cuts(text)) | set(_line_cuts(text)))
    spans: list[Span] = []
    start = 0
    for cut in [*cuts, len(text)]:
        span = _trim(text, start, cut)
        if span is not None:
            spans.append(span)
        start = cut
    return spans


def _punctuation_cuts(text: str) -> list[int]:
    protected = [m.span() for m in _PROTECTED.finditer(text)]
    starts = [p for p, _ in protected]
    cuts = []
    for match in _TERMINAL.finditer(text):
        a, b = match.span()
        k = bisect.bisect_right(starts, a) - 1
        if k >= 0 and a < protected[k][1]:  # inside a URL or an address
            continue
        if _ends_sentence(text, a, b):
            emoji = _EMOJI.match(text, b)
            cuts.append(emoji.end() if emoji else b)
    return cuts


def _ends_sentence(text: str, a: int, b: int) -> bool:
    """Whether the terminal run ``text[a:b]`` ends a sentence, from its neighbours."""
    if b == len(text):
        return False  # the text's end is a cut anyway
    marks, after = text[a:b], text[b]
    word = _WORD_BEFORE.search(text[max(0, a - 32) : a])  # a bounded look back: linear in the text
    original = "".join(_NOT_MARK.findall(word.group(1))) if word else ""  # "café" is a word of 4 letters
    before = original.lower()
    if after.isspace():
        following = _next_visible(text, b)
        if "!" in marks or "?" in marks:
            return True
        if not following:
            return False
        if before in TITLES or (len(original) == 1 and original.isupper() and original != "I"):
            return False
        return before not in ABBREVIATIONS or following.isupper()
    # No space after the marks: "It broke.Then", "Great!Love it"; never "3.50", "e.g.", "U.S.A".
    nxt = text[b + 1 : b + 2]
    if not after.isupper():
        return False
    if "!" in marks or "?" in marks:
        return True
    return len(before) >= 2 and before.isalpha() and before not in TITLES | ABBREVIATIONS and nxt.islower()


def _line_cuts(text: str) -> list[int]:
    """A blank line always; a single line break before a line that does not begin in lower case."""
    cuts = [m.start() for m in _BLANK_LINE.finditer(text)]
    cuts.extend(m.start() for m in _BREAK.finditer(text) if not m.group(1).islower())
    return cuts


def _next_visible(text: str, start: int) -> str:
    """The first character at or after ``start`` that is not whitespace, or ""."""
    for ch in text[start : start + 64]:
        if not ch.isspace():
            return ch
    return text[start + 64 :].lstrip()[:1]  # rare: a long run of whitespace


def _trim(text: str, start: int, end: int) -> Span | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def windows(text: str, span: Span, size: int, overlap: int) -> list[Span]:
    """``span`` as overlapping windows of at most ``size`` whitespace-separated words (one window when
    it has no more): the pieces of a sentence too long for the model to read whole."""
    words = [m.span() for m in re.finditer(r"\S+", text[span[0] : span[1]])]
    if len(words) <= size:
        return [span]
    step = max(1, size - overlap)
    out = []
    for k in range(0, len(words), step):
        last = min(k + size, len(words)) - 1
        out.append((span[0] + words[k][0], span[0] + words[last][1]))
        if last == len(words) - 1:
            break
    return out


def pieces(text: str, spans: Sequence[Span], max_words: int) -> list[list[Span]]:
    """Each sentence's pieces for the model: itself, or its windows of ``max_words`` words (a quarter
    overlapping) when it has more."""
    return [windows(text, span, max_words, max_words // 4) for span in spans]


def plan(text: str, max_words: int) -> list[list[Span]]:
    """What the model reads of ``text``, sentence by sentence: each sentence's pieces."""
    return pieces(text, sentences(text), max_words)
