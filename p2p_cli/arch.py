"""Stable Diffusion component sets built from config with random weights: tiny (tests, CPU bench) and sd15."""

from __future__ import annotations

from importlib import resources

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

# DDIM as used for SD v1.x (algorithm.md, "Batch and guidance").
SD_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


def clip_tokenizer() -> CLIPTokenizer:
    """The real CLIP BPE tokenizer (49408 tokens, 77 max), built offline from the files in assets/."""
    folder = resources.files("p2p_cli") / "assets" / "clip_tokenizer"
    return CLIPTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        model_max_length=77,
        pad_token="<|endoftext|>",
    )


def tiny_components(seed: int = 0, prediction_type: str = "epsilon") -> dict:
    """Tiny random SD-shaped components: latent 16x16 (image 128 px), cross-attention at 16, 8 and 4."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * 3,
        up_block_types=("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=128,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            projection_dim=32,
        )
    )
    scheduler = DDIMScheduler(**SD_SCHEDULER, prediction_type=prediction_type)
    return dict(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer(),
                scheduler=scheduler)


def sd15_components(seed: int = 0) -> dict:
    """The Stable Diffusion 1.5 architecture from its published config, random weights (for benchmarks)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            projection_dim=768,
        )
    )
    scheduler = DDIMScheduler(**SD_SCHEDULER)
    return dict(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer(),
                scheduler=scheduler)
