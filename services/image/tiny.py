"""A tiny random-weight Stable Diffusion pipeline: the offline default model, and the tests' one.

No real diffusion weights can be had offline, so ``tiny-random-sd`` is a complete Stable
Diffusion pipeline (UNet, VAE, CLIP text encoder and tokenizer, Euler scheduler) with a few
thousand random, seeded parameters per part. It goes through exactly the same
``save_pretrained`` / ``from_pretrained`` path as a real model and draws a 64x64 image in well
under a second, but what it draws is noise. Set ``CHORUS_IMAGE_MODEL`` to a real model (e.g.
``stabilityai/sd-turbo``) for pictures.

Its native size is 64x64 (a 32-pixel UNet sample times the 2x VAE) and its folder carries
``chorus-model.json`` saying it is a placeholder that needs 4 steps, so a request that leaves
size and steps at 0 is drawn at once and ListModels says what it is (``services/image/models.py``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from services.image.models import NOTES_FILE

SEED = 0
DEFAULT_STEPS = 4
VERSION = "2"
"""Bumped when the architecture below changes, so cached folders are rebuilt."""


def _byte_chars() -> list[str]:
    """GPT-2/CLIP's byte-to-unicode table: one printable character per byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _write_tokenizer(folder: Path) -> int:
    """A byte-level CLIP tokenizer with no merges: every byte is a token. Returns vocab size."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return len(vocab)


def build_tiny_pipeline(folder: Path, seed: int = SEED) -> Path:
    """Write a tiny random-weight StableDiffusionPipeline to ``folder`` with save_pretrained."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    staging = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    vocab_size = _write_tokenizer(staging / "tokenizer_source")
    tokenizer = CLIPTokenizer.from_pretrained(staging / "tokenizer_source", model_max_length=77)

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,  # latent pixels: 64x64 images through the 2x VAE below
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            vocab_size=vocab_size,
            layer_norm_eps=1e-5,
        )
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(staging)
    shutil.rmtree(staging / "tokenizer_source")
    # Noise looks no better after more steps: 4 show progress and cost ~70 ms at 64x64.
    notes = {"placeholder": True, "steps": DEFAULT_STEPS}
    (staging / NOTES_FILE).write_text(json.dumps(notes), encoding="utf-8")
    # Rename into place: a replica starting beside us never sees half a folder.
    if folder.exists():
        shutil.rmtree(staging)
    else:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging.replace(folder)
    return folder


def tiny_pipeline_folder(cache_dir: Path) -> Path:
    """The cached offline ``tiny-random-sd`` folder, built on first use."""
    folder = Path(cache_dir) / f"tiny-random-sd-v{VERSION}"
    if not (folder / "model_index.json").is_file():
        build_tiny_pipeline(folder)
    return folder
