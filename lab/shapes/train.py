"""Train the bundled shapes model: a factor-4 AutoencoderKL, then a small CLIP text encoder + UNet jointly.

python -m lab.shapes.train --out DIR --seed 0 --minutes 50 [--vae-minutes 5] [--threads 2]
python -m lab.shapes.train --resume DIR --out DIR2 --decoder-only --minutes 15   (the VAE decoder alone)
python -m lab.shapes.train --resume DIR --out DIR2 --world wide --minutes 60 --lr 2e-4 --pad-keeps-background

Data is drawn on the fly from the world --world names (WORLDS: the grid world, world.sample_scene, by default;
`wide`: world.sample_wide_scene, sizes and places continuous, one to three objects, half the captions without
place words; `mixed`: world.sample_mixed_scene, half the scenes from each; `grid-unplaced`: the grid world with
half the captions naming no place) with a numpy Generator seeded by --seed; torch is seeded too, so a run is
reproducible in what it draws, though CPU thread scheduling can make it not bit-exact. EMA weights are saved
with save_pretrained (safetensors, StableDiffusionPipeline layout) into --out every few minutes and at the end,
so a partial run is usable. The learning-rate schedule is fixed in steps; --minutes only ends it.
"""

from __future__ import annotations

import argparse
import os
import copy
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# OpenMP threads that spin-wait slow down ~5-15x when other processes share the cores; must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from lab.arch import clip_tokenizer
from p2p_cli.families.sd import SD_SCHEDULER
from . import edit_pairs
from .captions import caption
from .world import render, sample_grid_unplaced_scene, sample_mixed_scene, sample_scene, sample_wide_scene

# --world: what the pictures and captions are drawn from
WORLDS = {"grid": sample_scene, "wide": sample_wide_scene, "mixed": sample_mixed_scene,
          "grid-unplaced": sample_grid_unplaced_scene}


@dataclass
class Config:
    """Sizes and optimiser settings; defaults fit ~50 minutes on 2 CPU cores and <= 40 MB of fp32 weights."""

    vae_channels: tuple[int, ...] = (16, 32, 64)  # 3 blocks: 64 px image -> 16x16x4 latent
    vae_groups: int = 16  # GroupNorm groups, divides every vae channel count
    unet_channels: tuple[int, ...] = (32, 64, 128)  # cross-attention blocks at 16, 8 and 4
    unet_heads: int = 4  # diffusers' attention_head_dim (a head count for UNet2DConditionModel)
    unet_groups: int = 16
    text_hidden: int = 64  # the 49408 x hidden token table dominates the size on disk
    text_layers: int = 3
    text_heads: int = 4
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_kl: float = 1e-7  # weight of the (summed per picture) KL term
    batch: int = 64
    lr: float = 6e-4
    warmup: int = 200  # steps of linear lr warm-up
    ema: float = 0.999
    min_snr: float = 5.0  # Min-SNR-gamma loss weighting (Hang et al. 2023), speeds up convergence
    caption_dropout: float = 0.1  # empty prompt, so classifier-free guidance works
    attn_loss: float = 0.05  # weight of the word-localisation loss on the cross-attention maps (see AttentionRecorder)
    read_loss: float = 0.0  # weight of the word-reading loss (see reading_loss); stage 3 of the shipped weights: 0.02
    pad_shuffle: bool = True  # give each caption another caption's end-of-text/padding embeddings (see shuffle_padding)
    pad_keeps_background: bool = False  # the donor names the same background (stage 4 of the shipped weights)
    world: str = "grid"  # a WORLDS key: the scenes every phase (VAE, diffusion, padding donors) is trained on
    edit_sources: int = 0  # per step, captions the averaged model draws and turns into edit pairs (edit_pairs.py)
    edit_steps: int = 12  # DDIM steps of those drawings
    edit_noise: float = 1.0  # the share of the timesteps, from the noisiest, that the pair rows train on
    edit_guidance: float = 7.5  # their classifier-free guidance (the evaluation's)


def build(cfg: Config, seed: int) -> tuple[AutoencoderKL, UNet2DConditionModel, CLIPTextModel]:
    """Random VAE, UNet and text encoder with the Stable Diffusion classes."""
    torch.manual_seed(seed)
    n = len(cfg.vae_channels)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels, layers_per_block=1, norm_num_groups=cfg.vae_groups,
        mid_block_add_attention=False,  # cheaper encoding; the world has no long-range structure
    )  # fmt: skip
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=cfg.unet_channels,
        down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=cfg.text_hidden, attention_head_dim=cfg.unet_heads, norm_num_groups=cfg.unet_groups,
    )  # fmt: skip
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408, hidden_size=cfg.text_hidden, intermediate_size=4 * cfg.text_hidden,
            num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads, max_position_embeddings=77,
            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, projection_dim=cfg.text_hidden,
        )
    )  # fmt: skip
    return vae, unet, text_encoder


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


BACKGROUND_DROPOUT = 0.2  # fraction of captions without "on a <colour> background"


def batch_of(rng: np.random.Generator, n: int, sampler=sample_scene) -> tuple[torch.Tensor, list[str]]:
    """n random training pictures as (n, 3, 64, 64) floats in [-1, 1], and their captions."""
    x, captions, _, _ = scenes_batch(rng, n, sampler)
    return x, captions


def captioned_scenes(rng: np.random.Generator, n: int, sampler=sample_scene):
    """n scenes from `sampler` (the grid world's by default), their captions, and whether each names the
    background."""
    scenes = [sampler(rng) for _ in range(n)]
    # the background phrase is left out of some captions, so that refining a prompt by adding it is meaningful
    with_bg = [rng.random() >= BACKGROUND_DROPOUT for _ in scenes]
    return [caption(s, background=b) for s, b in zip(scenes, with_bg)], scenes, with_bg


def scenes_batch(rng: np.random.Generator, n: int, sampler=sample_scene):
    """Pictures (n, 3, 64, 64) in [-1, 1], captions, scenes, and whether each caption names the background
    (captioned_scenes)."""
    captions, scenes, with_bg = captioned_scenes(rng, n, sampler)
    x = np.stack([render(s) for s in scenes])  # (n, 64, 64, 3) uint8
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, captions, scenes, with_bg


class AttentionRecorder:
    """Explicit cross-attention for training that keeps each layer's head-averaged maps (with gradients).

    Prompt-to-Prompt needs a word's cross-attention map to sit where the word is painted, as it does in
    Stable Diffusion. A model this small, trained briefly, spreads every token's attention almost evenly and
    reads the text through the averaged values; a small auxiliary loss (localisation_loss) asks each object
    word's map (size, colour, shape) and the background words' to put its mass on their region.
    """

    def __init__(self):
        self.maps: list[torch.Tensor] = []  # (B, Q, 77) per recorded layer, this forward pass

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        b, q_len, _ = hidden_states.shape
        q = attn.to_q(hidden_states).view(b, q_len, attn.heads, -1).transpose(1, 2)  # (B, h, Q, d)
        k = attn.to_k(encoder_hidden_states).view(b, -1, attn.heads, q.shape[-1]).transpose(1, 2)
        v = attn.to_v(encoder_hidden_states).view(b, -1, attn.heads, q.shape[-1]).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)  # (B, h, Q, 77)
        if q_len >= 64:  # the 16x16 and 8x8 layers
            self.maps.append(probs.mean(1))
        out = (probs @ v).transpose(1, 2).reshape(b, q_len, -1)
        return attn.to_out[1](attn.to_out[0](out))


POSITION_WORDS = frozenset({"top", "bottom", "left", "right", "center"})


def eos_positions(ids: torch.Tensor, eos: int) -> list[int]:
    """(B, 77) token ids -> the position of each row's first end-of-text token."""
    return (ids == eos).int().argmax(1).tolist()


def donor_captions(rng: np.random.Generator, ids: torch.Tensor, kept: list[bool], tokens, eos: int,
                   backgrounds: list[str | None] | None = None, tries: int = 400, sampler=sample_scene
                   ) -> tuple[list[int], list[str]]:
    """For each captioned row, a caption of another random scene with exactly as many tokens (rows, captions).

    backgrounds[i], when given, is the background row i's caption names (None: it names none); the donor then
    names the same one, so that the padding still says what the background is and nothing else.
    Rows whose key no draw matches within `tries` are left out (they keep their own padding). Donor scenes come
    from `sampler` (world.sample_wide_scene for the wide world).
    """
    first_eos = eos_positions(ids, eos)
    bgs = backgrounds if backgrounds is not None else [None] * len(kept)
    key = [(first_eos[i], bgs[i]) for i in range(len(kept))]
    wanted = {key[i] for i, k in enumerate(kept) if k}
    found: dict[tuple, list[str]] = {w: [] for w in wanted}
    need = {w: sum(1 for i, k in enumerate(kept) if k and key[i] == w) for w in wanted}
    for _ in range(tries):
        if all(len(found[w]) >= need[w] for w in wanted):
            break
        scene = sampler(rng)
        for bg in (True, False):
            c = caption(scene, background=bg)
            n = eos_positions(tokens([c]), eos)[0]
            w = (n, scene.background if bg and backgrounds is not None else None)
            if w in found and len(found[w]) < need[w]:
                found[w].append(c)
    rows, donors = [], []
    for i, k in enumerate(kept):
        if k and found[key[i]]:
            rows.append(i)
            donors.append(found[key[i]].pop())
    return rows, donors


def shuffle_padding(cond: torch.Tensor, donor: torch.Tensor, rows: list[int], ids: torch.Tensor,
                    eos: int) -> torch.Tensor:
    """cond (B, 77, D) with rows' end-of-text and padding embeddings replaced by a same-length donor's (R, 77, D).

    CLIP's text encoder is causal, so the end-of-text token and the padding after it see the whole caption.
    A text encoder trained jointly with the UNet (unlike Stable Diffusion's frozen CLIP) learns to carry the
    whole scene in those tokens, and the UNet then reads colour and position from them rather than from the
    words. Prompt-to-Prompt cannot work on such a model: swapping "red" for "green" changes every padding
    value, and with them the object's place, whatever maps are injected. Padding that describes another
    picture carries nothing the UNet can use, so it learns to read each object from its own words, as Stable
    Diffusion does. The donor caption has the same number of tokens, so that what follows the caption is
    always genuine end-of-text and padding (a longer donor would append its own words: a second, wrong
    background phrase). Uncaptioned rows (caption dropout) keep their own padding: it is the unconditional
    prompt.
    """
    out = cond.clone()
    first_eos = eos_positions(ids, eos)
    for r, i in enumerate(rows):
        e = first_eos[i]
        out[i, e:] = donor[r, e:]
    return out


def attention_targets(scenes, with_bg, kept) -> tuple[torch.Tensor, torch.Tensor]:
    """Per caption token, the 16x16 fraction map of its region: (B, 77, 256), and which tokens have one (B, 77).

    Caption words are single CLIP tokens (checked in train_diffusion), so word i is token i + 1.
    """
    from .captions import describe
    from .world import shape_mask

    targets = torch.zeros(len(scenes), 77, 16, 16)
    for b, (scene, bg, keep) in enumerate(zip(scenes, with_bg, kept)):
        if not keep:
            continue
        word, anywhere = 0, np.zeros((64, 64), bool)
        for o in scene.objects:
            cx, cy = o.centre()
            mask = torch.from_numpy(shape_mask(o.shape, cx, cy, o.r())).float()
            anywhere |= mask.numpy() > 0
            small = F.avg_pool2d(mask[None, None], 4)[0, 0]  # (16, 16)
            phrase = describe(o, scene.places).split()  # "a big red circle in the top left"
            for offset, w in enumerate(phrase):  # size, colour, shape and the position's own words
                if offset in (1, 2, 3) or w in POSITION_WORDS:
                    targets[b, word + offset + 1] = small
            word += len(phrase) + 1  # the phrase and "and"
        if bg:  # "... on a gray background": the colour word and "background"
            rest = F.avg_pool2d(torch.from_numpy(~anywhere).float()[None, None], 4)[0, 0]
            word -= 1
            targets[b, word + 2 + 1] = rest
            targets[b, word + 3 + 1] = rest
    select = targets.flatten(2).sum(-1) > 0  # (B, 77)
    return targets.flatten(2), select


def localisation_loss(maps: list[torch.Tensor], targets: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """Mean over recorded layers and selected tokens of -log(share of the token's attention in its region)."""
    if not select.any():
        return torch.zeros(())
    losses = []
    for m in maps:  # (B, Q, 77)
        side = int(round(m.shape[1] ** 0.5))
        region = F.adaptive_avg_pool2d(targets.view(-1, 1, 16, 16), side).view(targets.shape[0], 77, -1)
        a = m.transpose(1, 2)  # (B, 77, Q)
        share = (a * region).sum(-1) / a.sum(-1).clamp_min(1e-8)  # (B, 77)
        losses.append(-(torch.log(share + 1e-4) * select).sum() / select.sum())
    return torch.stack(losses).mean()


def reading_loss(maps: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Mean over recorded layers and covered pixels of -log(share of the pixel's attention on its own words).

    localisation_loss asks where a word is read; this asks what a place reads. It was added so that the
    background pixels, once the padding carried nothing (shuffle_padding), would read "white" or "black"
    rather than the padding; it did not bring the background back (DEVELOPERS.md), so it is off by default.
    """
    losses = []
    for m in maps:  # (B, Q, 77)
        side = int(round(m.shape[1] ** 0.5))
        region = F.adaptive_avg_pool2d(targets.view(-1, 1, 16, 16), side).view(targets.shape[0], 77, -1)
        own = (region > 0.5).to(m.dtype).transpose(1, 2)  # (B, Q, 77): the tokens naming what is at q
        covered = own.sum(-1) > 0  # (B, Q)
        if not covered.any():
            continue
        share = (m * own).sum(-1)  # (B, Q)
        losses.append(-(torch.log(share + 1e-4) * covered).sum() / covered.sum())
    return torch.stack(losses).mean() if losses else torch.zeros(())


def reconstruction_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MSE of the autoencoder, object pixels (those not of the corner's colour) weighted x5."""
    fg = (x != x[:, :, :1, :1]).any(1, keepdim=True).float()  # (B, 1, 64, 64)
    return ((rec - x) ** 2 * (1 + 4 * fg)).mean()


def optimiser_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params, lr: float, step: int, warmup: int) -> None:
    """One step: the learning rate warmed up linearly over `warmup` steps, gradients clipped to norm 1."""
    for g in opt.param_groups:
        g["lr"] = lr * min(1.0, (step + 1) / warmup)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


@torch.no_grad()
def ema_update(pairs, step: int, ema: float) -> None:
    """Move each (averaged, trained) network's averaged weights towards the trained ones; the decay grows
    with the step up to `ema`."""
    decay = min(ema, (1 + step) / (10 + step))
    for averaged, net in pairs:
        for pe, q in zip(averaged.parameters(), net.parameters()):
            pe.lerp_(q, 1 - decay)


def train_vae(vae: AutoencoderKL, cfg: Config, rng: np.random.Generator, steps: int, minutes: float) -> None:
    """Reconstruction (MSE, object pixels weighted x5) plus a small KL, for `steps` steps (at most `minutes`)."""
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    vae.train()
    t0, step, avg = time.time(), 0, None
    while step < steps and time.time() - t0 < minutes * 60:
        x, _ = batch_of(rng, cfg.vae_batch, WORLDS[cfg.world])
        post = vae.encode(x).latent_dist
        mse = reconstruction_loss(vae.decode(post.sample()).sample, x)
        optimiser_step(opt, mse + cfg.vae_kl * post.kl().mean(), vae.parameters(), cfg.vae_lr, step, 50)
        avg = mse.item() if avg is None else 0.95 * avg + 0.05 * mse.item()
        step += 1
        if step % 25 == 0:
            log(f"vae step {step} mse {avg:.5f} {step * cfg.vae_batch / (time.time() - t0):.1f} img/s")
    vae.eval()
    with torch.no_grad():  # scaling_factor = 1 / std of the latents, as SD's 0.18215
        x, _ = batch_of(rng, 256, WORLDS[cfg.world])
        z = vae.encode(x).latent_dist.mean
        rec = vae.decode(z).sample
    vae.register_to_config(scaling_factor=float(1 / z.std()))
    log(f"vae done: {step} steps, eval mse {F.mse_loss(rec, x).item():.5f}, "
        f"latent std {z.std().item():.3f}, scaling_factor {vae.config.scaling_factor:.4f}")  # fmt: skip


def finetune_decoder(vae: AutoencoderKL, cfg: Config, rng: np.random.Generator, minutes: float,
                     latent_noise: float = 0.2, lr: float = 3e-4) -> AutoencoderKL:
    """Train the decoder (and post_quant_conv) on, with the encoder frozen; returns an EMA copy of the VAE.

    The encoder, and so the latent space the UNet was trained in, does not change: the UNet and text encoder stay
    valid and every attention map stays where it was. The loss is the autoencoder phase's (MSE, object pixels
    x5). Each latent gets Gaussian noise of up to `latent_noise` latent standard deviations, so the decoder learns
    to turn slightly-off latents (what sampling ends with) into clean pictures, not only the encoder's own.
    """
    vae.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for q in params:
        q.requires_grad_(True)
    ema = copy.deepcopy(vae).eval().requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    vae.train()
    t0, step, avg = time.time(), 0, None
    while time.time() - t0 < minutes * 60:
        x, _ = batch_of(rng, cfg.vae_batch, WORLDS[cfg.world])
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
            scale = latent_noise * z.std() * torch.rand(z.shape[0], 1, 1, 1)
            z = z + scale * torch.randn_like(z)
        mse = reconstruction_loss(vae.decode(z).sample, x)
        optimiser_step(opt, mse, params, lr, step, 50)
        step += 1
        ema_update([(ema, vae)], step, cfg.ema)
        avg = mse.item() if avg is None else 0.95 * avg + 0.05 * mse.item()
        if step % 25 == 0:
            log(f"decoder step {step} mse {avg:.5f} {step * cfg.vae_batch / (time.time() - t0):.1f} img/s")
    vae.requires_grad_(False)
    log(f"decoder done: {step} steps in {(time.time() - t0) / 60:.1f} min")
    return ema


class Tokens:
    """Caption -> (77,) ids, padded to max_length as StableDiffusionPipeline does, cached."""

    def __init__(self, tokenizer):
        self.tok, self.cache = tokenizer, {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        for c in captions:
            if c not in self.cache:
                self.cache[c] = self.tok(c, padding="max_length", max_length=77, truncation=True,
                                         return_tensors="pt").input_ids[0]  # fmt: skip
        return torch.stack([self.cache[c] for c in captions])  # (B, 77)


def save(out: Path, vae, unet, text_encoder, tokenizer) -> None:
    """save_pretrained the pipeline (safetensors) into out, replacing it whole."""
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler(**SD_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    save_whole(pipe, out)


def save_whole(pipe, out: Path) -> None:
    """pipe.save_pretrained (safetensors) into a sibling folder, then put it in out's place."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


class SelfDrawnPairs:
    """Each call: cfg.edit_sources captions of the training world drawn by the averaged UNet and text encoder from
    fresh noise (DDIM, eta 0, classifier-free guidance: the pipeline's sampler, so the noise fixes the picture),
    then turned into (source, edit) pair rows by edit_pairs.pairs_from."""

    def __init__(self, unet, text_encoder, vae, tokens, sampler, cfg: Config):
        self.unet, self.text_encoder, self.vae, self.tokens, self.sampler, self.cfg = (
            unet, text_encoder, vae, tokens, sampler, cfg)

    @torch.no_grad()
    def draw(self, captions: list[str], noise: torch.Tensor) -> np.ndarray:
        """The captions' pictures from noise (B, 4, 16, 16), (B, 64, 64, 3) uint8."""
        scheduler = DDIMScheduler(**SD_SCHEDULER)
        scheduler.set_timesteps(self.cfg.edit_steps)
        text = self.text_encoder(self.tokens([""] + captions))[0]
        b = len(captions)
        text = torch.cat([text[:1].expand(b, -1, -1), text[1:]])
        x = noise * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            eps = self.unet(torch.cat([x, x]), t, text).sample
            uncond, cond = eps.chunk(2)
            x = scheduler.step(uncond + self.cfg.edit_guidance * (cond - uncond), t, x).prev_sample
        from .evaluate import to_uint8

        return to_uint8(self.vae.decode(x / self.vae.config.scaling_factor).sample / 2 + 0.5)

    def __call__(self, rng: np.random.Generator):
        return edit_pairs.drawn_pairs(rng, self.draw, self.cfg.edit_sources, self.sampler)


def train_diffusion(vae, unet, text_encoder, cfg: Config, rng, minutes: float, out: Path, save_every: float,
                    max_steps: int | None = None) -> int:
    """Epsilon-prediction DDPM loss over SD's 1000 scaled-linear steps; UNet and text encoder trained jointly, on
    cfg.world's scenes; returns the number of steps."""
    sampler = WORLDS[cfg.world]
    tokenizer = clip_tokenizer()
    tokens = Tokens(tokenizer)
    abar = DDIMScheduler(**SD_SCHEDULER).alphas_cumprod  # (1000,)
    snr = abar / (1 - abar)
    weight = torch.clamp(snr, max=cfg.min_snr) / snr  # Min-SNR weights for epsilon prediction
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    unet.train(), text_encoder.train()
    t0, last_save, step, avg, avg_aux, avg_read = time.time(), time.time(), 0, None, None, 0.0
    words = {w for s in (sampler(np.random.default_rng(i)) for i in range(200)) for w in caption(s).split()}
    assert all(len(tokenizer(w, add_special_tokens=False).input_ids) == 1 for w in words), "multi-token word"
    recorder = AttentionRecorder()
    unet.set_attn_processor({n: recorder if n.endswith("attn2.processor") else p
                             for n, p in unet.attn_processors.items()})
    pairs = SelfDrawnPairs(ema_unet, ema_text, vae, tokens, sampler, cfg) if cfg.edit_sources else None
    kept_pairs = drawn = n_pairs = 0
    while True:
        done = time.time() - t0 >= minutes * 60 or (max_steps is not None and step >= max_steps)
        if done or time.time() - last_save >= save_every * 60:
            save(out, vae, ema_unet, ema_text, tokenizer)
            last_save = time.time()
            log(f"saved step {step} to {out}")
            if done:
                return step
        x, caps, scenes, with_bg = scenes_batch(rng, cfg.batch, sampler)
        kept = [rng.random() >= cfg.caption_dropout for _ in caps]
        caps = [c if k else "" for c, k in zip(caps, kept)]
        if pairs is not None:
            px, pcaps, pscenes, pbg, pnoise, n_pairs = pairs(rng)
            drawn, kept_pairs = drawn + cfg.edit_sources, kept_pairs + n_pairs
            if n_pairs:  # the pair rows: captioned, paired with their drawing's noise, one step per pair
                x, caps, scenes = torch.cat([x, px]), caps + pcaps, scenes + pscenes
                with_bg, kept = with_bg + pbg, kept + [True] * len(pcaps)
        targets, select = attention_targets(scenes, with_bg, kept)
        recorder.maps.clear()
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean * vae.config.scaling_factor  # (B, 4, 16, 16)
        n_own = z.shape[0] - 2 * n_pairs
        noise = torch.randn(n_own, *z.shape[1:])
        t = torch.randint(0, 1000, (n_own,))
        if n_pairs:
            noise = torch.cat([noise, pnoise])
            low = min(999, round(1000 * (1.0 - cfg.edit_noise)))
            t = torch.cat([t, torch.randint(low, 1000, (n_pairs,)).repeat_interleave(2)])
        a = abar[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        ids = tokens(caps)
        cond = text_encoder(ids)[0]  # (B, 77, hidden), no attention mask, as the pipeline
        if cfg.pad_shuffle:
            named = [sc.background if b else None for sc, b in zip(scenes, with_bg)] if cfg.pad_keeps_background \
                else None
            rows, donor_caps = donor_captions(rng, ids, kept, tokens, tokenizer.eos_token_id, named, sampler=sampler)
            if rows:
                with torch.no_grad():
                    donor = text_encoder(tokens(donor_caps))[0]
                cond = shuffle_padding(cond, donor, rows, ids, tokenizer.eos_token_id)
        pred = unet(noisy, t, cond).sample
        diffusion = (((pred - noise) ** 2).mean((1, 2, 3)) * weight[t]).mean()
        aux = localisation_loss(recorder.maps, targets, select)
        reading = reading_loss(recorder.maps, targets) if cfg.read_loss else torch.zeros(())
        loss = diffusion + cfg.attn_loss * aux + cfg.read_loss * reading
        optimiser_step(opt, loss, params, cfg.lr, step, cfg.warmup)
        step += 1
        ema_update([(ema_unet, unet), (ema_text, text_encoder)], step, cfg.ema)
        avg = diffusion.item() if avg is None else 0.98 * avg + 0.02 * diffusion.item()
        avg_aux = aux.item() if avg_aux is None else 0.98 * avg_aux + 0.02 * aux.item()
        avg_read = 0.98 * avg_read + 0.02 * reading.item()
        if step % 20 == 0:
            el = time.time() - t0
            kept_share = f" pairs kept {kept_pairs}/{drawn}" if pairs is not None else ""
            log(f"step {step} loss {avg:.4f} localisation {avg_aux:.3f} reading {avg_read:.3f}"
                f" {step * cfg.batch / el:.1f} img/s {el / 60:.1f} min{kept_share}")


def count(net) -> int:
    return sum(p.numel() for p in net.parameters())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=50.0, help="total wall-clock budget, VAE included")
    ap.add_argument("--vae-steps", type=int, default=800, help="autoencoder steps (~4 min on 2 free cores)")
    ap.add_argument("--vae-minutes", type=float, default=10.0, help="cap on the autoencoder phase")
    ap.add_argument("--save-every", type=float, default=5.0, help="minutes between checkpoints")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=Config.batch)
    ap.add_argument("--resume", type=Path, default=None,
                    help="continue from a checkpoint folder (its VAE is kept; no autoencoder phase)")
    ap.add_argument("--lr", type=float, default=Config.lr)
    ap.add_argument("--read-loss", type=float, default=Config.read_loss, help="weight of the word-reading loss")
    ap.add_argument("--pad-keeps-background", action="store_true",
                    help="padding donors name the same background, so the padding still says it")
    ap.add_argument("--no-pad-shuffle", action="store_true", help="let the UNet read the padding embeddings")
    ap.add_argument("--world", choices=sorted(WORLDS), default=Config.world,
                    help="grid: nine named places (the shipped model's stages 1-5); wide: continuous sizes and "
                         "places, one to three objects, half the captions without place words; mixed: half "
                         "the scenes from each; grid-unplaced: grid scenes, half the captions without places")
    ap.add_argument("--decoder-only", action="store_true",
                    help="with --resume: only fine-tune the VAE decoder for --minutes (encoder, UNet and text "
                         "encoder unchanged), then save to --out")
    ap.add_argument("--latent-noise", type=float, default=0.2,
                    help="--decoder-only: largest noise added to the latents, in latent standard deviations")
    edit_pairs.add_arguments(ap, Config, "DDIM", "timesteps")
    args = ap.parse_args(argv)
    pair_cfg = edit_pairs.settings(ap, args)
    if args.decoder_only and args.resume is None:
        ap.error("--decoder-only needs --resume DIR (the checkpoint whose decoder to fine-tune)")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal floats make CPU kernels several times slower
    cfg = Config(batch=args.batch, lr=args.lr, pad_shuffle=not args.no_pad_shuffle,
                 read_loss=args.read_loss, pad_keeps_background=args.pad_keeps_background, world=args.world,
                 **pair_cfg)
    rng = np.random.default_rng(args.seed)
    vae, unet, text_encoder = build(cfg, args.seed)
    t0 = time.time()
    if args.resume is not None:  # the checkpoint holds EMA weights; training goes on from them
        vae = AutoencoderKL.from_pretrained(args.resume / "vae")
        unet = UNet2DConditionModel.from_pretrained(args.resume / "unet")
        text_encoder = CLIPTextModel.from_pretrained(args.resume / "text_encoder")
        log(f"resumed from {args.resume}")
    log(f"params: unet {count(unet):,} vae {count(vae):,} text {count(text_encoder):,}; {cfg}")
    if args.decoder_only:
        vae = finetune_decoder(vae, cfg, rng, args.minutes, args.latent_noise)
        save(args.out, vae, unet, text_encoder, clip_tokenizer())
        log(f"saved to {args.out}; finished in {(time.time() - t0) / 60:.1f} min")
        return
    if args.resume is None:
        train_vae(vae, cfg, rng, args.vae_steps, args.vae_minutes)
    vae.requires_grad_(False)
    left = args.minutes - (time.time() - t0) / 60
    train_diffusion(vae, unet, text_encoder, cfg, rng, left, args.out, args.save_every)
    log(f"finished in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
