"""The sentence splitter: exact spans (emoji, combining marks, CRLF), and the rules of model/sentences.py."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from model.predictor import aggregate, is_mixed
from model.sentences import plan, sentences, windows

LABELS = ["negative", "neutral", "positive"]


def split(text: str) -> list[str]:
    spans = sentences(text)
    for a, b in spans:  # exact: the span is the sentence, trimmed, inside the text
        assert 0 <= a < b <= len(text) and text[a:b] == text[a:b].strip()
    assert all(x[1] <= y[0] for x, y in itertools.pairwise(spans))  # in order, disjoint
    # every non-whitespace character is in a sentence
    assert "".join(ch for a, b in spans for ch in text[a:b] if not ch.isspace()) == "".join(text.split())
    return [text[a:b] for a, b in spans]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith paid $3.50 for it. It was great!", ["Dr. Smith paid $3.50 for it.", "It was great!"]),
        ("See https://example.com/a.b?x=1. Then stop.", ["See https://example.com/a.b?x=1.", "Then stop."]),
        ("Mail a.b@c.com. Thanks", ["Mail a.b@c.com.", "Thanks"]),
        ("It broke.Then I returned it.", ["It broke.", "Then I returned it."]),
        ("Great!Love it", ["Great!", "Love it"]),
        ("version 2.0.1 is out.It works", ["version 2.0.1 is out.", "It works"]),
        ("wow!!! so good??? yes... fine", ["wow!!!", "so good???", "yes...", "fine"]),
        ("it broke. i returned it.", ["it broke.", "i returned it."]),
        (
            "U.S. troops left. We met in the U.S. Then left.",
            ["U.S. troops left.", "We met in the U.S.", "Then left."],
        ),
        ("J. R. R. Tolkien wrote it. So did I. Then", ["J. R. R. Tolkien wrote it.", "So did I.", "Then"]),
        ("e.g. this one, i.e. that. Mr. Bean", ["e.g. this one, i.e. that.", "Mr. Bean"]),
        ("“Quoted.” Next. (Aside.) After", ["“Quoted.”", "Next.", "(Aside.)", "After"]),
        ("no punctuation at all", ["no punctuation at all"]),
        ("   padded.   ", ["padded."]),
    ],
)
def test_rules(text: str, expected: list[str]) -> None:
    assert split(text) == expected


def test_emoji_stay_with_their_sentence_and_spans_count_code_points() -> None:
    text = "I love it 😍. Hate the box 😡! Great! 👍🏽👨‍👩‍👧 Next one"
    assert split(text) == ["I love it 😍.", "Hate the box 😡!", "Great! 👍🏽👨‍👩‍👧", "Next one"]
    a, b = sentences(text)[-1]
    assert (a, b) == (len(text) - len("Next one"), len(text))  # str indices: code points, not UTF-16


def test_combining_marks_are_never_split_from_their_letter() -> None:
    text = "Cafe\u0301 was nice. Bad cafe\u0301.Then e\u0301te\u0301."
    parts = split(text)
    assert parts == ["Cafe\u0301 was nice.", "Bad cafe\u0301.", "Then e\u0301te\u0301."]
    assert not any(p[0] in "\u0301" for p in parts)


def test_line_breaks_crlf_and_blank_lines() -> None:
    text = "Line one.\r\nLine two\r\n\r\nthird\r\n- a list\r\n- of items\nwrapped\nparagraph"
    assert split(text) == ["Line one.", "Line two", "third", "- a list", "- of items\nwrapped\nparagraph"]
    assert all("\r" not in p[-1:] and "\n" not in p[-1:] for p in split(text))


def test_whitespace_only_has_no_sentences() -> None:
    assert sentences(" \r\n\t ") == []


def test_windows_overlap_and_cover_every_word() -> None:
    text = " ".join(f"w{i}" for i in range(170))
    spans = windows(text, (0, len(text)), 96, 24)
    assert [(text[a:b].split()[0], text[a:b].split()[-1]) for a, b in spans] == [
        ("w0", "w95"),
        ("w72", "w167"),
        ("w144", "w169"),
    ]
    assert windows(text, (0, len(text)), 200, 50) == [(0, len(text))]
    assert [len(p) for p in plan("Short one. " + text, 96)] == [1, 3]


def test_twenty_thousand_characters_split_in_milliseconds() -> None:
    text = ("The screen is gorgeous, and it costs $3.50 a month. Battery died? Yes!! " * 300)[:20_000]
    start = time.perf_counter()
    spans = sentences(text)
    assert time.perf_counter() - start < 0.1 and len(spans) > 800
    pathological = ["\n" * 20_000, "a!" * 10_000, "a." * 10_000, " " * 19_990 + "a. b"]
    for text in pathological:
        start = time.perf_counter()
        sentences(text)
        assert time.perf_counter() - start < 0.2, text[:10]


def test_aggregate_and_mixed() -> None:
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]], dtype=np.float32)
    assert aggregate(probs, [1, 1, 1]) == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert aggregate(probs, [2, 0, 0]) == pytest.approx(probs[0])
    assert is_mixed(LABELS, probs, [1, 1, 1])  # a third negative, a third positive
    assert not is_mixed(LABELS, probs[[0, 2]], [1, 1])  # negative and neutral only
    assert not is_mixed(LABELS, probs[[0, 1, 1, 1, 1, 1]], [1] * 6)  # one negative in six: 17 %
    assert not is_mixed(LABELS, probs[:1], [1])
