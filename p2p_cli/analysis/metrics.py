"""Edit metrics on (3, H, W) images in [0, 1]: how much of the source is kept (SSIM, PSNR, LPIPS, also outside a
mask) and how much of the edit happened (CLIP score, directional CLIP similarity), as the field reports them; and
PIE-Bench's seven measures as its evaluator computes them (`pie_*`, DinoStructure; docs/pie-bench.md)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F

CLIP_DEFAULT = "openai/clip-vit-large-patch14"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DINO_DEFAULT = "facebook/dino-vitb8"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MetricUnavailable(RuntimeError):
    """A metric whose model or package is not here; the message says why (shown once, the column left empty)."""


def _pair(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images as float64 (1, 3, H, W) and the keep mask as (1, 1, H, W)."""
    if a.shape != b.shape or a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"expected two (3, H, W) images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    keep = torch.ones(a.shape[-2:]) if keep is None else keep
    if keep.shape != a.shape[-2:]:
        raise ValueError(f"mask {tuple(keep.shape)} does not match the images {tuple(a.shape[-2:])}")
    return a.double()[None].cpu(), b.double()[None].cpu(), (keep.double().cpu() > 0.5).double()[None, None]


def gaussian_1d(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(size,) Gaussian weights summing to 1, computed in dtype."""
    x = torch.arange((1 - size) / 2, (1 + size) / 2, 1, dtype=dtype)
    g = torch.exp(-((x / sigma) ** 2) / 2)
    return g / g.sum()


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(size, size) Gaussian weights summing to 1 (Wang et al. 2004: 11x11, sigma 1.5), computed in dtype."""
    g = gaussian_1d(size, sigma, dtype)
    return g[:, None] * g[None, :]


def ssim_map(a: torch.Tensor, b: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel, per-channel SSIM (1, 3, H, W) of (1, 3, H, W) images in [0, 1]; borders reflected.

    The five local means (of a, b, a*a, b*b, a*b) come from one depthwise convolution. In float64 (p2p's own
    metric) the Gaussian is applied as two 1-D passes, 11 + 11 taps instead of 121: the same means to about
    1e-15, 13-15x faster on the CPU at 128-512 px (tests/analysis/test_metrics.py checks both against each
    other). Other dtypes take the 11x11 window in one pass, as torchmetrics does, so that PIE-Bench's float32 SSIM
    rounds as the benchmark's evaluator does (pie_ssim)."""
    if min(a.shape[-2:]) <= size // 2:
        raise ValueError(f"images of {tuple(a.shape[-2:])} are too small for an {size}x{size} SSIM window")
    c1, c2 = 0.01**2, 0.03**2  # (K * data range)^2 with range 1
    x = F.pad(torch.cat([a, b, a * a, b * b, a * b], dim=1), [size // 2] * 4, mode="reflect")  # (1, 15, H+, W+)
    if a.dtype == torch.float64:
        g = gaussian_1d(size, sigma, a.dtype)
        x = F.conv2d(x, g.view(1, 1, 1, -1).expand(15, 1, 1, -1), groups=15)
        means = F.conv2d(x, g.view(1, 1, -1, 1).expand(15, 1, -1, 1), groups=15)
    else:
        means = F.conv2d(x, gaussian_window(size, sigma, a.dtype)[None, None].expand(15, 1, -1, -1), groups=15)
    mu_a, mu_b, aa, bb, ab = means.split(3, dim=1)
    var_a, var_b, cov = aa - mu_a * mu_a, bb - mu_b * mu_b, ab - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))


def ssim(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> float | None:
    """Mean SSIM over the channels and the pixels where keep (H, W) is 1 (all when None); None if keep is empty.

    With a mask both images are zeroed outside it first (as PIE-Bench does), so changes there cannot leak into
    the windows of kept pixels near the border.
    """
    a, b, keep = _pair(a, b, keep)
    if keep.sum() == 0:
        return None
    values = ssim_map(a * keep, b * keep)  # (1, 3, H, W)
    return float((values * keep).sum() / (keep.sum() * 3))


def psnr(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> float | None:
    """PSNR in dB for images in [0, 1] over the pixels where keep is 1; inf for identical pixels, None if empty."""
    a, b, keep = _pair(a, b, keep)
    if keep.sum() == 0:
        return None
    mse = float((((a - b) ** 2) * keep).sum() / (keep.sum() * 3))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


LPIPS_BACKBONES = {"alex": "alexnet-owt-7be5be79.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth"}  # torchvision's


class Lpips:
    """LPIPS from the `lpips` package (backbone `net`: "alex", or "squeeze" as PIE-Bench scores), only when it and
    torchvision's backbone weights are already here; or `network`, any module taking two (1, 3, H, W) pictures in
    [-1, 1] and giving their distance (tests pass a small one)."""

    def __init__(self, device: torch.device | str = "cpu", net: str = "alex", network=None):
        self.device = torch.device(device)
        if network is not None:
            self.net = network.eval().to(self.device) if hasattr(network, "eval") else network
            return
        if net not in LPIPS_BACKBONES:
            raise ValueError(f"LPIPS net must be one of {', '.join(LPIPS_BACKBONES)}, not {net!r}")
        if importlib.util.find_spec("lpips") is None:
            raise MetricUnavailable("LPIPS needs the `lpips` package (pip install lpips)")
        weights = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONES[net]
        if not weights.exists():
            raise MetricUnavailable(f"LPIPS needs torchvision's {net} weights at {weights}; they are not downloaded")
        import lpips

        try:
            self.net = lpips.LPIPS(net=net, verbose=False).eval().to(self.device)
        except Exception as err:  # noqa: BLE001 - a broken install is reported, not raised
            raise MetricUnavailable(f"LPIPS could not be set up: {err}") from err

    @torch.inference_mode()
    def __call__(self, a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> float | None:
        """LPIPS distance (lower = more alike); with keep, of the images zeroed outside it (as PIE-Bench does)."""
        a, b, keep = _pair(a, b, keep)
        if keep.sum() == 0:
            return None
        a, b = (x * keep * 2 - 1 for x in (a, b))  # LPIPS takes [-1, 1]
        return float(self.net(a.float().to(self.device), b.float().to(self.device)).mean())


def clip_pixels(images: torch.Tensor, side: int) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> CLIP input (N, 3, side, side): shorter side to `side` (bicubic), centre crop,
    CLIP mean/std, as CLIPImageProcessor does."""
    h, w = images.shape[-2:]
    scale = side / min(h, w)
    size = (max(side, round(h * scale)), max(side, round(w * scale)))
    x = F.interpolate(images.float(), size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (size[0] - side) // 2, (size[1] - side) // 2
    x = x[:, :, top:top + side, left:left + side]  # (N, 3, side, side)
    mean = torch.tensor(CLIP_MEAN, device=x.device)[None, :, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[None, :, None, None]
    return (x - mean) / std


class ClipScorer:
    """CLIP image/text embeddings from a transformers CLIPModel (hub id or local folder), loaded on first use.

    Text goes through the project's offline CLIP tokenizer (the BPE every OpenAI CLIP uses), so only the model's
    config and safetensors weights are read.
    """

    def __init__(self, spec: str = CLIP_DEFAULT, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.spec, self.device, self.dtype = spec, torch.device(device), dtype
        self._model = None
        self._tokenizer = None

    def load(self) -> ClipScorer:
        """Load the model now; raise MetricUnavailable saying why it cannot be (offline, missing files, ...)."""
        if self._model is not None:
            return self
        from transformers import CLIPModel
        from transformers.utils import logging

        from p2p_cli.checks import clip_tokenizer

        logging.set_verbosity_error()
        folder = _clip_folder(self.spec)
        try:
            model = CLIPModel.from_pretrained(folder, use_safetensors=True)
        except (OSError, ValueError, KeyError) as err:
            raise MetricUnavailable(f"cannot load CLIP from {folder}: {err}") from err
        self._model = model.eval().to(self.device, self.dtype)
        self._tokenizer = clip_tokenizer()
        return self

    @property
    def model(self):
        return self.load()._model

    @torch.inference_mode()
    def image_features(self, images: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> unit embeddings (N, D), float32 on the CPU."""
        model = self.model
        out = []
        for part in images.split(chunk):
            pixels = clip_pixels(part.to(self.device), model.config.vision_config.image_size).to(self.dtype)
            pooled = model.vision_model(pixel_values=pixels).pooler_output  # (n, hidden)
            out.append(F.normalize(model.visual_projection(pooled).float(), dim=-1).cpu())  # (n, D)
        return torch.cat(out)

    @torch.inference_mode()
    def text_features(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> unit embeddings (N, D), float32 on the CPU (truncated to the model's context)."""
        model = self.model
        length = min(self._tokenizer.model_max_length, model.config.text_config.max_position_embeddings)
        tok = self._tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        pooled = model.text_model(input_ids=tok.input_ids.to(self.device),
                                  attention_mask=tok.attention_mask.to(self.device)).pooler_output  # (N, hidden)
        return F.normalize(model.text_projection(pooled).float(), dim=-1).cpu()  # (N, D)


def clip_score(image_feature: torch.Tensor, text_feature: torch.Tensor) -> float:
    """CLIPScore as torchmetrics and PIE-Bench report it: 100 * max(cos(image, text), 0), in [0, 100]."""
    return 100.0 * max(float(image_feature @ text_feature), 0.0)


def directional_similarity(src_image: torch.Tensor, image: torch.Tensor, src_text: torch.Tensor,
                           text: torch.Tensor, eps: float = 1e-6) -> float | None:
    """cos(image change, text change) of unit CLIP embeddings (Gal et al. 2022), in [-1, 1]; None when either
    change is nil (e.g. a reweight edit, whose target prompt is the source's)."""
    d_image, d_text = image - src_image, text - src_text
    if d_image.norm() < eps or d_text.norm() < eps:
        return None
    return float(F.cosine_similarity(d_image, d_text, dim=0))


def _clip_folder(spec: str) -> Path:
    """A local CLIP folder, or the hub snapshot of an id (from the cache only when offline)."""
    return hub_folder(spec, "CLIP", "--clip", "a CLIPModel folder")


def hub_folder(spec: str, what: str, option: str, kind: str) -> Path:
    """A local folder, or the hub snapshot of an id (config and safetensors weights; from the cache only when
    offline); MetricUnavailable naming `what` and the `option` that takes another if it cannot be had."""
    from p2p_cli.resolve import HubUnavailable, hub_snapshot, resolve

    source = resolve(spec)
    if source.kind in ("folder", "file"):
        if not (source.path / "config.json").exists():
            raise MetricUnavailable(f"{spec} has no config.json; {option} takes {kind} or a hub id")
        return source.path
    if source.kind != "hub":
        raise MetricUnavailable(f"no {what} model folder at {spec}; {option} takes a local folder or a hub id")
    patterns = ["config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json"]
    try:
        return hub_snapshot(spec, patterns)
    except HubUnavailable as err:  # connection, not found, gated, ...: all mean "no model here"
        if err.offline:
            raise MetricUnavailable(f"{what} {spec} is not in the local Hugging Face cache and {err.how}"
                                    f" (pass {option} with a local folder)") from err
        raise MetricUnavailable(f"cannot get {what} {spec} from the hub: {err}") from err


# --- PIE-Bench (Ju et al., "PnP Inversion", ICLR 2024) -----------------------------------------------------------
# Its evaluator (evaluation/matrics_calculator.py of cure-lab/PnPInversion) scores 512x512 pictures. The pixel
# measures zero both pictures outside the kept region and then average over the WHOLE picture (the zeroed pixels
# count as agreeing): not the mean over the kept pixels that psnr()/ssim() above compute. docs/pie-bench.md.

SSIM_BORDER = 5  # the (11 - 1) / 2 pixels of reflected padding the evaluator's torchmetrics SSIM leaves out


def pie_mse(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> float | None:
    """Mean squared difference of the two pictures zeroed outside keep, over every pixel and channel."""
    a, b, keep = _pair(a, b, keep)
    if keep.sum() == 0:
        return None
    return float(((a * keep - b * keep) ** 2).mean())


def pie_psnr(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> float | None:
    """10 log10(1 / pie_mse) in dB (data range 1); inf for identical kept pixels."""
    mse = pie_mse(a, b, keep)
    if mse is None:
        return None
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def pie_ssim(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> float | None:
    """SSIM (11x11 Gaussian, sigma 1.5, data range 1) of the pictures zeroed outside keep, averaged over the
    channels and the picture less its SSIM_BORDER-pixel border (reflected borders), in float32.

    This is the evaluator's call, StructuralSimilarityIndexMeasure(data_range=1.0) on float32 pictures, as
    torchmetrics up to 1.3.1 computed it (1.2 was current when the benchmark was published; the evaluator pins no
    version): window, padding, means and the final average in the pictures' float32, the padded border left out.
    On the CPU it equals torchmetrics 1.2.1 and 1.3.2 to the last digit (tests/pie_bench/test_pie_metrics.py).
    What changed later, read in torchmetrics' source and changelog: 1.3.2 clamps the variances at 0 (#2378; no
    change where they are not negative, as here), and from 1.4.2 the whole map is averaged, border included
    (#2721: up to 5e-3 higher on masked pictures). Not in float64: float32's rounding of E[x^2] - E[x]^2 raises
    SSIM on bright, flat regions (1-4e-4 on the benchmark's pictures), and the published numbers carry it. The
    evaluator ran on a GPU, whose convolution rounds in another order (and may use TF32), so its float32 noise
    may differ in the last digits (not measured; docs/pie-bench.md)."""
    a, b, keep = _pair(a, b, keep)
    if keep.sum() == 0:
        return None
    values = ssim_map((a * keep).float(), (b * keep).float())  # (1, 3, H, W) float32; the products are exact
    e = SSIM_BORDER
    return float(values[..., e:-e, e:-e].reshape(1, -1).mean(-1))


def pie_clip_region(image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The picture black outside `region` (H, W; 1 = the edited part): what the evaluator's edited-part CLIP
    score sees."""
    return image * (region > 0.5).to(image.dtype)


class DinoStructure:
    """PIE-Bench's structure distance: the mean squared difference of the self-similarity of the keys of the last
    block of DINO ViT-B/8 (Tumanyan et al.'s Splice measure) between two pictures.

    The picture is scaled to [0, 255] (the evaluator feeds 0-255 values to the ImageNet normalisation: kept, so
    the numbers compare), resized to 224 on its shorter side (bilinear, no antialiasing, longer side at most
    480), normalised with ImageNet's mean and std, and run through a transformers ViTModel; the keys of every
    token (the class token included), all heads side by side, give the cosine self-similarity (T, T).
    `model`: a ViTModel to use instead of loading `spec` (tests pass a tiny random one).
    """

    SHORT_SIDE, MAX_SIDE = 224, 480

    def __init__(self, spec: str = DINO_DEFAULT, device: torch.device | str = "cpu", model=None):
        self.spec, self.device = spec, torch.device(device)
        self._model = None if model is None else model.eval().to(self.device)

    def load(self) -> DinoStructure:
        """Load the ViT now; raise MetricUnavailable saying why it cannot be."""
        if self._model is not None:
            return self
        from transformers import ViTModel
        from transformers.utils import logging

        logging.set_verbosity_error()
        folder = hub_folder(self.spec, "DINO", "--dino", "a ViTModel folder")
        try:
            model = ViTModel.from_pretrained(folder, add_pooling_layer=False, use_safetensors=True)
        except (OSError, ValueError, KeyError) as err:
            raise MetricUnavailable(f"cannot load DINO from {folder}: {err}") from err
        self._model = model.eval().to(self.device)
        return self

    @property
    def model(self):
        return self.load()._model

    def pixels(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) in [0, 1] -> the ViT's input (1, 3, h, w)."""
        h, w = image.shape[-2:]
        short, long = min(h, w), max(h, w)
        new_short, new_long = self.SHORT_SIDE, int(self.SHORT_SIDE * long / short)
        if new_long > self.MAX_SIDE:
            new_short, new_long = int(self.MAX_SIDE * new_short / new_long), self.MAX_SIDE
        size = (new_short, new_long) if h <= w else (new_long, new_short)
        x = image.float()[None].to(self.device) * 255
        if (h, w) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD, device=x.device)[None, :, None, None]
        return (x - mean) / std

    @torch.inference_mode()
    def keys_self_similarity(self, image: torch.Tensor) -> torch.Tensor:
        """(T, T) cosine similarity between the last block's keys of every pair of tokens, float32 on the CPU."""
        model = self.model
        keys = []
        hook = last_key_projection(model).register_forward_hook(lambda module, args, out: keys.append(out))
        try:
            x = self.pixels(image)
            size = model.config.image_size
            model(pixel_values=x, interpolate_pos_encoding=tuple(x.shape[-2:]) != (size, size))
        finally:
            hook.remove()
        k = keys[0][0].float()  # (T, hidden): the heads' keys side by side
        norms = k.norm(dim=-1, keepdim=True)
        return ((k @ k.T) / (norms @ norms.T).clamp(min=1e-8)).cpu()

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """Structure distance between two (3, H, W) pictures in [0, 1] (0: the same structure)."""
        return float(((self.keys_self_similarity(a) - self.keys_self_similarity(b)) ** 2).mean())


def last_key_projection(model) -> torch.nn.Module:
    """The key projection (Linear) of a transformers ViTModel's last block: `layers[-1].attention.k_proj` in
    transformers 5, `encoder.layer[-1].attention.attention.key` before."""
    layers = model.layers if hasattr(model, "layers") else model.encoder.layer
    attention = layers[-1].attention
    return attention.k_proj if hasattr(attention, "k_proj") else attention.attention.key
