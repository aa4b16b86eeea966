"""Model component sets built from config with random weights: tiny ones for tests and CPU benchmarks (SD, SDXL,
SD3, FLUX) and the published SD 1.5 and SDXL architectures."""

from __future__ import annotations


import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from p2p_cli.families.sd import SD_SCHEDULER


def clip_tokenizer() -> CLIPTokenizer:
    """The real CLIP BPE tokenizer (49408 tokens, 77 max), built offline from the files in assets/ (checks.py
    builds it, without torch, for `p2p validate`)."""
    from p2p_cli.checks import clip_tokenizer as shipped

    return shipped()


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


def _clip_text_config(hidden: int, layers: int, heads: int, intermediate: int, projection: int, **extra) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=intermediate,
                          num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                          bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, projection_dim=projection,
                          **extra)


def clip_tokenizer_2() -> CLIPTokenizer:
    """SDXL's second tokenizer: the same BPE, padded with "!" (id 0) as OpenCLIP pads."""
    tok = clip_tokenizer()
    tok.pad_token = "!"
    return tok


# SDXL's DDIM settings (its scheduler config: scaled_linear 0.00085..0.012, leading spacing, offset 1)
SDXL_SCHEDULER = dict(SD_SCHEDULER, timestep_spacing="leading")


def tiny_xl_components(seed: int = 0) -> dict:
    """Tiny random SDXL-shaped components: latent 16x16 (128 px), no attention in the first level (as SDXL),
    cross-attention at 8 and 4 with two transformer layers at the deepest level, two text encoders whose
    penultimate states are joined (16 + 32 features), a pooled embedding and six size/crop ids."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2),
        cross_attention_dim=48,
        attention_head_dim=(2, 4, 8),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8,  # pooled (text_encoder_2 projection) + 6 ids x 8
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
        scaling_factor=0.13025,
        force_upcast=True,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_clip_text_config(16, 2, 2, 37, 16))
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(32, 2, 4, 37, 32))
    scheduler = DDIMScheduler(**SDXL_SCHEDULER)
    return dict(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer(),
                text_encoder_2=text_encoder_2.eval(), tokenizer_2=clip_tokenizer_2(), scheduler=scheduler)


def sdxl_components(seed: int = 0) -> dict:
    """The SDXL base 1.0 architecture from its published configs, random weights (for benchmarks)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        cross_attention_dim=2048,
        attention_head_dim=(5, 10, 20),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_embed_type_num_heads=64,
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=1024,
        scaling_factor=0.13025,
        force_upcast=True,
    )
    text_encoder = CLIPTextModel(_clip_text_config(768, 12, 12, 3072, 768, hidden_act="quick_gelu"))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(1280, 32, 20, 5120, 1280, hidden_act="gelu"))
    scheduler = DDIMScheduler(**SDXL_SCHEDULER)
    return dict(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer(),
                text_encoder_2=text_encoder_2.eval(), tokenizer_2=clip_tokenizer_2(), scheduler=scheduler)


def t5_tokenizer():
    """A small T5-style SentencePiece (Unigram) tokenizer for tests, built offline by
    scripts/build_t5_tokenizer.py into lab/assets/t5_tokenizer/ (the real T5 vocabulary is a hub download)."""
    from pathlib import Path

    from transformers import T5TokenizerFast

    return T5TokenizerFast.from_pretrained(Path(__file__).parent / "assets" / "t5_tokenizer")


def _tiny_t5(seed: int, d_model: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer()), d_model=d_model, d_ff=37, d_kv=8, num_layers=2,
                                   num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0)).eval()


def _tiny_flow_vae(seed: int, scaling_factor: float, shift_factor: float) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16), latent_channels=4,
                         norm_num_groups=8, sample_size=128, scaling_factor=scaling_factor,
                         shift_factor=shift_factor).eval()


def tiny_sd3_components(seed: int = 0, t5: bool = True, sd35: bool = False) -> dict:
    """Tiny random SD3-shaped components: latent 16x16 (128 px), patch 2 (an 8x8 token grid), two joint blocks,
    CLIP-L/CLIP-G stand-ins (16 + 32 features, zero-padded to T5's 64) and a T5 encoder (or none: zeros), the
    flow-matching scheduler with SD3's shift 3.0; the VAE has SD3's scaling and shift factors. sd35: SD3.5's
    block layout (RMS norm on queries and keys, an image-only second attention in block 0)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    torch.manual_seed(seed)
    extra = dict(dual_attention_layers=(0,), qk_norm="rms_norm") if sd35 else {}  # SD3.5: image-only attn2, QK norm
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8,
                                        num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32,
                                        pooled_projection_dim=48, out_channels=4, pos_embed_max_size=32, **extra)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(_clip_text_config(16, 2, 2, 37, 16))
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(32, 2, 4, 37, 32))
    parts = dict(transformer=transformer.eval(), vae=_tiny_flow_vae(seed, 1.5305, 0.0609),
                 text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer(), text_encoder_2=text_encoder_2.eval(),
                 tokenizer_2=clip_tokenizer_2(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    if t5:
        parts.update(text_encoder_3=_tiny_t5(seed + 2, 64), tokenizer_3=t5_tokenizer())
    return parts


def tiny_flux_components(seed: int = 0, guidance: bool = True) -> dict:
    """Tiny random FLUX.1-shaped components: latent 16x16 (128 px) packed 2x2 (an 8x8 token grid), two double- and
    two single-stream blocks, a CLIP stand-in for the pooled embedding and a T5 encoder for the sequence, the
    dynamically shifted flow-matching scheduler; guidance=False is schnell's layout (no guidance input)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, guidance_embeds=guidance, axes_dims_rope=(4, 4, 8))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_clip_text_config(32, 2, 4, 37, 32))
    scheduler = FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096,
                                                max_shift=1.15, shift=3.0, use_dynamic_shifting=True)
    return dict(transformer=transformer.eval(), vae=_tiny_flow_vae(seed, 0.3611, 0.1159), text_encoder=text_encoder.eval(),
                tokenizer=clip_tokenizer(), text_encoder_2=_tiny_t5(seed + 2, 32), tokenizer_2=t5_tokenizer(),
                scheduler=scheduler)


def tiny_chroma_components(seed: int = 0) -> dict:
    """Tiny random Chroma-shaped components: tiny_flux_components' VAE, T5 and scheduler (latent 16x16 packed 2x2)
    with a Chroma transformer of its shape (two double- and two single-stream blocks, one pruned modulation
    approximator, no pooled projection, no guidance input), no CLIP."""
    from diffusers import ChromaTransformer2DModel

    flux = tiny_flux_components(seed)
    torch.manual_seed(seed)
    transformer = ChromaTransformer2DModel(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2,
                                           attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                           axes_dims_rope=(4, 4, 8), approximator_num_channels=16,
                                           approximator_hidden_dim=32, approximator_layers=2)
    return dict(transformer=transformer.eval(), vae=flux["vae"], text_encoder=flux["text_encoder_2"],
                tokenizer=flux["tokenizer_2"], scheduler=flux["scheduler"])


def bench_sd3_components(seed: int = 0) -> dict:
    """SD3's layout scaled down for CPU benchmarks: 16 latent channels, patch 2, 4 joint blocks of 8 heads x 64
    (SD3-medium: 24 blocks of 24 heads), CLIP-L / CLIP-G stand-ins and a small T5 (77 + 256 text positions, as SD3)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=16, num_layers=4, attention_head_dim=64,
                                        num_attention_heads=8, joint_attention_dim=512, caption_projection_dim=512,
                                        pooled_projection_dim=384, out_channels=16, pos_embed_max_size=96)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 32, 64, 64), latent_channels=16,
                        norm_num_groups=16, sample_size=256, scaling_factor=1.5305, shift_factor=0.0609)
    text_encoder = CLIPTextModelWithProjection(_clip_text_config(128, 2, 4, 256, 128))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(256, 2, 4, 512, 256))
    return dict(transformer=transformer.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer(),
                text_encoder_2=text_encoder_2.eval(), tokenizer_2=clip_tokenizer_2(), text_encoder_3=_tiny_t5(seed, 512),
                tokenizer_3=t5_tokenizer(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))


def bench_flux_components(seed: int = 0) -> dict:
    """FLUX.1-dev's layout scaled down for CPU benchmarks: 16 latent channels packed 2x2, 2 double- and 4
    single-stream blocks of 8 heads x 64 (dev: 19 + 38 blocks of 24 heads x 128), guidance input, small T5 (512)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=4,
                                         attention_head_dim=64, num_attention_heads=8, joint_attention_dim=512,
                                         pooled_projection_dim=128, guidance_embeds=True, axes_dims_rope=(16, 24, 24))
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 32, 64, 64), latent_channels=16,
                        norm_num_groups=16, sample_size=256, scaling_factor=0.3611, shift_factor=0.1159)
    text_encoder = CLIPTextModel(_clip_text_config(128, 2, 4, 256, 128))
    scheduler = FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096,
                                                max_shift=1.15, shift=3.0, use_dynamic_shifting=True)
    return dict(transformer=transformer.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer(),
                text_encoder_2=_tiny_t5(seed, 512), tokenizer_2=t5_tokenizer(), scheduler=scheduler)


def bench_chroma_components(seed: int = 0) -> dict:
    """Chroma's layout scaled down for CPU benchmarks: bench_flux_components' VAE, T5 and scheduler with a Chroma
    transformer of its shape (Chroma1-HD: 19 + 38 blocks of 24 heads x 128), no CLIP."""
    from diffusers import ChromaTransformer2DModel

    flux = bench_flux_components(seed)
    torch.manual_seed(seed)
    transformer = ChromaTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=4,
                                           attention_head_dim=64, num_attention_heads=8, joint_attention_dim=512,
                                           axes_dims_rope=(16, 24, 24), approximator_hidden_dim=512)
    return dict(transformer=transformer.eval(), vae=flux["vae"], text_encoder=flux["text_encoder_2"],
                tokenizer=flux["tokenizer_2"], scheduler=flux["scheduler"])


def flux_dev_components(seed: int = 0) -> dict:
    """FLUX.1-dev's published architecture (transformer, VAE; CLIP-L and T5-XXL text encoders), random weights: for
    GPU benchmarks (about 12B + 4.7B parameters)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                                         attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                                         pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                        layers_per_block=2, latent_channels=16, sample_size=1024, scaling_factor=0.3611,
                        shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    text_encoder = CLIPTextModel(_clip_text_config(768, 12, 12, 3072, 768, hidden_act="quick_gelu"))
    t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_layers=24, num_heads=64,
                                 feed_forward_proj="gated-gelu", dropout_rate=0.0))
    scheduler = FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096,
                                                max_shift=1.15, shift=3.0, use_dynamic_shifting=True)
    return dict(transformer=transformer.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer(),
                text_encoder_2=t5.eval(), tokenizer_2=t5_tokenizer(), scheduler=scheduler)


# --- language-model text encoders (Qwen-Image, FLUX.2): an offline byte-level BPE in the Qwen2 format ----------

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# words the tests' prompts use beside the shapes vocabulary; some (squirrel, burger) stay multi-piece on purpose
_QWEN_EXTRA = ("painting of photo cat dog lion eating tiger sitting under tree the in with at by an is")


def qwen_tokenizer(vocab_size: int = 700):
    """A small Qwen2Tokenizer (byte-level BPE, Qwen2's pre-tokenizer and chat special tokens) trained offline by
    the `tokenizers` library on the project's word lists and the chat templates of Qwen-Image and FLUX.2: the
    templates' words are whole tokens (Qwen-Image's system prefix is 34 tokens, as with the real tokenizer), rare
    words split into several pieces."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
    from tokenizers import Regex

    from p2p_cli.text.template import QWEN_IMAGE_TEMPLATE as TEMPLATE
    from p2p_cli.shapes import vocabulary as v

    words = [*v.SHAPES, *v.COLOURS, *v.BACKGROUNDS, *v.SIZES, *v.PLACE.values(), *v.JOINING, _QWEN_EXTRA]
    corpus = [" ".join(words)] * 20 + [TEMPLATE.format("a red circle")] * 50
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(QWEN_SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus, trainer)
    model = __import__("json").loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, model_max_length=32768)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tok


def _qwen_vl(seed: int, vocab: int, hidden: int = 32):
    """A tiny random Qwen2_5_VLForConditionalGeneration (2 text layers; the vision tower the pipeline never calls)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = dict(bos_token_id=0, eos_token_id=2, pad_token_id=0)
    half = hidden // 4 // 2  # 4 heads; the rotary sections (time, height, width) split half a head
    section = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    text = dict(hidden_size=hidden, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=2048,
                rope_scaling={"type": "mrope", "mrope_section": section, "rope_type": "default"}, **ids)
    vision = dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=hidden,
                  fullatt_block_indexes=[0])
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                                                               vocab_size=vocab, **ids)).eval()


# Qwen-Image's scheduler settings (its published scheduler config): exponential time shift, dynamic, terminal 0.02
QWEN_IMAGE_SCHEDULER = dict(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192, max_shift=0.9, shift=1.0,
                            shift_terminal=0.02, time_shift_type="exponential", use_dynamic_shifting=True)


def tiny_qwen_image_components(seed: int = 0) -> dict:
    """Tiny random Qwen-Image-shaped components: latent 16x16 (128 px) packed 2x2 (an 8x8 token grid), two
    dual-stream blocks, a 2-layer Qwen2.5-VL text model behind the offline Qwen2 tokenizer, a small video VAE."""
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

    tok = qwen_tokenizer()
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16, num_layers=2,
                                              attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                              axes_dims_rope=(4, 6, 6))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                 temperal_downsample=[False, True, True])
    return dict(transformer=transformer.eval(), vae=vae.eval(), text_encoder=_qwen_vl(seed + 2, len(tok)),
                tokenizer=tok, scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_IMAGE_SCHEDULER))


def bench_qwen_image_components(seed: int = 0) -> dict:
    """Qwen-Image's layout scaled down for CPU benchmarks: 16 latent channels packed 2x2, 4 dual-stream blocks of
    8 heads x 64 (Qwen-Image: 60 blocks of 24 heads x 128), a 2-layer Qwen2.5-VL text model of width 256 behind the
    offline tokenizer, a small video VAE."""
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

    tok = qwen_tokenizer()
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16, num_layers=4,
                                              attention_head_dim=64, num_attention_heads=8, joint_attention_dim=256,
                                              axes_dims_rope=(8, 28, 28))
    vae = AutoencoderKLQwenImage(base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                 temperal_downsample=[False, True, True])
    return dict(transformer=transformer.eval(), vae=vae.eval(), text_encoder=_qwen_vl(seed + 2, len(tok), 256),
                tokenizer=tok, scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_IMAGE_SCHEDULER))


# Qwen3's chat template for one user message with the assistant turn opened and thinking off (what
# Flux2KleinPipeline renders with apply_chat_template(..., add_generation_prompt=True, enable_thinking=False))
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")


def qwen3_tokenizer():
    """The offline Qwen2-format tokenizer with Qwen3's thinking tokens and its chat template's rendering."""
    tok = qwen_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<think>", "</think>"]})
    tok.chat_template = QWEN3_CHAT_TEMPLATE
    return tok


def tiny_flux2_klein_components(seed: int = 0) -> dict:
    """Tiny random FLUX.2 [klein]-shaped components: 32 VAE channels patched 2x2 (128 transformer channels), latent
    8x8 at 128 px, one double- and two single-stream blocks, a 27-layer Qwen3 of width 16 (the pipeline reads layers
    9, 18, 27), the dynamically shifted flow-matching scheduler."""
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = qwen3_tokenizer()
    torch.manual_seed(seed)
    transformer = Flux2Transformer2DModel(patch_size=1, in_channels=128, num_layers=1, num_single_layers=2,
                                          attention_head_dim=16, num_attention_heads=2, joint_attention_dim=48,
                                          timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4),
                                          guidance_embeds=False)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLFlux2(block_out_channels=(8, 8, 16, 16), layers_per_block=1, latent_channels=32,
                             norm_num_groups=4)
    with torch.no_grad():  # a batch norm with statistics, as a trained one has
        vae.bn.running_mean.normal_(0, 0.5)
        vae.bn.running_var.uniform_(0.5, 2.0)
    torch.manual_seed(seed + 2)
    text = Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tok), hidden_size=16, intermediate_size=24, num_hidden_layers=27,
                                        num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                        max_position_embeddings=1024, bos_token_id=0, eos_token_id=2, pad_token_id=0))
    scheduler = FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096,
                                                max_shift=1.15, shift=3.0, use_dynamic_shifting=True)
    return dict(transformer=transformer.eval(), vae=vae.eval(), text_encoder=text.eval(), tokenizer=tok,
                scheduler=scheduler)


def bench_flux2_klein_components(seed: int = 0) -> dict:
    """FLUX.2 [klein]'s layout scaled down for CPU benchmarks: 128 patched latent channels, 1 double- and 4
    single-stream blocks of 8 heads x 64 (klein 4B: 5 + 20 blocks of 24 heads x 128), a 27-layer Qwen3 of width 64
    (layers 9, 18, 27 read), a small VAE."""
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = qwen3_tokenizer()
    torch.manual_seed(seed)
    transformer = Flux2Transformer2DModel(patch_size=1, in_channels=128, num_layers=1, num_single_layers=4,
                                          attention_head_dim=64, num_attention_heads=8, joint_attention_dim=192,
                                          timestep_guidance_channels=256, axes_dims_rope=(16, 16, 16, 16),
                                          guidance_embeds=False)
    vae = AutoencoderKLFlux2(block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=32,
                             norm_num_groups=16)
    text = Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=27, num_attention_heads=4, num_key_value_heads=2,
                                        head_dim=16, max_position_embeddings=1024, bos_token_id=0, eos_token_id=2,
                                        pad_token_id=0))
    scheduler = FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096,
                                                max_shift=1.15, shift=3.0, use_dynamic_shifting=True)
    return dict(transformer=transformer.eval(), vae=vae.eval(), text_encoder=text.eval(), tokenizer=tok,
                scheduler=scheduler)


# --- FLUX.2 [dev]: a Mistral Small 3.1 text encoder behind an offline byte-level BPE in the Mistral format --------

# Mistral's control tokens as the Tekken tokenizer orders them (the ones FLUX.2 [dev]'s processor uses)
MISTRAL_SPECIALS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
                    "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]")
# Mistral Small 3.1's chat template as it renders a system message and user messages, each given as a string or as
# text parts ({"type": "text", "text": ...}), as Flux2Pipeline's format_input builds them
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['content'] is string %}"
    "{% set text = message['content'] %}{% else %}{% set text = message['content'] | selectattr('type', 'equalto',"
    " 'text') | map(attribute='text') | join('') %}{% endif %}{% if message['role'] == 'system' %}"
    "[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]{% elif message['role'] == 'user' %}[INST]{{ text }}[/INST]"
    "{% else %}{{ text }}{{ eos_token }}{% endif %}{% endfor %}")


def mistral_tokenizer(vocab_size: int = 900):
    """A small byte-level BPE in the Mistral (Tekken) format, trained offline by the `tokenizers` library on the
    project's word lists and Flux2Pipeline's system message: Mistral's control tokens, `<s>` added in front of a
    text as the real tokenizer does (the pipeline's template holds it, so the pipeline adds none), right padding
    with `<pad>`, Mistral Small 3.1's chat template. FLUX.2 [dev] ships it inside a PixtralProcessor, which needs
    torchvision; Flux2Pipeline calls only its apply_chat_template, which for text renders and tokenizes exactly as
    the tokenizer's own, so the tokenizer stands in for the processor here."""
    import json

    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from p2p_cli.shapes import vocabulary as v

    words = [*v.SHAPES, *v.COLOURS, *v.BACKGROUNDS, *v.SIZES, *v.PLACE.values(), *v.JOINING, _QWEN_EXTRA]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(MISTRAL_SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([" ".join(words)] * 20 + [SYSTEM_MESSAGE] * 50, trainer)
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", bpe.token_to_id("<s>"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(json.loads(bpe.to_str()))),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                  additional_special_tokens=list(MISTRAL_SPECIALS[3:]), model_max_length=131072,
                                  chat_template=MISTRAL_CHAT_TEMPLATE)
    return tok


def _tiny_mistral3(seed: int, vocab: int, hidden: int = 16, pad: int = 11):
    """A tiny random Mistral3ForConditionalGeneration: a 30-layer Mistral text model (Flux2Pipeline reads layers
    10, 20 and 30) and a one-layer Pixtral vision tower the pipeline never calls."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    heads = hidden // 8  # heads of 8
    text = dict(model_type="mistral", vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 3 // 2,
                num_hidden_layers=30, num_attention_heads=heads, num_key_value_heads=heads // 2, head_dim=8,
                max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=pad)
    vision = dict(model_type="pixtral", hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                  num_attention_heads=2, head_dim=8, image_size=32, patch_size=16)
    torch.manual_seed(seed)
    return Mistral3ForConditionalGeneration(Mistral3Config(text_config=text, vision_config=vision,
                                                           image_token_index=10)).eval()


def tiny_flux2_dev_components(seed: int = 0) -> dict:
    """Tiny random FLUX.2 [dev]-shaped components: klein's tiny transformer with the guidance embedding, its VAE and
    scheduler, a 30-layer Mistral3 of width 16 behind the offline Mistral tokenizer."""
    from diffusers import Flux2Transformer2DModel

    parts = tiny_flux2_klein_components(seed)
    tok = mistral_tokenizer()
    torch.manual_seed(seed)
    parts["transformer"] = Flux2Transformer2DModel(
        patch_size=1, in_channels=128, num_layers=1, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=48, timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=True).eval()
    parts["text_encoder"] = _tiny_mistral3(seed + 2, len(tok), pad=tok.pad_token_id)
    parts["tokenizer"] = tok
    return parts


def bench_flux2_dev_components(seed: int = 0) -> dict:
    """FLUX.2 [dev]'s layout scaled down for CPU benchmarks: klein's bench transformer with the guidance embedding
    (dev: 8 + 48 blocks of 48 heads x 128), its VAE and scheduler, a 30-layer Mistral3 of width 64 (layers 10, 20,
    30 read) behind the offline Mistral tokenizer."""
    from diffusers import Flux2Transformer2DModel

    parts = bench_flux2_klein_components(seed)
    tok = mistral_tokenizer()
    torch.manual_seed(seed)
    parts["transformer"] = Flux2Transformer2DModel(
        patch_size=1, in_channels=128, num_layers=1, num_single_layers=4, attention_head_dim=64, num_attention_heads=8,
        joint_attention_dim=192, timestep_guidance_channels=256, axes_dims_rope=(16, 16, 16, 16),
        guidance_embeds=True).eval()
    parts["text_encoder"] = _tiny_mistral3(seed + 2, len(tok), hidden=64, pad=tok.pad_token_id)
    parts["tokenizer"] = tok
    return parts
