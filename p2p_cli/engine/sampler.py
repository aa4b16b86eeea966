"""Deterministic samplers over a narrow "predict" callable, and their inversion: DDIM (Song et al., 2021; eta = 0)
for SD and SDXL, and flow matching's Euler ODE for SD3 and FLUX; and their variants that add per-step maps
(edit-friendly DDPM inversion, flowedit inversion). Both schedules have step(out, x, i) and
unstep(out, x, i) (inversion), so the loops and the inversion code serve both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# predict(x, t, i) -> the model output at timestep t (noise, or v for v-prediction models) for step i
Predict = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
# callback(i, x) -> x, after step i (local blend lives there); may return x unchanged
Callback = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Schedule:
    """The DDIM timesteps and their cumulative alphas, as diffusers' DDIMScheduler sets them."""

    timesteps: torch.Tensor  # (T,) long, descending
    alpha: torch.Tensor  # (T,) alpha_cumprod at each timestep
    alpha_prev: torch.Tensor  # (T,) alpha_cumprod at the next (less noisy) timestep
    prediction_type: str  # "epsilon" | "v_prediction" | "sample"

    @classmethod
    def from_scheduler(cls, scheduler, steps: int, device: torch.device | str = "cpu") -> Schedule:
        """Timesteps and alphas for `steps` steps from a diffusers scheduler's config."""
        scheduler.set_timesteps(steps)
        raw = scheduler.timesteps.long()
        cum = scheduler.alphas_cumprod.double()
        final = torch.tensor(1.0, dtype=torch.float64) if scheduler.config.set_alpha_to_one else cum[0]
        prev_ts = raw - scheduler.config.num_train_timesteps // steps
        # "leading" spacing adds steps_offset: at steps == num_train_timesteps the first timestep is one past the
        # last alpha (1000 of 0..999). Clamped, that first step goes from the noisiest level to itself (a no-op).
        ts = raw.clamp(max=len(cum) - 1)
        prev = torch.where(prev_ts >= 0, cum[prev_ts.clamp_min(0)], final)
        return cls(ts.to(device), cum[ts].float().to(device), prev.float().to(device),
                   scheduler.config.prediction_type)

    def step(self, out: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        """Sampling step i: from the noise level of timestep i to the next."""
        return ddim_step(out, x, self.alpha[i], self.alpha_prev[i], self.prediction_type)

    def unstep(self, out: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        """Step i backwards (inversion): from the level step i ends at to the one it starts from."""
        return ddim_step(out, x, self.alpha_prev[i], self.alpha[i], self.prediction_type)


def split_output(out: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, prediction_type: str):
    """(predicted x0, predicted noise) from a model output at noise level alpha (0-dim)."""
    a, s = alpha.sqrt(), (1 - alpha).sqrt()
    if prediction_type == "epsilon":
        return (x - s * out) / a, out
    if prediction_type == "v_prediction":
        return a * x - s * out, a * out + s * x
    if prediction_type == "sample":
        return out, (x - a * out) / s
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def ddim_step(out: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, alpha_next: torch.Tensor, prediction_type: str):
    """One deterministic DDIM move of x from noise level alpha to alpha_next (either direction)."""
    x0, eps = split_output(out, x, alpha, prediction_type)
    return alpha_next.sqrt() * x0 + (1 - alpha_next).sqrt() * eps


@dataclass(frozen=True)
class NoisySchedule:
    """DDPM steps (eta = 1) with given noise maps, for edit-friendly DDPM inversion (Huberman-Spiegelglas et al.,
    CVPR 2024): x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - s^2) eps + s z_i, with
    s^2 = (1 - a_prev) / (1 - a) (1 - a / a_prev) and z_i the same map (1, C, h, w) for every row."""

    base: Schedule
    noise: torch.Tensor  # (T, C, h, w)

    @property
    def timesteps(self) -> torch.Tensor:
        return self.base.timesteps

    def sigma(self, i: int) -> torch.Tensor:
        a, a_prev = self.base.alpha[i], self.base.alpha_prev[i]
        return ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp_min(0).sqrt()

    def mean(self, out: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        """The step's deterministic part (everything but s z_i)."""
        a_prev, s = self.base.alpha_prev[i], self.sigma(i)
        x0, eps = split_output(out, x, self.base.alpha[i], self.base.prediction_type)
        return a_prev.sqrt() * x0 + (1 - a_prev - s**2).clamp_min(0).sqrt() * eps

    def step(self, out: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        return self.mean(out, x, i) + self.sigma(i) * self.noise[i]


def sample_ddim(predict: Predict, x: torch.Tensor, schedule: Schedule | NoisySchedule,
                callback: Callback | None = None) -> torch.Tensor:
    """Denoise x (B, C, h, w) from the first timestep to the last; x stays float32."""
    x = x.float()
    for i, t in enumerate(schedule.timesteps):
        out = predict(x, t, i).float()
        x = schedule.step(out, x, i)
        if callback is not None:
            x = callback(i, x)
    return x


@dataclass(frozen=True)
class FlowSchedule:
    """Flow matching's sigmas (noise level 1 -> 0) and the timesteps the denoiser is given, as diffusers'
    FlowMatchEulerDiscreteScheduler sets them for a pipeline (the family says with which shift / sigmas)."""

    timesteps: torch.Tensor  # (T,) float, sigma * num_train_timesteps
    sigmas: torch.Tensor  # (T + 1,) float32, the last 0

    @classmethod
    def from_scheduler(cls, scheduler, steps: int, device: torch.device | str = "cpu", **kwargs) -> FlowSchedule:
        scheduler.set_timesteps(steps, device="cpu", **kwargs)
        return cls(scheduler.timesteps.float().to(device), scheduler.sigmas.float().to(device))

    def step(self, out: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        return euler_step(out, x, self.sigmas[i], self.sigmas[i + 1])

    def unstep(self, out: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        """Step i backwards: the Euler move from sigma_{i+1} up to sigma_i with the velocity at the lower level
        (the usual first-order inversion of a flow ODE)."""
        return euler_step(out, x, self.sigmas[i + 1], self.sigmas[i])


def euler_step(v: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One Euler move of the flow ODE dx/dsigma = v from sigma to sigma_next (either direction)."""
    return x + (sigma_next - sigma) * v


@dataclass(frozen=True)
class ResidualFlowSchedule:
    """Euler steps that also add a given residual map r_i (the same (1, C, h, w) for every row) after step i:
    flowedit inversion's maps (inversion.flowedit_inversion), which make the source row retrace the picture's
    noised copies exactly, so each target moves from them only by its velocity difference (FlowEdit)."""

    base: FlowSchedule
    noise: torch.Tensor  # (T, C, h, w)

    @property
    def timesteps(self) -> torch.Tensor:
        return self.base.timesteps

    @property
    def sigmas(self) -> torch.Tensor:
        return self.base.sigmas

    def step(self, out: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        return self.base.step(out, x, i) + self.noise[i]


def sample_flow(predict: Predict, x: torch.Tensor, schedule: FlowSchedule | ResidualFlowSchedule,
                callback: Callback | None = None) -> torch.Tensor:
    """Integrate x (B, C, h, w) from sigma 1 to 0 with Euler steps; x stays float32 (as diffusers' scheduler)."""
    x = x.float()
    for i, t in enumerate(schedule.timesteps):
        v = predict(x, t, i).float()
        x = schedule.step(v, x, i)
        if callback is not None:
            x = callback(i, x)
    return x
