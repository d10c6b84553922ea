"""Sentence splitting, shared by TTS (sentence-by-sentence synthesis) and the orchestrator
(speaking a reply while it is still being generated)."""

from __future__ import annotations

import re

# A sentence ends at . ! ? … (optionally followed by closing quotes/brackets) before whitespace,
# or at a line break. Abbreviations like "e.g." may cut early; a cut only costs a short pause.
_BOUNDARY = re.compile(r"(?<=[.!?…。！？])[\"'”’)\]]*\s+|\n+")


def split_sentences(text: str, max_chars: int = 400) -> list[str]:
    """Split text into sentences; a sentence longer than ``max_chars`` is cut at word breaks."""
    sentences: list[str] = []
    for piece in _BOUNDARY.split(text):
        piece = piece.strip()
        if not piece:
            continue
        while len(piece) > max_chars:
            cut = piece.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            sentences.append(piece[:cut].strip())
            piece = piece[cut:].strip()
        if piece:
            sentences.append(piece)
    return sentences


def pop_complete_sentences(buffer: str, max_chars: int = 400) -> tuple[list[str], str]:
    """Take the complete sentences off the front of a growing text; return them and the rest.

    The last piece is kept back unless it is already over ``max_chars``: more text may extend it.
    """
    matches = list(_BOUNDARY.finditer(buffer))
    if not matches:
        if len(buffer) > max_chars:
            cut = buffer.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            return [buffer[:cut].strip()], buffer[cut:].lstrip()
        return [], buffer
    end = matches[-1].end()
    return split_sentences(buffer[:end], max_chars), buffer[end:]
