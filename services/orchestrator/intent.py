"""When does the user ask for a picture, and of what (IMAGE_MODE_AUTO)?

The rule, on the user's words of this turn (case-insensitive):

1. A drawing verb addressed to the assistant: "draw", "paint", "sketch", "illustrate",
   "render" (e.g. "Can you draw a cat?", "paint me a sunset").
2. A request for a picture: "(show|give|make|create|generate|send) (me)? (a|an|some)?
   (picture|image|photo|drawing|illustration|painting) (of ...)?", or "picture of ...",
   "image of ...", "photo of ...".

The image prompt is what follows the trigger ("a cat on a skateboard"), without a leading
"me"/"us", a trailing "please" or end punctuation; when nothing follows, the whole text is used.
"""

from __future__ import annotations

import re

_NOUNS = r"(?:picture|image|photo|photograph|drawing|illustration|painting|sketch)s?"
_TRIGGERS = [
    re.compile(
        r"\b(?:draw|paint|sketch|illustrate|render)\b(?:\s+(?:me|us))?\s*(?P<rest>.*)", re.I | re.S
    ),
    re.compile(
        rf"\b(?:show|give|make|create|generate|send|produce)\b(?:\s+(?:me|us))?\s+(?:(?:a|an|some|the)\s+)?"
        rf"{_NOUNS}(?:\s+(?:of|showing|with))?\s*(?P<rest>.*)",
        re.I | re.S,
    ),
    re.compile(rf"\b{_NOUNS}\s+(?:of|showing)\s+(?P<rest>.*)", re.I | re.S),
]
_TRAILING = re.compile(r"(?:[\s,]*\bplease\b)?[\s.!?,;:]*$", re.I)


def image_prompt(text: str) -> str | None:
    """The prompt to draw when ``text`` asks for a picture, else None."""
    for trigger in _TRIGGERS:
        match = trigger.search(text)
        if match:
            rest = _TRAILING.sub("", match.group("rest")).strip()
            return rest or text.strip()
    return None
