"""Deterministic, tiny, random-weight openai-whisper checkpoint for tests.

Real Whisper weights need a network download and hundreds of MB; tests only
need something ``whisper.load_model`` accepts and that decodes without NaNs.
The vocabulary is multilingual-sized (51865) so language detection works,
while width/depth are minimal so the file stays ~3.5 MB and decoding is fast.
"""

from __future__ import annotations

import pathlib
from dataclasses import asdict

import torch
from whisper.model import ModelDimensions, Whisper

TINY_DIMS = ModelDimensions(
    n_mels=80,
    n_audio_ctx=1500,  # fixed by Whisper's 30 s / 3000-frame input window
    n_audio_state=32,
    n_audio_head=2,
    n_audio_layer=1,
    n_vocab=51865,  # >= 51865 makes the model multilingual (99 languages)
    n_text_ctx=448,  # decoder context; sample_len defaults to n_text_ctx // 2
    n_text_state=32,  # must equal n_audio_state (cross-attention)
    n_text_head=2,
    n_text_layer=1,
)


def build_tiny_openai_whisper(path: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write a seeded random checkpoint to ``path`` and return ``path``.

    ``decoder.positional_embedding`` is created with ``torch.empty`` by
    openai-whisper (real checkpoints overwrite it); left uninitialised it can
    hold NaN/inf garbage, so it is filled explicitly. Weights are stored as
    fp16 to halve the file; ``load_state_dict`` casts them back to fp32.
    The global RNG is forked so callers' random state is untouched.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Whisper(TINY_DIMS)
        with torch.no_grad():
            model.decoder.positional_embedding.normal_(0.0, 0.02)
    state = {k: v.half() for k, v in model.state_dict().items()}
    torch.save({"dims": asdict(TINY_DIMS), "model_state_dict": state}, path)
    return path
