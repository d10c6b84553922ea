"""Build a tiny, random-weight Coqui VITS model for tests.

Real Coqui checkpoints are hundreds of MB and need a download; the backend
tests only need *a* model that goes through Coqui's public loading path
(``TTS(model_path=..., config_path=...)``) and produces audio.  A VITS with
16 hidden channels, plain characters (no phonemizer, so no espeak) and a
shrunken HiFi-GAN decoder builds in well under a second and weighs ~1 MB.
The audio is noise-like: tests should check shape/dtype/rate, not content.
"""

from __future__ import annotations

import pathlib

SEED = 1234
SAMPLE_RATE_HZ = 22050


def build_tiny_coqui_model(
    out_dir: pathlib.Path, speakers: list[str] | None = None
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``model.pth`` and ``config.json`` under ``out_dir``.

    With ``speakers`` the model gets a speaker embedding table and a
    ``speakers.pth`` file (Coqui's multi-speaker layout); otherwise it is
    single-speaker.  Weights are seeded, so repeated builds are identical.
    Returns ``(model_path, config_path)``.
    """
    import torch  # imported lazily: only test modules that need Coqui pay for torch
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.pth"
    config_path = out_dir / "config.json"

    args = VitsArgs(
        hidden_channels=16,
        hidden_channels_ffn_text_encoder=32,
        num_heads_text_encoder=2,
        num_layers_text_encoder=1,
        num_layers_posterior_encoder=1,
        num_layers_flow=1,
        upsample_initial_channel_decoder=16,
        resblock_kernel_sizes_decoder=[3],
        resblock_dilation_sizes_decoder=[[1, 3, 5]],
        # Product must equal audio.hop_length (256) so one frame -> 256 samples.
        upsample_rates_decoder=[8, 8, 4],
        upsample_kernel_sizes_decoder=[16, 16, 8],
        use_sdp=False,
        init_discriminator=False,
        speaker_embedding_channels=16,
    )
    config = VitsConfig(
        model_args=args,
        use_phonemes=False,
        text_cleaner="basic_cleaners",
        phoneme_language="en",  # only names the text language; no phonemizer runs
        characters=CharactersConfig(
            characters_class="TTS.tts.models.vits.VitsCharacters",
            pad="_",
            eos="",
            bos="",
            blank=None,
            characters="abcdefghijklmnopqrstuvwxyz",
            punctuations=" !,.?'-",
        ),
        test_sentences=[],
    )
    config.audio.sample_rate = SAMPLE_RATE_HZ

    if speakers:
        speakers_file = out_dir / "speakers.pth"
        torch.save({name: i for i, name in enumerate(speakers)}, speakers_file)
        config.num_speakers = len(speakers)
        config.model_args.num_speakers = len(speakers)
        config.model_args.use_speaker_embedding = True
        config.model_args.speakers_file = str(speakers_file)
        config.speakers_file = str(speakers_file)
        config.use_speaker_embedding = True

    torch.manual_seed(SEED)
    model = Vits(config)
    torch.save({"model": model.state_dict()}, model_path)
    config.save_json(str(config_path))
    return model_path, config_path
