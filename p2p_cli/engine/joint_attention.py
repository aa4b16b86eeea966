"""Prompt-to-Prompt on joint attention (SD3's MMDiT, FLUX.1's and FLUX.2's double- and single-stream blocks,
Qwen-Image's dual-stream blocks): fused and explicit.

In a joint layer one softmax runs over [text; image] keys (FLUX: text first; SD3: image first). For an image
query, the text-key block of its probabilities plays the part of the paper's cross-attention map and the
image-key block the part of its self-attention map. The text stream's own queries are not controlled.

The edit of a target's row (image queries, conditional half), with P its own probabilities and S the source's:
    T       = the UNet edit of the text block (as edits.edit_cross_explicit: inside the cross window the source's
              text block through the mapper, refine's aligned mix, the reweight factors, per-token gates);
              t = its text mass before reweighting (its row sum with factors 1)
    m       = the row's text share: t, or the target's own (sum of P's text block) where text_mass says so
    E_text  = T * m / t
    E_image = X * (1 - m) / sum(X)
              X = the source's image block in the self-injected blocks inside the self window, else the target's
              own.
So, as in a softmax, the image block takes the mass the text block leaves, and reweighting then scales words
on top as the paper's reweight does (rows need not sum to 1). Outside every window E = P exactly; an identity
edit gives the source exactly. This is a choice (the paper has no joint attention); docs/families.md says why.

Whose text share (recipe `text_mass`): a UNet reads text in its own cross-attention layer, at a weight its
architecture fixes; the paper moves only the distribution over words. A joint softmax also decides, per image
query, how much it reads text at all, and that share carries both where objects are and how strongly a word
shows. "source" transfers it (the layout held hardest; the bundled transformer shapes model then kept the
source's colour in most colour swaps), "target" keeps the row's own (only the distribution over words moves, as
in a UNet), and "self-window" (the default) takes the source's while the self window is open, when the layout
forms, and the row's own after it.

Fused form: everything above is linear in the probabilities except the scalar 1 / sum(X), so two SDPA calls per
layer give it without any (image x image) map: values get extra channels, [text values | image values | mass |
text indicator], zero on the other block's keys; the calls use the source's queries and keys (mapped, gated
text values; the image values for injection) and the target's own (gated own text values; its image values).

Masked text keys (Qwen-Image pads each prompt's sequence and masks the padding out): every softmax and SDPA call
takes the key mask of the rows whose queries and keys it uses, so a masked key has probability 0 in P and S; the
mappers move nothing onto a target's padding (text/template.py), so it stays 0 in E. A full (B, 1, S, S) mask as a
diffusers block hands it to its processor (Chroma) is read as SDPA reads it, boolean (False: masked) or float
(added to the scores), for every query in the whole-layer call and for the image queries' rows in the control's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from p2p_cli.engine.control.edits import map_columns, mapped_values, moved_columns
from p2p_cli.engine.control.run import Control
from p2p_cli.engine.layers import joint_views

EPS = 1e-6


class JointControl:
    """The control of one joint layer, whatever the family's processor around it."""

    def __init__(self, block: int, path: str, control: Control):
        self.text_view, self.image_view = joint_views(block, path)
        self.block = block
        self.control = control
        self.cols = moved_columns(control.mapper)  # the text positions any mapper moves (once per run)

    def _edit_text(self, src: torch.Tensor, tgt: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The targets' edited text blocks (n, heads, N, L), as edits.edit_cross_explicit computes them, and their
        text mass before reweighting (n, heads, N, 1); the mapper's product only where it moves columns."""
        ctl = self.control
        alpha = ctl.alpha.index_select(0, step)[0][:, None, None, :]  # (n, 1, 1, L)
        al = ctl.aligned[:, None, None, :]
        mixed = al * map_columns(src, ctl.mapper, self.cols) + (1 - al) * tgt
        unweighted = alpha * mixed + (1 - alpha) * tgt
        edited = alpha * mixed * ctl.equalizer[:, None, None, :] + (1 - alpha) * tgt
        return edited, unweighted.sum(-1, keepdim=True)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, text: slice, image: slice,
               p2p: dict[str, torch.Tensor] | None, scale: float | None = None,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention over (B, heads, S, d) with the control applied to the targets' image queries; mask: None (all
        keys), (B, S) bool (the keys each row may attend to) or an SDPA mask (B, 1, S, S), bool or float."""
        if p2p is None:
            return F.scaled_dot_product_attention(q, k, v, scale=scale, attn_mask=_keys(mask))
        ctl = self.control
        c0, n = ctl.cond, ctl.n_targets
        n_image, n_text = q[:, :, image].shape[2], k[:, :, text].shape[2]
        grid = ctl.layer_hw(n_image)
        side = max(grid)
        inject = self.block in ctl.self_blocks
        stores = [(s, view) for s in ctl.stores for view in (self.text_view, self.image_view) if s.wants(view, side)]
        text_alone = bool(stores) and not ctl.explicit and all(view.is_cross for _, view in stores) and n_image > n_text
        whole = not text_alone and (ctl.explicit or bool(stores))  # the conditional rows' probabilities are made
        # the image queries of the rows the control writes are left out of the plain attention (not made twice)
        out = _attention_except(q, k, v, scale, mask, slice(c0, None) if whole else ctl.targets if n else None,
                                text, image)
        mask = _image_rows(mask, image)  # (B, 1, 1 or N, S): what the image queries' scores get
        scale = scale if scale is not None else q.shape[-1] ** -0.5
        if text_alone:
            # only text maps wanted (local blend) and the image x image map would be the larger: make the text
            # block alone; the output stays fused (at small sizes the whole softmax is cheaper, and no larger)
            edited = self._used_text(self._text_probs(q[c0:, :, image], k[c0:], text, scale, _rows(mask, c0)), p2p)
            for store, view in stores:
                store.add(view, grid, edited, p2p["step"])
        elif whole:
            scores = (q[c0:, :, image] @ k[c0:].transpose(-1, -2)).float() * scale
            probs = torch.softmax(_masked(scores, _rows(mask, c0)), dim=-1)
            used = self._used(probs, p2p, text, image, inject)  # (Bc, heads, N, S)
            for store, view in stores:
                store.add(view, grid, used[..., text] if view.is_cross else used[..., image], p2p["step"])
            # the probabilities are made: multiplying them by V costs one attention, the fused form about four
            out[c0:, :, image] = (used.to(v.dtype) @ v[c0:]).to(out.dtype)
            return out
        if n:
            out[ctl.targets, :, image] = self._fused(q, k, v, scale, p2p, text, image, inject, mask).to(out.dtype)
        return out

    @staticmethod
    def _text_probs(q: torch.Tensor, k: torch.Tensor, text: slice, scale: float,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
        """The text-key block of the joint probabilities, (B, heads, N, L), without the image-key block: a softmax
        over the text keys alone, times the text's share of the whole softmax (one fused SDPA of an indicator);
        mask: the image queries' (B, 1, 1 or N, S) (_image_rows)."""
        indicator = torch.zeros_like(k)
        indicator[:, :, text, 0] = 1
        share = F.scaled_dot_product_attention(q, k, indicator, scale=scale, attn_mask=mask)[..., :1].float()
        scores = (q @ k[:, :, text].transpose(-1, -2)).float() * scale
        return torch.softmax(_masked(scores, None if mask is None else mask[..., text]), dim=-1) * share

    def _used_text(self, text_probs: torch.Tensor, p2p: dict[str, torch.Tensor]) -> torch.Tensor:
        """The text blocks (B, heads, N, L) as each row uses them: the targets' edited (module doc)."""
        ctl = self.control
        g, n = ctl.n_sources, ctl.n_targets
        if not n:
            return text_probs
        own = text_probs[g : g + n]
        edited, mass = self._edit_text(ctl.sources_of_targets(text_probs), own, p2p["step"].reshape(1))
        edited, _ = self._text_share(edited, mass, own.sum(-1, keepdim=True), p2p)
        return torch.cat([text_probs[:g], edited, text_probs[g + n :]])

    @staticmethod
    def _text_share(e_text: torch.Tensor, mass: torch.Tensor, own: torch.Tensor,
                    p2p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The edited text block rescaled to the row's own text share where text_mass says so (module doc), and
        the share the image block leaves room for."""
        keep = p2p["own_mass"]  # (n, 1, 1, 1) bool
        return (torch.where(keep, e_text * (own / mass.clamp_min(EPS)), e_text), torch.where(keep, own, mass))

    def _used(self, probs: torch.Tensor, p2p: dict[str, torch.Tensor], text: slice, image: slice,
              inject: bool) -> torch.Tensor:
        """The conditional rows' joint probabilities as each row uses them: the targets' edited (module doc)."""
        ctl = self.control
        g, n = ctl.n_sources, ctl.n_targets
        if not n:
            return probs
        step = p2p["step"].reshape(1)
        src, tgt = ctl.sources_of_targets(probs), probs[g : g + n]
        e_text, mass = self._edit_text(src[..., text], tgt[..., text], step)
        e_text, mass = self._text_share(e_text, mass, tgt[..., text].sum(-1, keepdim=True), p2p)
        x = tgt[..., image]
        if inject:
            gate = ctl.self_gate.index_select(0, step)[0][:, None, None, None] > 0  # (n, 1, 1, 1)
            x = torch.where(gate, src[..., image], x)
        e_image = x * (1 - mass) / x.sum(-1, keepdim=True).clamp_min(EPS)
        edited = torch.empty_like(tgt)
        edited[..., text], edited[..., image] = e_text, e_image
        return torch.cat([probs[:g], edited, probs[g + n :]])

    def _fused(self, q, k, v, scale: float, p2p: dict[str, torch.Tensor], text: slice, image: slice,
               inject: bool, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The targets' image-query outputs (n, heads, N, d) by two SDPA calls with widened values."""
        ctl = self.control
        c0 = ctl.cond
        rows = ctl.targets
        vt = v[rows]  # (n, heads, S, d)
        d = vt.shape[-1]
        heads = vt.shape[1]

        def widened(text_values: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
            wide = vt.new_zeros(*vt.shape[:-1], 2 * d + 2)
            wide[:, :, text, :d] = text_values
            wide[:, :, image, d : 2 * d] = vt[:, :, image]
            wide[:, :, text, 2 * d] = mass.expand(-1, heads, -1)
            wide[:, :, text, 2 * d + 1] = 1
            return wide

        from_src = widened(mapped_values(vt[:, :, text], ctl.mapper_v, p2p["src_gate"]), p2p["mass_src"])
        from_own = widened(vt[:, :, text] * p2p["own_gate"], p2p["mass_own"])
        src_mask = None if mask is None else ctl.sources_of_targets(mask, c0)
        a = F.scaled_dot_product_attention(ctl.sources_of_targets(q, c0)[:, :, image], ctl.sources_of_targets(k, c0),
                                           from_src, scale=scale, attn_mask=src_mask)
        b = F.scaled_dot_product_attention(q[rows, :, image], k[rows], from_own, scale=scale,
                                           attn_mask=None if mask is None else mask[rows])
        text_out = a[..., :d] + b[..., :d]
        mass = a[..., 2 * d] + b[..., 2 * d]  # (n, heads, N)
        img, text_mass = b[..., d : 2 * d], b[..., 2 * d + 1]
        keep = p2p["own_mass"][..., 0]  # (n, 1, 1): the row keeps its own text share (text_mass)
        text_out = torch.where(keep[..., None], text_out * (text_mass / mass.clamp_min(EPS))[..., None], text_out)
        mass = torch.where(keep, text_mass, mass)
        if inject:
            pick = p2p["inject"]  # (n, 1, 1, 1) bool
            img = torch.where(pick, a[..., d : 2 * d], img)
            text_mass = torch.where(pick[..., 0], a[..., 2 * d + 1], text_mass)
        return text_out + img * ((1 - mass) / (1 - text_mass).clamp_min(EPS))[..., None]


def _attention_except(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None,
                      mask: torch.Tensor | None, rows: slice | None, text: slice, image: slice) -> torch.Tensor:
    """A joint layer's attention output (B, heads, S, d) for every row and query except the image queries of
    `rows`, which the control makes itself: those are left empty (not computed twice). One SDPA call without rows,
    else one for the text queries of every row and one for the image queries of the other rows."""
    keys = _keys(mask)
    if rows is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale, attn_mask=keys)

    def queries(m: torch.Tensor | None, part: slice) -> torch.Tensor | None:
        return m if m is None or m.shape[2] == 1 else m[:, :, part]

    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    out[:, :, text] = F.scaled_dot_product_attention(q[:, :, text], k, v, scale=scale, attn_mask=queries(keys, text))
    others = [r for r in range(q.shape[0]) if not rows.start <= r < (q.shape[0] if rows.stop is None else rows.stop)]
    if others:
        idx = torch.tensor(others, device=q.device)
        sub = None if keys is None else queries(keys, image).index_select(0, idx)
        out[idx, :, image] = F.scaled_dot_product_attention(q[idx][:, :, image], k[idx], v[idx], scale=scale,
                                                            attn_mask=sub)
    return out


def _keys(mask: torch.Tensor | None) -> torch.Tensor | None:
    """A (B, S) key mask as SDPA's (B, 1, 1, S); an SDPA mask (B, 1, S, S) as it is."""
    if mask is None or mask.dim() == 4:
        return mask
    return mask[:, None, None, :]


def _image_rows(mask: torch.Tensor | None, image: slice) -> torch.Tensor | None:
    """The part of a layer's mask (_keys) the image queries' scores get: (B, 1, 1, S) of a key mask, the image
    query rows (B, 1, N, S) of a full one (a view)."""
    if mask is None or mask.dim() == 2:
        return _keys(mask)
    return mask if mask.shape[2] == 1 else mask[:, :, image]


def _masked(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Scores (a tensor of the caller's own, changed in place) with an SDPA mask applied as SDPA applies it: a boolean
    one masks where False, a float one is added."""
    if mask is None:
        return scores
    if mask.dtype == torch.bool:
        return scores.masked_fill_(~mask, float("-inf"))
    return scores.add_(mask)


def _rows(mask: torch.Tensor | None, start: int) -> torch.Tensor | None:
    return None if mask is None else mask[start:]


class SD3JointProcessor:
    """diffusers' JointAttnProcessor2_0 (SD3's MMDiT: [image; text]) with the control in the attention."""

    def __init__(self, joint: JointControl):
        self.joint = joint

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 p2p: dict[str, torch.Tensor] | None = None, **kwargs):
        residual = hidden_states
        batch = hidden_states.shape[0]

        def heads(x):
            return x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

        q, k, v = heads(attn.to_q(hidden_states)), heads(attn.to_k(hidden_states)), heads(attn.to_v(hidden_states))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        if encoder_hidden_states is None:  # SD3.5's image-only attn2: not controlled
            out = F.scaled_dot_product_attention(q, k, v)
            out = out.transpose(1, 2).reshape(batch, -1, attn.heads * q.shape[-1]).to(q.dtype)
            return attn.to_out[1](attn.to_out[0](out))
        eq = heads(attn.add_q_proj(encoder_hidden_states))
        ek = heads(attn.add_k_proj(encoder_hidden_states))
        ev = heads(attn.add_v_proj(encoder_hidden_states))
        if attn.norm_added_q is not None:
            eq = attn.norm_added_q(eq)
        if attn.norm_added_k is not None:
            ek = attn.norm_added_k(ek)
        n_img = residual.shape[1]
        q, k, v = torch.cat([q, eq], dim=2), torch.cat([k, ek], dim=2), torch.cat([v, ev], dim=2)
        out = self.joint.attend(q, k, v, text=slice(n_img, None), image=slice(0, n_img), p2p=p2p)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * q.shape[-1]).to(q.dtype)
        hidden, encoder = out[:, :n_img], out[:, n_img:]
        if not attn.context_pre_only:
            encoder = attn.to_add_out(encoder)
        hidden = attn.to_out[1](attn.to_out[0](hidden))
        return hidden, encoder


class FluxJointProcessor:
    """diffusers' FluxAttnProcessor ([text; image], rotary embeddings; single-stream blocks get the joined
    sequence; Chroma's blocks pass an attention mask, used as SDPA reads it) with the control in the attention."""

    def __init__(self, joint: JointControl, text_length: int):
        self.joint = joint
        self.text_length = text_length

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None,
                 p2p: dict[str, torch.Tensor] | None = None, **kwargs):
        from diffusers.models.embeddings import apply_rotary_emb

        if attn.fused_projections:
            raise ValueError("fused QKV projections are not supported with P2P control: unfuse them first")
        q = attn.to_q(hidden_states).unflatten(-1, (-1, attn.head_dim))
        k = attn.to_k(hidden_states).unflatten(-1, (-1, attn.head_dim))
        v = attn.to_v(hidden_states).unflatten(-1, (-1, attn.head_dim))
        q, k = attn.norm_q(q), attn.norm_k(k)
        joined = encoder_hidden_states is not None and attn.added_kv_proj_dim is not None
        if joined:
            eq = attn.norm_added_q(attn.add_q_proj(encoder_hidden_states).unflatten(-1, (-1, attn.head_dim)))
            ek = attn.norm_added_k(attn.add_k_proj(encoder_hidden_states).unflatten(-1, (-1, attn.head_dim)))
            ev = attn.add_v_proj(encoder_hidden_states).unflatten(-1, (-1, attn.head_dim))
            q, k, v = torch.cat([eq, q], dim=1), torch.cat([ek, k], dim=1), torch.cat([ev, v], dim=1)
        if image_rotary_emb is not None:
            q = apply_rotary_emb(q, image_rotary_emb, sequence_dim=1)
            k = apply_rotary_emb(k, image_rotary_emb, sequence_dim=1)
        n_text = encoder_hidden_states.shape[1] if joined else self.text_length
        out = self.joint.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), text=slice(0, n_text),
                                image=slice(n_text, None), p2p=p2p, scale=None, mask=attention_mask)
        out = out.transpose(1, 2).flatten(2, 3).to(q.dtype)
        if not joined:
            return out
        encoder, hidden = out[:, :n_text], out[:, n_text:]
        hidden = attn.to_out[1](attn.to_out[0](hidden.contiguous()))
        return hidden, attn.to_add_out(encoder.contiguous())


class QwenJointProcessor:
    """diffusers' QwenDoubleStreamAttnProcessor2_0 ([text; image], complex rotary embeddings, the text padding
    masked out) with the control in the attention."""

    def __init__(self, joint: JointControl):
        self.joint = joint

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, encoder_hidden_states_mask=None,
                 attention_mask=None, image_rotary_emb=None, p2p: dict[str, torch.Tensor] | None = None, **kwargs):
        from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen

        head_dim = attn.inner_dim // attn.heads

        def split(x):
            return x.unflatten(-1, (-1, head_dim))

        q, k, v = split(attn.to_q(hidden_states)), split(attn.to_k(hidden_states)), split(attn.to_v(hidden_states))
        eq = split(attn.add_q_proj(encoder_hidden_states))
        ek = split(attn.add_k_proj(encoder_hidden_states))
        ev = split(attn.add_v_proj(encoder_hidden_states))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        if attn.norm_added_q is not None:
            eq, ek = attn.norm_added_q(eq), attn.norm_added_k(ek)
        if image_rotary_emb is not None:
            img_freqs, txt_freqs = image_rotary_emb
            q = apply_rotary_emb_qwen(q, img_freqs, use_real=False)
            k = apply_rotary_emb_qwen(k, img_freqs, use_real=False)
            eq = apply_rotary_emb_qwen(eq, txt_freqs, use_real=False)
            ek = apply_rotary_emb_qwen(ek, txt_freqs, use_real=False)
        n_text = encoder_hidden_states.shape[1]
        mask = None
        if encoder_hidden_states_mask is not None:
            image = torch.ones(hidden_states.shape[:2], dtype=torch.bool, device=hidden_states.device)
            mask = torch.cat([encoder_hidden_states_mask.bool(), image], dim=1)
        q, k, v = (torch.cat(pair, dim=1).transpose(1, 2) for pair in ((eq, q), (ek, k), (ev, v)))
        out = self.joint.attend(q, k, v, text=slice(0, n_text), image=slice(n_text, None), p2p=p2p, mask=mask)
        out = out.transpose(1, 2).flatten(2, 3).to(q.dtype)
        encoder, hidden = out[:, :n_text], out[:, n_text:]
        hidden = attn.to_out[0](hidden.contiguous())
        if len(attn.to_out) > 1:
            hidden = attn.to_out[1](hidden)
        return hidden, attn.to_add_out(encoder.contiguous())


class Flux2SingleJointProcessor:
    """diffusers' Flux2ParallelSelfAttnProcessor (FLUX.2's single-stream blocks: one projection gives Q, K, V and the
    MLP input of the joined [text; image] sequence) with the control in the attention."""

    def __init__(self, joint: JointControl, text_length: int):
        self.joint = joint
        self.text_length = text_length

    def __call__(self, attn, hidden_states, attention_mask=None, image_rotary_emb=None,
                 p2p: dict[str, torch.Tensor] | None = None, **kwargs):
        from diffusers.models.embeddings import apply_rotary_emb

        projected = attn.to_qkv_mlp_proj(hidden_states)
        qkv, mlp = projected.split([3 * attn.inner_dim, projected.shape[-1] - 3 * attn.inner_dim], dim=-1)
        q, k, v = (x.unflatten(-1, (-1, attn.head_dim)) for x in qkv.chunk(3, dim=-1))
        q, k = attn.norm_q(q), attn.norm_k(k)
        if image_rotary_emb is not None:
            q = apply_rotary_emb(q, image_rotary_emb, sequence_dim=1)
            k = apply_rotary_emb(k, image_rotary_emb, sequence_dim=1)
        n = self.text_length
        out = self.joint.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), text=slice(0, n),
                                image=slice(n, None), p2p=p2p)
        out = out.transpose(1, 2).flatten(2, 3).to(q.dtype)
        return attn.to_out(torch.cat([out, attn.mlp_act_fn(mlp)], dim=-1))


@contextlib.contextmanager
def controlled_joint(model, control: Control) -> Iterator[None]:
    """Install joint P2P processors on every joint attention layer of the model's transformer."""
    transformer = model.transformer
    previous = transformer.attn_processors
    text_length = control.mapper.shape[-1]
    processors = dict(previous)
    for block, path in model.family.blocks(model):
        joint = JointControl(block, path, control)
        layout = model.family.joint_layout
        if layout == "flux2" and path.startswith("single_"):
            proc = Flux2SingleJointProcessor(joint, text_length)
        else:
            proc = (SD3JointProcessor(joint) if layout == "sd3" else QwenJointProcessor(joint) if layout == "qwen"
                    else FluxJointProcessor(joint, text_length))
        processors[f"{path}.processor"] = proc
    transformer.set_attn_processor(processors)
    try:
        yield
    finally:
        transformer.set_attn_processor(previous)

