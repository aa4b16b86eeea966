"""What every PNG p2p writes says about itself, in two PNG text chunks:

- "parameters", in the form Automatic1111's web UI writes and reads (so image viewers and web UIs show it):
      <prompt>
      Negative prompt: <negative prompt>
      Steps: 50, Sampler: DDIM, CFG scale: 7.5, Seed: 8888, Size: 512x512, Model: <id>, P2P: edit-1 replace ...
- "p2p-recipe": the full resolved recipe as JSON, which `p2p edit FILE.png` runs again and `p2p show` prints
  (picture_texts.py reads both back).
"""

from __future__ import annotations

import json
from typing import Any

from p2p_cli.picture_texts import PARAMETERS, RECIPE


def parameters(recipe: dict, role: str, prompt: str, size: tuple[int, int]) -> str:
    """The A1111 "parameters" text of one picture of a run (recipe: the resolved recipe as a dict)."""
    lines = [prompt]
    if recipe.get("negative_prompt"):
        lines.append(f"Negative prompt: {recipe['negative_prompt']}")
    fields = [f"Steps: {recipe['steps']}", "Sampler: DDIM", f"CFG scale: {recipe['guidance']:g}",
              f"Seed: {recipe['seed']}", f"Size: {size[1]}x{size[0]}"]
    if recipe.get("model"):
        fields.append(f"Model: {recipe['model']}")
    if role.startswith(("edit-", "baseline-")):
        k = int(role.split("-")[1])
        edit = recipe["edits"][k - 1]
        if role.startswith("baseline-"):
            fields.append(f"P2P: {role}, no attention control")
        else:
            cross = edit.get("cross_replace") or {}
            window = cross.get("default") if isinstance(cross, dict) else cross
            parts = [f"{role} {edit.get('type')}", f"cross {_window(window)}",
                     f"self {_window(edit.get('self_replace'))}"]
            if edit.get("reweight"):
                parts.append("reweight " + " ".join(f"{w}:{f:g}" for w, f in edit["reweight"].items()))
            if edit.get("local_blend"):
                blend = edit["local_blend"]
                words = [*blend.get("words", []), *blend.get("source_words", []), *blend.get("target_words", [])]
                parts.append("blend " + "/".join(dict.fromkeys(words)))
            fields.append("P2P: " + "; ".join(parts))
        fields.append(f"P2P source: {_quote(recipe['source'])}")
    return "\n".join(lines + [", ".join(fields)])


def _window(window: Any) -> str:
    if isinstance(window, (list, tuple)) and len(window) == 2:
        return f"{window[0]:g}-{window[1]:g}"
    return str(window)


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def png_texts(recipe: dict, role: str, prompt: str, size: tuple[int, int]) -> dict[str, str]:
    """Both text chunks of one picture."""
    return {PARAMETERS: parameters(recipe, role, prompt, size),
            RECIPE: json.dumps(recipe, ensure_ascii=False, sort_keys=True)}
