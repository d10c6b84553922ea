"""Sentence splitting, shared by TTS (sentence-by-sentence synthesis) and the orchestrator
(speaking a reply while it is still being generated).

The boundaries come from pysbd (a rule-based splitter that passes the "Golden Rules" set), so
"Dr. Smith", "e.g. apples" and "3.5" stay whole; a line break always ends a sentence. The same
code splits a whole text and a growing one: :func:`split_sentences` is
:func:`pop_complete_sentences` on a text whose last line is finished.

Streaming rule: a boundary is trusted only once a complete word (followed by whitespace) stands
after it, because pysbd decides some cuts by the next word ("etc. I think" is one sentence,
"etc. It" is two). A sentence is therefore released one word after its end, never before.
"""

from __future__ import annotations

import re

import pysbd  # type: ignore[import-untyped]  # no stubs or py.typed

__all__ = ["control_character", "pop_complete_sentences", "split_sentences"]

# The one rule for text that reaches a model: C0 and C1 control characters (NUL included) and
# lone surrogates are refused; tab, line feed and carriage return are ordinary whitespace.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def control_character(text: str) -> str | None:
    """A description of the first character that text may not hold ("U+0000 at 12"), or None.

    Such characters are refused rather than stripped: no model reads them as text, and
    stripping would change what the caller asked for without saying so.
    """
    found = _CONTROL.search(text)
    return None if found is None else f"U+{ord(found.group()):04X} at {found.start()}"


# pysbd only cuts where one of these stands (``Punctuations`` of its standard rules plus the
# ellipsis); a text without any skips it, which is most tokens of a streamed reply.
_TERMINATORS = re.compile(r"[.!?。．！？…]")
# Full-width terminators end a sentence without a following space (CJK writes none).
_CJK_END = re.compile(r"[。．！？][\"'”’」』）)\]]*\s*$")
_COMPLETE_WORD = re.compile(r"\s*\S+\s")
# Where no terminator has a whole word after it (a full-width one: anything), no boundary can be
# settled yet, so pysbd need not run: most tokens of a streamed reply take this path.
_MAY_BE_SETTLED = re.compile(r"[.!?…][^\s]*\s+\S+\s|[。．！？]\s*\S")

# pysbd's cost grows with the square of the sentences it sees at once (its list and span scans
# run over the whole text once per item), so a long line is read in windows: up to the 16th
# terminator, or, when that holds no usable boundary, ``max_chars`` and a word's lookahead.
# 5,000 characters of "1. 2. 3. ...": 5.2 s in one piece, 0.29 s in windows; of prose: 72 ms,
# 44 ms (one run on 2 busy shared cores).
_LOOKAHEAD_CHARS = 100
_WINDOW_TERMINATORS = 16


def split_sentences(text: str, max_chars: int = 400) -> list[str]:
    """Split a finished text into sentences.

    A sentence longer than ``max_chars`` is cut at a word break, so no synthesis call gets an
    unbounded input.
    """
    sentences: list[str] = []
    for line in text.split("\n"):
        sentences += _take(line, max_chars, finished=True)[0]
    return sentences


def pop_complete_sentences(buffer: str, max_chars: int = 400) -> tuple[list[str], str]:
    """Take the sentences that are certainly complete off the front of a growing text.

    Returns them and the rest, to which the caller appends more text. Complete lines are split
    as :func:`split_sentences` would; in the last, open line a sentence is released once a whole
    word follows it, or, with no boundary yet, once it is over ``max_chars`` (cut at a word
    break). Feeding a text in any pieces and splitting the final rest gives the sentences that
    splitting the whole text gives.
    """
    *lines, open_line = buffer.split("\n")
    sentences: list[str] = []
    for line in lines:
        sentences += _take(line, max_chars, finished=True)[0]
    done, rest = _take(open_line, max_chars, finished=False)
    return sentences + done, rest


def _take(line: str, max_chars: int, *, finished: bool) -> tuple[list[str], str]:
    """The sentences at the front of one line (no line breaks) and the rest of it.

    ``finished`` says no more text will follow, so the end of the line ends a sentence.
    """
    window_chars = max_chars + _LOOKAHEAD_CHARS
    sentences: list[str] = []
    while line.strip():
        ends: list[int] = []
        for size in sorted({_short_window(line, window_chars), window_chars}):
            ends = _usable_ends(line[:size], whole=finished and len(line) <= size)
            if ends:
                break
        if ends:
            start = 0
            for end in ends:
                sentences += _cut_long(line[start:end].strip(), max_chars)
                start = end
            line = line[start:]
        elif len(line.lstrip()) > max_chars:
            line = line.lstrip()
            cut = _word_break(line, max_chars)
            sentences.append(line[:cut].strip())
            line = line[cut:].lstrip()
        else:
            break
    return sentences, line


def _short_window(line: str, window_chars: int) -> int:
    """Characters up to the ``_WINDOW_TERMINATORS``-th terminator (at most ``window_chars``)."""
    for count, match in enumerate(_TERMINATORS.finditer(line, 0, window_chars), start=1):
        if count == _WINDOW_TERMINATORS:
            return match.end()
    return window_chars


def _usable_ends(window: str, *, whole: bool) -> list[int]:
    """The sentence ends in ``window`` that more text cannot move; with ``whole`` (the window is
    all that is left of a finished line) every end, the window's own included."""
    if whole:
        return [*_sentence_ends(window), len(window)]
    if not _MAY_BE_SETTLED.search(window):
        return []
    ends = _sentence_ends(window)
    settled = [i for i, end in enumerate(ends) if _settled(window, end)]
    return ends[: settled[-1] + 1] if settled else []


def _sentence_ends(text: str) -> list[int]:
    """Offsets in ``text`` where pysbd ends a sentence, the end of ``text`` excluded.

    The offsets come from pysbd's character spans, and the sentences are sliced from the text
    itself: pysbd's own sentence strings can lose text it failed to map back.
    """
    if not _TERMINATORS.search(text):
        return []
    # A Segmenter keeps the text it works on, so one per call keeps this thread-safe.
    spans = pysbd.Segmenter(language="en", clean=False, char_span=True).segment(text)
    return [span.end for span in spans if 0 < span.end < len(text)]


def _settled(text: str, end: int) -> bool:
    """Whether more text can no longer move the boundary at ``end``: a whole word follows it,
    or it is a full-width terminator with something after it."""
    after = text[end:]
    return bool(_COMPLETE_WORD.match(after)) or bool(after.strip() and _CJK_END.search(text[:end]))


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    pieces: list[str] = []
    while len(sentence) > max_chars:
        cut = _word_break(sentence, max_chars)
        pieces.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    if sentence:
        pieces.append(sentence)
    return pieces


def _word_break(text: str, max_chars: int) -> int:
    """Where to cut ``text`` to keep at most ``max_chars`` before the cut: the last space, or
    ``max_chars`` itself when there is none."""
    cut = text.rfind(" ", 0, max_chars)
    return cut if cut > 0 else max_chars
