"""Train the shapes world's transformer model: a small SD3-layout MMDiT (SD3Transformer2DModel) by flow matching.

python -m lab.shapes.train_mmdit --out DIR --seed 0 --minutes 60 [--world wide|grid] [--threads 1]
python -m lab.shapes.train_mmdit --resume DIR --out DIR2 --minutes 30 --lr 2e-4

The folder it writes is a StableDiffusion3Pipeline folder (save_pretrained, safetensors): transformer,
FlowMatchEulerDiscreteScheduler, and, taken from the bundled UNet model (p2p_cli/shapes/weights) and frozen, its
VAE (4 latent channels, factor 4: 64 px -> 16x16 latent) and its CLIP text encoder as both text_encoder and
text_encoder_2 (CLIPTextModelWithProjection; the projection, which only makes the pooled embedding, is new).
There is no T5 (text_encoder_3 None): the pipeline then appends max_sequence_length (256) zero rows to the
text sequence. Those rows stay identical through every block (SD3 gives text tokens no position), so training
uses one such row whose attention logit is raised by log(256): the same attention, 180 fewer tokens per row.

Flow matching as diffusers' SD3 training script does: sigma from a logit-normal draw, moved by the scheduler's
shift; x_t = (1 - sigma) x0 + sigma noise; the transformer, at timestep 1000 sigma, predicts noise - x0.

What the UNet's training taught (DEVELOPERS.md) applies here too:
- padding that does not carry the scene: each caption's end-of-text and padding embeddings come from another
  caption with as many tokens naming the same background (train.donor_captions / shuffle_padding), and its
  pooled embedding (SD3's adaLN input: global, so a one-word change would move everything) from that donor too;
- word localisation: the image-query x text-key block of each joint attention plays the cross-attention map's
  role; train.localisation_loss asks each object word's share of attention to lie on its object.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede torch (see train.py)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,  # noqa: E402
                       StableDiffusion3Pipeline)
from transformers import CLIPTextModelWithProjection  # noqa: E402

from lab.arch import clip_tokenizer  # noqa: E402
from p2p_cli.models import shapes_mmdit_parts  # noqa: E402
from . import edit_pairs  # noqa: E402
from .train import (WORLDS, Tokens, attention_targets, donor_captions, ema_update,  # noqa: E402
                    localisation_loss, log, optimiser_step, save_whole, scenes_batch, shuffle_padding)
from .world import WIDE_COUNTS, sample_wide_scene  # noqa: E402

T5_ROWS = 256  # StableDiffusion3Pipeline's default max_sequence_length: zero rows appended without a T5


@dataclass
class Config:
    """Sizes and optimiser settings; the defaults fit <= 40 MB with the two text encoders and train on 1 core."""

    layers: int = 4  # joint blocks (the last is context_pre_only, as in SD3)
    heads: int = 4
    head_dim: int = 32  # model width heads * head_dim
    patch: int = 2  # 16x16 latent -> 8x8 image tokens
    shift: float = 1.0  # the scheduler's shift (SD3 uses 3.0 at 1024 px; a 64-token image needs little)
    batch: int = 32
    lr: float = 5e-4
    warmup: int = 200
    ema: float = 0.999
    caption_dropout: float = 0.1
    attn_loss: float = 0.05  # weight of the word-localisation loss
    pad_shuffle: bool = True
    anneal: bool = False  # the learning rate falls along a cosine to 0 over the run (its minutes or max steps)
    edit_sources: int = 0  # per step, captions the averaged model draws and turns into edit pairs (edit_pairs.py)
    edit_steps: int = 12  # Euler steps of those drawings
    edit_noise: float = 1.0  # the share of the noise levels, from the noisiest, that the pair rows train on
    edit_guidance: float = 7.5  # their classifier-free guidance (the evaluation's)


def build_transformer(cfg: Config, seed: int, text_dim: int, pooled_dim: int) -> SD3Transformer2DModel:
    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=16, patch_size=cfg.patch, in_channels=4, out_channels=4, num_layers=cfg.layers,
        attention_head_dim=cfg.head_dim, num_attention_heads=cfg.heads, joint_attention_dim=text_dim,
        caption_projection_dim=cfg.heads * cfg.head_dim, pooled_projection_dim=pooled_dim,
        pos_embed_max_size=16 // cfg.patch * 2, qk_norm="rms_norm",
    )  # fmt: skip


def grow(transformer: SD3Transformer2DModel, extra: int) -> SD3Transformer2DModel:
    """The same transformer with `extra` more joint blocks, drawing exactly what it drew: each new block, put
    before the last (context-only) block, is a copy of the block before it with its adaLN gates at zero (DiT's
    adaLN-Zero start), so it adds nothing to either stream until training opens its gates. A run can so add
    depth to a trained model instead of training a deeper one from scratch."""
    cfg = dict(transformer.config)
    n = cfg["num_layers"]
    cfg["num_layers"] = n + extra
    bigger = SD3Transformer2DModel.from_config(cfg)  # its random start is all overwritten below (strict load)
    old = transformer.state_dict()
    new = {}
    for key, value in old.items():
        if not key.startswith("transformer_blocks."):
            new[key] = value
            continue
        _, index, rest = key.split(".", 2)
        i = int(index)
        if i == n - 1:  # the context-only last block stays last
            new[f"transformer_blocks.{n - 1 + extra}.{rest}"] = value
            continue
        new[key] = value
        if i == n - 2:
            for j in range(n - 1, n - 1 + extra):
                new[f"transformer_blocks.{j}.{rest}"] = _gates_shut(rest, value)
    bigger.load_state_dict(new)
    return bigger


def _gates_shut(name: str, value: torch.Tensor) -> torch.Tensor:
    """A copied block's tensor, with the rows of its adaLN linears that make the residual gates zeroed
    (AdaLayerNormZero's chunks: shift, scale, gate of the attention, then shift, scale, gate of the MLP)."""
    value = value.clone()
    if name.startswith(("norm1.linear.", "norm1_context.linear.")):
        d = value.shape[0] // 6
        value[2 * d:3 * d] = 0
        value[5 * d:6 * d] = 0
    return value


def bundled_parts(folder: Path) -> tuple[AutoencoderKL, CLIPTextModelWithProjection]:
    """The bundled model's VAE (shift_factor 0, as SD3's pipeline needs one) and text encoder with a projection."""
    parts = shapes_mmdit_parts(folder)
    return parts["vae"], parts["text_encoder"]


class JointRecorder:
    """Explicit joint attention ([image; text] queries and keys, one softmax) for training.

    Keeps each block's head-averaged image-query x CLIP-token probabilities (B, Q, 77) with gradients, and adds
    log(T5_ROWS) to the logit of the single zero-T5 row appended to the text (see the module docstring).
    """

    def __init__(self, clip_tokens: int = 77, t5_rows: int = T5_ROWS, record: bool = True):
        self.maps: list[torch.Tensor] = []
        self.clip_tokens, self.log_rows, self.record = clip_tokens, math.log(t5_rows), record

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):
        b, n_img, _ = hidden_states.shape
        heads = attn.heads

        def split(x):
            return x.view(b, -1, heads, x.shape[-1] // heads).transpose(1, 2)

        q, k, v = split(attn.to_q(hidden_states)), split(attn.to_k(hidden_states)), split(attn.to_v(hidden_states))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        cq, ck = split(attn.add_q_proj(encoder_hidden_states)), split(attn.add_k_proj(encoder_hidden_states))
        cv = split(attn.add_v_proj(encoder_hidden_states))
        if attn.norm_added_q is not None:
            cq, ck = attn.norm_added_q(cq), attn.norm_added_k(ck)
        q, k, v = torch.cat([q, cq], 2), torch.cat([k, ck], 2), torch.cat([v, cv], 2)
        logits = q @ k.transpose(-1, -2) * attn.scale  # (B, h, N, N)
        bias = torch.zeros(k.shape[2], dtype=logits.dtype)
        bias[n_img + self.clip_tokens :] = self.log_rows
        probs = torch.softmax(logits + bias, dim=-1)
        if self.record:
            self.maps.append(probs[:, :, :n_img, n_img : n_img + self.clip_tokens].mean(1))
        out = (probs @ v).transpose(1, 2).reshape(b, -1, heads * q.shape[-1])
        img, ctx = out[:, :n_img], out[:, n_img:]
        if not attn.context_pre_only:
            ctx = attn.to_add_out(ctx)
        img = attn.to_out[1](attn.to_out[0](img))
        return img, ctx


def encode(text_encoder, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 77) ids -> (the CLIP part of SD3's text sequence (B, 77, 2D), pooled (B, 2P)) as the pipeline makes
    them from two text encoders; here both are the same network, so its outputs are repeated."""
    out = text_encoder(ids, output_hidden_states=True)
    h, pooled = out.hidden_states[-2], out.text_embeds
    return torch.cat([h, h], -1), torch.cat([pooled, pooled], -1)


def save(out: Path, transformer, vae, text_encoder, tokenizer, shift: float) -> None:
    """save_pretrained a StableDiffusion3Pipeline (safetensors) into out, replacing it whole."""
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift),
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder,
        tokenizer_2=tokenizer, text_encoder_3=None, tokenizer_3=None,
    )  # fmt: skip
    save_whole(pipe, out)


def sigmas_for(n: int, shift: float, generator=None, top: float = 1.0) -> torch.Tensor:
    """n training sigmas: logit-normal (mean 0, std 1) draws moved by the shift, as SD3's training does; top < 1
    draws from that distribution's noisiest share `top` only (its quantiles 1 - top to 1)."""
    if top >= 1.0:
        n01 = torch.randn(n, generator=generator)
    else:
        q = 1.0 - top * torch.rand(n, generator=generator)
        n01 = math.sqrt(2.0) * torch.erfinv((2.0 * q - 1.0).clamp(max=1.0 - 1e-6))
    u = torch.sigmoid(n01)
    return shift * u / (1 + (shift - 1) * u)


class SelfDrawnPairs:
    """Each call: cfg.edit_sources captions of the training world drawn by `model` (the averaged weights) from
    fresh noise, then turned into (source, edit) pair rows by edit_pairs.pairs_from."""

    def __init__(self, model, vae, text_encoder, tokens, sampler, cfg: Config):
        self.model, self.vae, self.text_encoder, self.tokens, self.sampler, self.cfg = (
            model, vae, text_encoder, tokens, sampler, cfg)
        model.set_attn_processor(JointRecorder(record=False))  # the training forward's attention, no maps kept

    @torch.no_grad()
    def draw(self, captions: list[str], noise: torch.Tensor) -> np.ndarray:
        """The captions' pictures from noise, (B, 64, 64, 3) uint8: Euler with classifier-free guidance, the text
        made as the pipeline makes it (no padding donors; the empty caption unconditional)."""
        cond, pooled = encode(self.text_encoder, self.tokens(captions + [""]))
        text = torch.cat([cond, cond.new_zeros(cond.shape[0], 1, cond.shape[2])], 1)
        b = len(captions)
        text = torch.cat([text[-1:].expand(b, -1, -1), text[:-1]])
        pooled = torch.cat([pooled[-1:].expand(b, -1), pooled[:-1]])
        g = self.cfg.edit_guidance

        def velocity(x, sigma):
            v = self.model(hidden_states=torch.cat([x, x]), encoder_hidden_states=text, pooled_projections=pooled,
                           timestep=torch.full((2 * b,), sigma * 1000.0)).sample
            uncond, c = v.chunk(2)
            return uncond + g * (c - uncond)

        z = edit_pairs.euler_sample(velocity, noise, self.cfg.edit_steps)
        from .evaluate import to_uint8

        return to_uint8(self.vae.decode(z / self.vae.config.scaling_factor + self.vae.config.shift_factor).sample
                        / 2 + 0.5)

    def __call__(self, rng: np.random.Generator):
        return edit_pairs.drawn_pairs(rng, self.draw, self.cfg.edit_sources, self.sampler)


def train(transformer, vae, text_encoder, cfg: Config, rng: np.random.Generator, minutes: float, out: Path,
          save_every: float, sampler=sample_wide_scene, max_steps: int | None = None, keep: bool = False) -> int:
    """Flow matching with the localisation loss and padding/pooled donors; saves EMA weights into out (keep: also
    a copy of each checkpoint beside it, OUT-step<N>); returns the number of steps."""
    tokenizer = clip_tokenizer()
    tokens, eos = Tokens(tokenizer), tokenizer.eos_token_id
    params = list(transformer.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    ema = copy.deepcopy(transformer).eval()
    transformer.train()
    recorder = JointRecorder()
    transformer.set_attn_processor(recorder)
    pairs = SelfDrawnPairs(ema, vae, text_encoder, tokens, sampler, cfg) if cfg.edit_sources else None
    kept_pairs = drawn = 0
    t0, last_save, step, avg, avg_aux = time.time(), time.time(), 0, None, None
    while True:
        done = time.time() - t0 >= minutes * 60 or (max_steps is not None and step >= max_steps)
        if done or time.time() - last_save >= save_every * 60:
            save(out, ema, vae, text_encoder, tokenizer, cfg.shift)
            if keep:
                shutil.copytree(out, out.with_name(f"{out.name}-step{step}"), dirs_exist_ok=True)
            last_save = time.time()
            log(f"saved step {step} to {out}")
            if done:
                return step
        x, caps, scenes, with_bg = scenes_batch(rng, cfg.batch, sampler)
        kept = [rng.random() >= cfg.caption_dropout for _ in caps]
        caps = [c if k else "" for c, k in zip(caps, kept)]
        noise = torch.randn(x.shape[0], 4, 16, 16)
        sigma = sigmas_for(x.shape[0], cfg.shift)
        if pairs is not None:
            px, pcaps, pscenes, pbg, pnoise, n_pairs = pairs(rng)
            drawn, kept_pairs = drawn + cfg.edit_sources, kept_pairs + n_pairs
            if n_pairs:  # the pair rows: captioned, their drawing's noise, one sigma per pair
                x, caps, scenes = torch.cat([x, px]), caps + pcaps, scenes + pscenes
                with_bg, kept = with_bg + pbg, kept + [True] * len(pcaps)
                noise = torch.cat([noise, pnoise])
                sigma = torch.cat([sigma, sigmas_for(n_pairs, cfg.shift, top=cfg.edit_noise).repeat_interleave(2)])
        targets, select = attention_targets(scenes, with_bg, kept)
        ids = tokens(caps)
        with torch.no_grad():
            z = (vae.encode(x).latent_dist.mean - vae.config.shift_factor) * vae.config.scaling_factor
            cond, pooled = encode(text_encoder, ids)
            if cfg.pad_shuffle:
                named = [sc.background if b else None for sc, b in zip(scenes, with_bg)]
                rows, donor_caps = donor_captions(rng, ids, kept, tokens, eos, named, sampler=sampler)
                if rows:
                    d_cond, d_pooled = encode(text_encoder, tokens(donor_caps))
                    cond = shuffle_padding(cond, d_cond, rows, ids, eos)
                    pooled = pooled.clone()
                    pooled[rows] = d_pooled
        text = torch.cat([cond, cond.new_zeros(cond.shape[0], 1, cond.shape[2])], 1)  # + the zero-T5 row
        s = sigma.view(-1, 1, 1, 1)
        noisy = (1 - s) * z + s * noise
        recorder.maps.clear()
        pred = transformer(hidden_states=noisy, encoder_hidden_states=text, pooled_projections=pooled,
                           timestep=sigma * 1000).sample
        flow = F.mse_loss(pred, noise - z)
        aux = localisation_loss(recorder.maps, targets, select)
        lr = cfg.lr * annealed(time.time() - t0, minutes * 60, step, max_steps) if cfg.anneal else cfg.lr
        optimiser_step(opt, flow + cfg.attn_loss * aux, params, lr, step, cfg.warmup)
        step += 1
        ema_update([(ema, transformer)], step, cfg.ema)
        avg = flow.item() if avg is None else 0.98 * avg + 0.02 * flow.item()
        avg_aux = aux.item() if avg_aux is None else 0.98 * avg_aux + 0.02 * aux.item()
        if step % 20 == 0:
            el = time.time() - t0
            kept_share = f" pairs kept {kept_pairs}/{drawn}" if pairs is not None else ""
            log(f"step {step} flow {avg:.4f} localisation {avg_aux:.3f} {step * cfg.batch / el:.1f} img/s"
                f" {el / 60:.1f} min{kept_share}")


def annealed(seconds: float, budget: float, step: int, max_steps: int | None) -> float:
    """The share of the learning rate left: a cosine from 1 to 0 over the run, by whichever of its limits (the
    minutes, the steps) is nearer; a run on constant learning rate stops at a noisy point, the anneal settles it."""
    done = seconds / budget
    if max_steps is not None:
        done = max(done, step / max_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))


def main(argv: list[str] | None = None) -> None:
    from p2p_cli.models import bundled_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--save-every", type=float, default=10.0, help="minutes between checkpoints")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--world", choices=sorted(WORLDS), default="wide")
    ap.add_argument("--resume", type=Path, default=None, help="continue from a folder this command wrote")
    ap.add_argument("--parts", type=Path, default=None,
                    help="where the VAE and text encoder come from (default: the bundled UNet model)")
    ap.add_argument("--batch", type=int, default=Config.batch)
    ap.add_argument("--lr", type=float, default=Config.lr)
    ap.add_argument("--layers", type=int, default=Config.layers)
    ap.add_argument("--attn-loss", type=float, default=Config.attn_loss)
    ap.add_argument("--no-pad-shuffle", action="store_true")
    ap.add_argument("--anneal", action="store_true", help="learning rate along a cosine to 0 over the run")
    ap.add_argument("--keep", action="store_true", help="also keep each checkpoint as OUT-step<N>")
    edit_pairs.add_arguments(ap, Config, "Euler", "noise levels")
    ap.add_argument("--grow", type=int, default=0,
                    help="with --resume: add this many joint blocks, each starting as nothing (adaLN gates at 0)")
    ap.add_argument("--counts", default=None, metavar="P1,P2,P3",
                    help=f"wide world: the probability of 1, 2, 3 objects (default {','.join(map(str, WIDE_COUNTS))})")
    args = ap.parse_args(argv)
    pair_cfg = edit_pairs.settings(ap, args)
    if args.grow and args.resume is None:
        ap.error("--grow adds blocks to a trained model: give --resume (a model from scratch takes --layers)")
    sampler = WORLDS[args.world]
    if args.counts is not None:
        if args.world != "wide":
            ap.error("--counts weights the wide world's scenes: give --world wide")
        try:
            counts = tuple(float(c) for c in args.counts.split(","))
        except ValueError:
            ap.error(f"--counts {args.counts!r}: write three probabilities, e.g. 0.2,0.4,0.4")
        if len(counts) != len(WIDE_COUNTS) or min(counts) < 0 or abs(sum(counts) - 1) > 1e-6:
            ap.error(f"--counts {args.counts!r}: three probabilities (1, 2, 3 objects) that sum to 1")
        sampler = functools.partial(sample_wide_scene, counts=counts)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    cfg = Config(batch=args.batch, lr=args.lr, layers=args.layers, attn_loss=args.attn_loss,
                 pad_shuffle=not args.no_pad_shuffle, anneal=args.anneal, **pair_cfg)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    if args.resume is not None:
        vae = AutoencoderKL.from_pretrained(args.resume / "vae").requires_grad_(False).eval()
        text = CLIPTextModelWithProjection.from_pretrained(args.resume / "text_encoder").requires_grad_(False).eval()
        transformer = SD3Transformer2DModel.from_pretrained(args.resume / "transformer")
        cfg.shift = FlowMatchEulerDiscreteScheduler.from_pretrained(args.resume / "scheduler").config.shift
        log(f"resumed from {args.resume}")
        if args.grow:
            transformer = grow(transformer, args.grow)
            log(f"grown by {args.grow} joint blocks to {transformer.config.num_layers}")
    else:
        vae, text = bundled_parts(args.parts or bundled_weights())
        transformer = build_transformer(cfg, args.seed, 2 * text.config.hidden_size, 2 * text.config.projection_dim)
    n = sum(p.numel() for p in transformer.parameters())
    drawn = args.counts or ",".join(map(str, WIDE_COUNTS))
    log(f"transformer params {n:,}; world {args.world} (object counts {drawn}); {cfg}")
    steps = train(transformer, vae, text, cfg, rng, args.minutes, args.out, args.save_every, sampler,
                  args.max_steps, args.keep)
    log(f"finished: {steps} steps")


if __name__ == "__main__":
    main()
