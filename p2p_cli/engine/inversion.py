"""Real images: direct inversion (Ju et al., "PnP Inversion", ICLR 2024), null-text inversion (Mokady et al. 2023),
negative-prompt inversion (Miyake et al.) and plain DDIM inversion.

All four start the same way: encode the picture (VAE mean x scaling factor) and run DDIM backwards with the
source prompt at guidance 1, keeping the trajectory z*_0 .. z*_T. They differ in how guided sampling then
stays on that trajectory:
- direct: the source row is put back on the trajectory after every step (the paper's "add the difference"
  z*_{t-1} - x_src to the source branch, which sets it to z*_{t-1}), so the source reconstructs the picture's
  VAE encoding exactly and the targets edit from it; the unconditional embedding is the negative prompt's. No
  optimisation, no extra UNet call: the difference is applied in the edit's own loop (the paper computes it
  in a separate guided pass first; the source row's guided step from z*_t is the same in both, since the
  control never changes the source row);
- ddim: the negative prompt's embedding (as for generated sources); guided sampling drifts from the trajectory;
- null-text: optimised per step so that the guided step from the current latent lands on z*_{t-1};
- negative-prompt: the source prompt's own embedding, so guidance cancels on the source row (no optimisation);
- ddpm: edit-friendly DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024): each step's latent is the picture
  noised independently (x_i = sqrt(a_i) z0 + sqrt(1 - a_i) e_i), and a noise map per step is solved so that the
  DDPM step (eta = 1) from x_i with the guided prediction lands on x_{i+1}; sampling adds the same maps to every
  row, so the source reconstructs exactly and the targets edit with the picture's noise. It has no DDIM
  trajectory, and needs a DDPM sampler: not for SD3 / FLUX.
- flowedit: the same idea on a flow ODE (SD3, FLUX): each step starts from the picture noised independently
  (x_i = (1 - s_i) z0 + s_i e_i), and a residual map per step is solved so that the guided Euler step from x_i
  lands on x_{i+1}; sampling adds the same maps to every row. A target row then moves from the source's noised
  copies only by the difference of its velocity and the source's, which is FlowEdit (Kulikov et al., 2024,
  Algorithm 1) with n_avg = 1 over every step (n_max = T, n_min = 0), here inside the one batched loop so that
  attention control applies on top. Flow samplers only (its DDPM counterpart is ddpm).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from p2p_cli.family_defaults import inversion_problem
from p2p_cli.models import Model
from p2p_cli.families import Conditioning, Geometry
from p2p_cli.placement import vae_tiling
from p2p_cli.engine.pipeline import decode_latents, encode_negative, encode_prompts, guided_predict, sample, schedule_for
from p2p_cli.engine.sampler import FlowSchedule, NoisySchedule, Schedule

METHODS = ("direct", "null-text", "negative-prompt", "ddim", "ddpm", "flowedit")
NOISE_MAPS = ("ddpm", "flowedit")  # the methods whose inversion carries per-step maps (Inversion.noise)
DDPM_SEED = 0  # the noise of ddpm and flowedit inversion is drawn from this seed (the same inversion every run)
# progress(done, total) after each inversion step (null-text: T backward steps, then T optimised steps)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class NullTextSettings:
    """The reference optimiser settings (algorithm.md): Adam, lr 1e-2 x (1 - i/100), up to 10 inner steps."""

    inner_steps: int = 10
    lr: float = 1e-2  # at step i: lr x (1 - i / max(100, 2T)), the reference's decay for T <= 50
    early_stop: float = 1e-5  # stop the inner loop once the loss is below early_stop + i x early_stop_slope
    early_stop_slope: float = 2e-5


@dataclass
class Inversion:
    """What editing a real picture needs: the initial latent and the unconditional embedding of every step."""

    latent: torch.Tensor  # (1, C, h, w) z_T, float32 on the CPU
    uncond: torch.Tensor  # (T, L, D) unconditional embedding at each sampling step, float32 on the CPU
    method: str
    seconds: float  # the inversion's own time (encode + DDIM backwards + optimisation)
    settings: dict = field(default_factory=dict)  # prompt, negative_prompt, steps, guidance, method settings, ...
    vae_psnr: float | None = None  # PSNR of encode-then-decode against the picture: the ceiling of any method
    # the unconditional rows' extra conditioning, one row each (SDXL: pooled embedding, ids); {} for SD
    uncond_added: dict[str, torch.Tensor] = field(default_factory=dict)
    # direct: the DDIM trajectory (T + 1, C, h, w), [i] the latent sampling step i starts from, [T] the picture's
    trajectory: torch.Tensor | None = None
    noise: torch.Tensor | None = None  # ddpm, flowedit: the map (T, C, h, w) each sampling step adds


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0, 1], both rounded to 8 bits as PNG files hold them
    (inf for identical pictures)."""
    qa, qb = (x.detach().float().cpu().clamp(0, 1).mul(255).round() / 255 for x in (a, b))
    mse = float(((qa - qb) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def encode_image(model: Model, images: torch.Tensor, vae: str | None = None) -> torch.Tensor:
    """Latents (N, C, h, w), float32, of images (N, 3, H, W) in [0, 1]: the VAE posterior mean, scaled; tiled
    (diffusers' tiled encoder) where the recipe's `vae:` says so at this size (loading.tile_side)."""
    with torch.no_grad(), vae_tiling(model.vae, vae, tuple(images.shape[-2:]), images.shape[0]):
        return model.family.to_latent(model, images.to(model.device, model.vae_dtype) * 2 - 1)


def ddim_inversion(model: Model, z0: torch.Tensor, cond: Conditioning, schedule: Schedule | FlowSchedule,
                   progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """The trajectory (T + 1, C, h, w): [i] is the latent sampling step i starts from, [T] is z0 (guidance 1).

    Each backward step predicts at the timestep of the step it inverts, from the less noisy latent (the
    usual approximation, as the null-text reference code does); for flow models the same holds for the Euler
    ODE (the velocity at the lower noise level).
    """
    x = z0.float()
    trajectory = [x]
    with torch.no_grad():
        for n, i in enumerate(reversed(range(len(schedule.timesteps)))):
            out = model.family.denoise(model, x, schedule.timesteps[i], cond)
            x = schedule.unstep(out, x, i)
            trajectory.append(x)
            if progress is not None:
                progress(n + 1)
    return torch.cat(trajectory[::-1])  # (T + 1, C, h, w)


def ddpm_inversion(model: Model, z0: torch.Tensor, cond: Conditioning, negative: Conditioning, schedule: Schedule,
                   guidance: float, progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Edit-friendly DDPM inversion: the latents x_0 .. x_T (T + 1, C, h, w) ([i] where step i starts, [T] = z0)
    and the noise maps (T, C, h, w) that make DDPM steps with the guided prediction (the negative prompt as the
    unconditional rows) go through them exactly. The x_i are z0 noised independently, from DDPM_SEED."""
    noises = picture_noise(z0, len(schedule.timesteps))
    alpha = schedule.alpha.to(z0.device)[:, None, None, None]
    xs = torch.cat([alpha.sqrt() * z0 + (1 - alpha).sqrt() * noises, z0.float()])  # (T + 1, C, h, w)
    ddpm = NoisySchedule(schedule, torch.zeros_like(noises))

    def noise_map(i: int, out: torch.Tensor, x: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        mean, s = ddpm.mean(out, x, i), ddpm.sigma(i)
        return (x_next - mean) / s if s > 0 else torch.zeros_like(mean)

    return xs, step_maps(model, xs, cond, negative, schedule, guidance, noise_map, progress)


def flowedit_inversion(model: Model, z0: torch.Tensor, cond: Conditioning, negative: Conditioning,
                       schedule: FlowSchedule, guidance: float, progress: Callable[[int], None] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """FlowEdit's noise as an inversion: the latents x_0 .. x_T (T + 1, C, h, w) ([i] where step i starts at
    sigma_i, [T] = z0), z0 noised independently at each level (from DDPM_SEED), and the residuals (T, C, h, w)
    that make guided Euler steps (the negative prompt as the unconditional rows) go through them exactly."""
    steps = len(schedule.timesteps)
    sigma = schedule.sigmas[:steps].to(z0.device)[:, None, None, None]
    xs = torch.cat([(1 - sigma) * z0 + sigma * picture_noise(z0, steps), z0.float()])  # (T + 1, C, h, w)

    def residual(i: int, out: torch.Tensor, x: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        return x_next - schedule.step(out, x, i)

    return xs, step_maps(model, xs, cond, negative, schedule, guidance, residual, progress)


def picture_noise(z0: torch.Tensor, steps: int) -> torch.Tensor:
    """The independent noise (T, C, h, w) ddpm and flowedit inversion add to the picture at each step, from
    DDPM_SEED on the CPU (the same inversion every run, on any device)."""
    gen = torch.Generator("cpu").manual_seed(DDPM_SEED)
    return torch.randn((steps, *z0.shape[1:]), generator=gen).to(z0.device)


def step_maps(model: Model, xs: torch.Tensor, cond: Conditioning, negative: Conditioning,
              schedule: Schedule | FlowSchedule, guidance: float,
              solve: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
              progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """The maps (T, C, h, w) of ddpm and flowedit inversion: at each step i, solve(i, guided prediction at xs[i],
    xs[i], xs[i + 1]), the guided prediction as an edit's source row makes it (the negative prompt as the
    unconditional rows, where the model runs them)."""
    guided = guidance > 1.0 and model.family.unconditional(model)
    both = Conditioning.cat([negative, cond]) if guided else cond
    predict = guided_predict(model, lambda i: both, guidance if guided else 1.0)
    maps = []
    with torch.no_grad():
        for i, t in enumerate(schedule.timesteps):
            x = xs[i : i + 1]
            maps.append(solve(i, predict(x, t, i).float(), x, xs[i + 1 : i + 2]))
            if progress is not None:
                progress(i + 1)
    return torch.cat(maps)


@contextmanager
def frozen(*nets: torch.nn.Module) -> Iterator[None]:
    """No gradients for the networks' parameters inside the block (restored after)."""
    params = [p for net in nets for p in net.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def null_text_optimisation(model: Model, trajectory: torch.Tensor, cond: Conditioning, uncond: Conditioning,
                           schedule: Schedule | FlowSchedule, guidance: float, settings: NullTextSettings = NullTextSettings(),
                           progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Per-step unconditional embeddings (T, L, D), float32 (Mokady et al. 2023, sec. 3.2, Algorithm 1).

    At step i the embedding (warm-started from step i - 1) is optimised so that the guided DDIM step from
    the current latent lands on trajectory[i + 1]; then the latent takes that guided step, so sampling with
    the embeddings retraces exactly this path. The only host sync per inner step is the early-stop test, made
    before the Adam step (the reference code steps once more first), so a good embedding is kept as it is.
    """
    T = len(schedule.timesteps)
    x = trajectory[:1].float()  # (1, C, h, w)
    emb = uncond.hidden.detach().float().clone()  # (1, L, D), optimised in float32 whatever the model's dtype
    out_embs = []
    decay = max(100, 2 * T)
    with frozen(model.denoiser), torch.enable_grad():
        for i in range(T):
            t = schedule.timesteps[i]
            target = trajectory[i + 1 : i + 2].float()
            with torch.no_grad():
                out_cond = model.family.denoise(model, x, t, cond)

            def guided_step(emb: torch.Tensor) -> torch.Tensor:  # from x, with emb as the unconditional half
                out_uncond = model.family.denoise(model, x, t, uncond.with_hidden(emb))
                pred = model.family.guide(out_uncond, out_cond, guidance)
                return schedule.step(pred, x, i)

            emb = emb.detach().clone().requires_grad_(True)  # a new leaf: Adam updates it in place
            opt = torch.optim.Adam([emb], lr=settings.lr * (1 - i / decay))
            threshold = settings.early_stop + i * settings.early_stop_slope
            x_next = None
            for _ in range(settings.inner_steps):
                step = guided_step(emb)
                loss = F.mse_loss(step, target)
                if loss.item() < threshold:  # early stop (the one host sync): keep this embedding and its step
                    x_next = step.detach()
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            emb = emb.detach()
            out_embs.append(emb)
            if x_next is None:  # the last Adam step changed the embedding: take the guided step with it
                with torch.no_grad():
                    x_next = guided_step(emb)
            x = x_next
            if progress is not None:
                progress(i + 1)
    return torch.cat(out_embs)  # (T, L, D)


def invert(model: Model, image: torch.Tensor, prompt: str, *, method: str = "null-text", steps: int = 50,
           guidance: float = 7.5, negative_prompt: str = "", null_text: NullTextSettings = NullTextSettings(),
           progress: Progress | None = None, geo: Geometry | None = None, vae: str | None = None) -> Inversion:
    """Invert a picture (3, H, W) in [0, 1] at the model's DDIM schedule for `steps` steps.

    geo: the size and crop ids the edit will use (SDXL); by default the picture's size. vae: the recipe's `vae:`
    (tiled encoding and decoding, pipeline.decode_latents).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    family = model.family
    if (problem := inversion_problem(method, family.sampler, family.unconditional(model), family.label)) is not None:
        raise ValueError(problem)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
    device = model.device
    tic = time.perf_counter()
    optimise = method == "null-text" and guidance > 1.0  # at guidance 1 the unconditional half is unused
    total = 2 * steps if optimise else steps
    report = (lambda base: (lambda n: progress(base + n, total))) if progress is not None else (lambda base: None)

    # frozen throughout: every UNet call sees the same parameter flags (one compiled graph fewer)
    with frozen(model.denoiser, model.vae, model.text_encoder):
        z0 = encode_image(model, image[None], vae)  # (1, C, h, w)
        geo = geo or Geometry(size=tuple(image.shape[-2:]))
        with torch.no_grad():
            cond = model.family.with_guidance(model, encode_prompts(model, [prompt], geo), guidance)
            negative = encode_negative(model, negative_prompt, 1, geo)  # (1, L, D) and the family's extra rows
        schedule = schedule_for(model, steps, tuple(z0.shape[-2:]), geo.shift)
        noise = None
        if method == "ddpm":
            trajectory, noise = ddpm_inversion(model, z0, cond, negative, schedule, guidance, report(0))
        elif method == "flowedit":
            trajectory, noise = flowedit_inversion(model, z0, cond, negative, schedule, guidance, report(0))
        else:
            trajectory = ddim_inversion(model, z0, cond, schedule, report(0))
        if optimise:
            uncond = null_text_optimisation(model, trajectory, cond, negative, schedule, guidance, null_text,
                                            report(steps))
        elif method == "negative-prompt":
            uncond = cond.hidden.float().expand(steps, -1, -1)
        else:
            uncond = negative.hidden.float().expand(steps, -1, -1)
    # the unconditional rows' extra conditioning: the prompt's where the prompt stands in for them
    added = (cond if method == "negative-prompt" else negative).added
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - tic

    with torch.no_grad():
        vae_psnr = psnr(decode_latents(model, z0, vae=vae)[0], image)
    settings = dict(method=method, prompt=prompt, negative_prompt=negative_prompt, steps=steps, guidance=guidance)
    if vae is not None:
        settings["vae"] = vae
    if geo.shift is not None:
        settings["shift"] = geo.shift
    if method == "null-text":
        settings["null_text"] = asdict(null_text)
    return Inversion(latent=trajectory[:1].cpu(), uncond=uncond.contiguous().cpu(), method=method, seconds=seconds,
                     settings=settings, vae_psnr=vae_psnr,
                     uncond_added={k: v.float().contiguous().cpu() for k, v in added.items()},
                     trajectory=trajectory.float().contiguous().cpu() if method == "direct" else None,
                     noise=None if noise is None else noise.float().contiguous().cpu())


def reconstruct_latent(model: Model, inversion: Inversion, prompt: str, guidance: float,
                       geo: Geometry | None = None) -> torch.Tensor:
    """The final latent (1, C, h, w) that guided sampling makes from an inversion with no edit (float32, CPU)."""
    steps = inversion.uncond.shape[0]
    if inversion.trajectory is not None:  # direct: the source row is held on the trajectory, which ends at z0
        return inversion.trajectory[-1:].float().cpu()
    geo = geo or Geometry(size=(inversion.latent.shape[-2] * model.vae_scale, inversion.latent.shape[-1] * model.vae_scale))
    with torch.inference_mode():
        cond = model.family.with_guidance(model, encode_prompts(model, [prompt], geo), guidance)
        uncond = inversion.uncond.to(model.device, model.dtype)[:, None]  # (T, 1, L, D)
        rows = Conditioning(uncond[0], {k: v.to(model.device, model.dtype) for k, v in inversion.uncond_added.items()})
        guided = guidance > 1.0 and model.family.unconditional(model)
        embeddings = ((lambda i: Conditioning.cat([rows.with_hidden(uncond[i]), cond])) if guided
                      else (lambda i: cond))
        predict = guided_predict(model, embeddings, guidance if guided else 1.0)
        shift = inversion.settings.get("shift")
        return sample(model, predict, inversion.latent.to(model.device), steps, tuple(inversion.latent.shape[-2:]),
                      shift=None if shift is None else float(shift), noise=inversion.noise).cpu()


def reconstruct(model: Model, inversion: Inversion, prompt: str, guidance: float,
                geo: Geometry | None = None) -> torch.Tensor:
    """The source picture (3, H, W) in [0, 1] that guided sampling makes from an inversion (no edit), decoded as
    the inversion's `vae:` says."""
    with torch.inference_mode():
        latent = reconstruct_latent(model, inversion, prompt, guidance, geo)
        return decode_latents(model, latent, vae=inversion.settings.get("vae"))[0]
