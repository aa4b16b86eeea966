"""The published models' parameter counts per part, built from their published configs on the meta device (no
weights, nothing downloaded): the numbers p2p_cli/memory_plan.py's PUBLISHED table holds for models whose files
are not on this machine. `python -m lab.model_sizes` prints them.

SD 1.x (CompVis/stable-diffusion-v1-4, runwayml/stable-diffusion-v1-5), SDXL base 1.0 and FLUX.1-dev come from
lab.arch's published layouts; SD3 medium's transformer is its published config (24 joint blocks, 24 heads of 64,
patch 2, 16 latent channels, pos_embed_max_size 192) with CLIP-L, OpenCLIP bigG and T5-XXL; Chroma1-HD's is
ChromaTransformer2DModel's default config (19 + 38 blocks of 24 heads x 128: 8.9B, as published) with FLUX.1's VAE
and T5-XXL."""

from __future__ import annotations

import json

import torch


def sd3_medium_components() -> dict:
    """SD3 medium's published architecture (random weights where not on meta)."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from lab.arch import _clip_text_config

    transformer = SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, num_layers=24,
                                        attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                                        caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
                                        pos_embed_max_size=192)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                        layers_per_block=2, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False)
    clip_l = CLIPTextModelWithProjection(_clip_text_config(768, 12, 12, 3072, 768, hidden_act="quick_gelu"))
    clip_g = CLIPTextModelWithProjection(_clip_text_config(1280, 32, 20, 5120, 1280, hidden_act="gelu"))
    t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_layers=24, num_heads=64,
                                 feed_forward_proj="gated-gelu", dropout_rate=0.0))
    return dict(transformer=transformer, vae=vae, text_encoder=clip_l, text_encoder_2=clip_g, text_encoder_3=t5)


def chroma_hd_components() -> dict:
    """Chroma1-HD's published architecture: FLUX.1-dev's VAE and T5-XXL, no CLIP (random weights where not on meta)."""
    from diffusers import ChromaTransformer2DModel

    from lab.arch import flux_dev_components

    parts = flux_dev_components()
    return dict(transformer=ChromaTransformer2DModel(), vae=parts["vae"], text_encoder=parts["text_encoder_2"])


def counts() -> dict[str, dict[str, int]]:
    """Model id -> {part: parameters}, every architecture built on the meta device."""
    from lab.arch import flux_dev_components, sd15_components, sdxl_components

    builders = {"CompVis/stable-diffusion-v1-4": sd15_components,
                "stabilityai/stable-diffusion-xl-base-1.0": sdxl_components,
                "stabilityai/stable-diffusion-3-medium-diffusers": sd3_medium_components,
                "black-forest-labs/FLUX.1-dev": flux_dev_components,
                "lodestones/Chroma1-HD": chroma_hd_components}
    out = {}
    for name, build in builders.items():
        with torch.device("meta"):
            parts = build()
        out[name] = {part: sum(p.numel() for p in net.parameters()) for part, net in parts.items()
                     if isinstance(net, torch.nn.Module)}
    return out


if __name__ == "__main__":
    print(json.dumps(counts(), indent=1))
