"""Sentence splitter benchmark: what cutting a streamed reply into sentences costs per token.

Run by ``make bench``. The orchestrator calls ``pop_complete_sentences`` once per LLM token, on
the event loop, so its cost is added to every token. Gemma 3 270M (the default LLM, in-process,
greedy) writes a reply once; its tokens are then fed to the splitter as the orchestrator feeds
them, and so is an abbreviation-heavy reply (the worst case: pysbd runs on most of its tokens).
Prints the splitter's cost per token (mean, p50, p99) beside the LLM's own time per token
(target: the mean under 1% of it), and what splitting a whole text of TTS's default limit
(5,000 characters) costs, normal and adversarial.
"""

from __future__ import annotations

import re
import statistics
import sys
import time

from services.common.text import pop_complete_sentences, split_sentences
from services.llm.backends.base import Message
from services.llm.backends.llama_cpp_local import transcript_prompt
from tests.support.llm_servers import gemma_gguf

PROMPT = "Explain what e.g. and i.e. mean, with one short example of each."
DENSE = (
    "Sure! Dr. Smith said the dose is 3.5 mg, e.g. twice a day. That works for most adults. "
    "If you feel dizzy, stop at once and call your doctor, i.e. Dr. Jones. Hope that helps! "
) * 5
REPEATS = 50
MAX_CHARS = 300  # the orchestrator's sentence_max_chars


def llm_tokens() -> tuple[list[str], float]:
    """Gemma's reply to ``PROMPT`` as the pieces it streams, and its median seconds per token."""
    import llama_cpp

    llama = llama_cpp.Llama(model_path=str(gemma_gguf()), n_ctx=2048, n_threads=2, verbose=False)
    prompt = transcript_prompt([Message("user", PROMPT)])
    pieces: list[str] = []
    stamps = [time.perf_counter()]
    for chunk in llama.create_completion(
        prompt.text, max_tokens=200, temperature=0.0, stop=prompt.stop, stream=True
    ):
        pieces.append(chunk["choices"][0]["text"])
        stamps.append(time.perf_counter())
    intervals = [b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)]  # after the first
    return pieces, statistics.median(intervals)


def per_token(pieces: list[str]) -> list[float]:
    """Seconds of each ``pop_complete_sentences`` call, ``REPEATS`` replays after one warm-up."""
    times: list[float] = []
    for repeat in range(REPEATS + 1):
        pending = ""
        for piece in pieces:
            started = time.perf_counter()
            _, pending = pop_complete_sentences(pending + piece, MAX_CHARS)
            if repeat:
                times.append(time.perf_counter() - started)
    return times


def main() -> int:
    pieces, token_seconds = llm_tokens()
    print(f"Gemma 3 270M: {len(pieces)} tokens, {token_seconds * 1e3:.1f} ms per token (median)")
    worst_share = 0.0
    for name, tokens in (("Gemma's reply", pieces), ("abbreviation-heavy reply", None)):
        tokens = tokens or re.findall(r"\s*\S{1,4}", DENSE)
        times = sorted(per_token(tokens))
        mean, p50, p99 = (
            statistics.fmean(times),
            times[len(times) // 2],
            times[len(times) * 99 // 100],
        )
        worst_share = max(worst_share, mean / token_seconds)
        print(
            f"splitter, {name}: mean {mean * 1e6:.0f} us, p50 {p50 * 1e6:.0f} us, "
            f"p99 {p99 * 1e6:.0f} us per token ({100 * mean / token_seconds:.2f}% of the LLM's)"
        )
    for name, text in (
        ("prose", ("This is a fine sentence with words. " * 140)[:5000]),
        ("a list of numbers", ("1. 2. 3. 4. " * 420)[:5000]),
    ):
        started = time.perf_counter()
        count = len(split_sentences(text, 400))
        elapsed = time.perf_counter() - started
        print(f"split_sentences, 5,000 characters of {name}: {count} in {elapsed * 1e3:.0f} ms")
    target = worst_share < 0.01
    print(f"target mean < 1% of the LLM's time per token: {'met' if target else 'MISSED'}")
    return 0 if target else 1


if __name__ == "__main__":
    sys.exit(main())
