"""PIE-Bench folders (Ju et al., "PnP Inversion", ICLR 2024): mapping_file.json read and checked, each entry's
mask decoded from its run-length code, and each entry turned into a p2p recipe (docs/pie-bench.md).

No torch here: `p2p eval pie-bench` checks a folder before any model loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from p2p_cli.overrides import apply_overrides
from p2p_cli.paths import outside, read_regular_text
from p2p_cli.text.words import split_words

MAPPING_FILE = "mapping_file.json"
IMAGES = "annotation_images"
MASK_SIDE = 512  # the masks' run-length code counts pixels of a 512x512 picture, row by row
KINDS = {  # editing_type_id -> name (the benchmark's ten folders, 0_random_140 .. 9_change_style_80)
    0: "random", 1: "change-object", 2: "add-object", 3: "delete-object", 4: "change-content", 5: "change-pose",
    6: "change-color", 7: "change-material", 8: "change-background", 9: "change-style",
}
# How entries are edited: "reference", the benchmark's own P2P run (run_editing_p2p.py of cure-lab/PnPInversion,
# entry_recipe says where p2p follows it), or "p2p", p2p's own choices (edit type, windows, blend-word lookup)
PROTOCOLS = ("reference", "p2p")
REFERENCE_SETTINGS = {"cross_replace": 0.4, "self_replace": 0.6, "guidance": 7.5, "steps": 50}
REFERENCE_SELF_MAX_RES = 32  # self-attention injected where a layer has at most 32 x 32 queries
REFERENCE_BLEND = {"threshold": 0.3, "start": 0.2}  # its LocalBlend's th=(.3, .3) and start_blend=0.2
REWEIGHT = 2.0  # the target's blended word's attention factor (its eq_params)


class PieBenchError(ValueError):
    """A folder or entries that cannot be run; `problems` are lines naming the entry and field."""

    def __init__(self, problems: list[str], folder: str | Path):
        self.problems, self.folder = list(problems), str(folder)
        head = f"{folder}: not a PIE-Bench folder p2p can run ({len(problems)} problem{'s' * (len(problems) != 1)})"
        super().__init__("\n".join([head, *(f"  {p}" for p in problems)]))


@dataclass
class PieEntry:
    """One picture of the benchmark and its edit."""

    id: str  # the mapping file's key, e.g. "000000000000"; the output folder's name
    image: Path  # resolved picture file
    source: str  # original_prompt without the brackets that mark the edited words
    target: str  # editing_prompt, likewise
    kind: int  # editing_type_id, 0-9 (KINDS)
    blended: list[str]  # blended_word split at spaces: the source's word, then the target's ("cat dog")
    mask: list[int]  # run-length code: start, length, start, length, ... (flat index into 512x512)
    instruction: str = ""

    @property
    def kind_name(self) -> str:
        return KINDS[self.kind]


def plain(prompt: str) -> str:
    """A prompt without the brackets PIE-Bench marks edited words with ("a [red] car" -> "a red car")."""
    return prompt.replace("[", "").replace("]", "")


def decode_mask(code: list[int], side: int = MASK_SIDE) -> np.ndarray:
    """(side, side) float32 mask, 1 where the picture is edited: each (start, length) pair sets `length` pixels
    from flat index `start` (row-major; a run is cut at the picture's end). The outermost row and column on each
    side are set to 1 as the benchmark's decoder does ("to avoid annotation errors in boundary"), so they are
    never scored as background."""
    n = side * side
    flat = np.zeros(n, dtype=np.float32)
    for start, length in zip(code[0::2], code[1::2]):
        if 0 <= start < n and length > 0:
            flat[start:start + min(length, n - start)] = 1
    mask = flat.reshape(side, side)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 1
    return mask


def parse_kinds(text: str | None) -> list[int] | None:
    """--kinds "1,change-style,6" -> [1, 9, 6]: ids 0-9 or names (KINDS; "_" for "-" too); ValueError names
    the bad one. None / "" / "all": every kind."""
    if text is None or not text.strip() or text.strip().lower() == "all":
        return None
    names = {name: k for k, name in KINDS.items()}
    kinds = []
    for part in text.split(","):
        word = part.strip().lower().replace("_", "-").replace(" ", "-")
        if word.isdigit() and int(word) in KINDS:
            kinds.append(int(word))
        elif word in names:
            kinds.append(names[word])
        else:
            listed = ", ".join(f"{k} {name}" for k, name in KINDS.items())
            raise ValueError(f"unknown kind {part.strip()!r}; give ids or names, comma-separated: {listed}")
    return list(dict.fromkeys(kinds))


def read_folder(folder: str | Path, kinds: list[int] | None = None, limit: int | None = None,
                trust: bool = False) -> list[PieEntry]:
    """The entries of a PIE-Bench folder (the one holding mapping_file.json and annotation_images/) in the mapping
    file's order, only those of `kinds`, at most `limit`; PieBenchError lists every problem of the folder and of
    the chosen entries (a picture that is missing included). The mapping file is untrusted: its pictures must lie
    inside the folder unless `trust` (--trust-recipe)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise PieBenchError([f"{folder} is not a folder; give the PIE-Bench data folder (the one holding"
                             f" {MAPPING_FILE} and {IMAGES}/)"], folder)
    path = folder / MAPPING_FILE
    if not path.is_file():
        raise PieBenchError([f"no {MAPPING_FILE} in {folder}; give the PIE-Bench data folder (the one holding"
                             f" {MAPPING_FILE} and {IMAGES}/)"], folder)
    try:
        data = json.loads(read_regular_text(path))
    except UnicodeDecodeError as err:
        raise PieBenchError([f"{MAPPING_FILE}: not UTF-8 text ({err.reason} at byte {err.start})"], folder) from None
    except json.JSONDecodeError as err:
        raise PieBenchError([f"{MAPPING_FILE}: not JSON: {err.msg} at line {err.lineno}, column {err.colno}"],
                            folder) from None
    if not isinstance(data, dict) or not data:
        raise PieBenchError([f"{MAPPING_FILE}: expected an object of entries {{\"000000000000\": {{...}}, ...}},"
                             f" got {'an empty one' if data == {} else type(data).__name__}"], folder)
    root = folder / IMAGES if (folder / IMAGES).is_dir() else folder
    entries, problems = [], []
    for key, item in data.items():
        if not isinstance(item, dict):
            problems.append(f"{key}: expected an object with image_path, original_prompt, editing_prompt,"
                            f" editing_type_id and mask, got {type(item).__name__}")
            continue
        kind = _kind(key, item, problems)
        if kind is None or (kinds is not None and kind not in kinds):
            continue
        if limit is not None and len(entries) >= limit:
            break
        entry = _entry(key, item, kind, root, problems, None if trust else folder)
        if entry is not None:
            entries.append(entry)
    if problems:
        raise PieBenchError(problems, folder)
    return entries


def _kind(key: str, item: dict, problems: list[str]) -> int | None:
    value = item.get("editing_type_id")
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not text.isdigit() or int(text) not in KINDS:
        problems.append(f"{key}.editing_type_id: expected an id 0-9 (\"0\" random ... \"9\" change style),"
                        f" got {value!r}")
        return None
    return int(text)


def _entry(key: str, item: dict, kind: int, root: Path, problems: list[str], inside: Path | None) -> PieEntry | None:
    found = len(problems)
    name_problem = _folder_name_problem(key)
    if name_problem:
        problems.append(f"{key}: {name_problem}")
    texts = {}
    for name in ("image_path", "original_prompt", "editing_prompt"):
        value = item.get(name)
        if not isinstance(value, str) or not plain(value).strip():
            problems.append(f"{key}.{name}: expected text, got {_short(value)}")
        texts[name] = value if isinstance(value, str) else ""
    blended = item.get("blended_word", "")
    if not isinstance(blended, str):
        problems.append(f"{key}.blended_word: expected text (\"cat dog\": the source's word, then the target's),"
                        f" got {blended!r}")
        blended = ""
    code = item.get("mask")
    if not isinstance(code, list) or len(code) % 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in code):
        problems.append(f"{key}.mask: expected the run-length code, a list of whole numbers >= 0 in (start, length)"
                        f" pairs, got {_short(code)}")
    elif problem := _mask_problem(code):
        problems.append(f"{key}.mask: {problem}")
    image = root / texts["image_path"] if texts["image_path"] else None
    if image is not None and inside is not None and outside(image, inside):
        problems.append(f"{key}.image_path: {_short(texts['image_path'])} lies outside {inside}; a mapping file may"
                        " only name pictures inside its own folder (pass --trust-recipe if you trust it)")
    elif image is not None and not image.is_file():
        problems.append(f"{key}.image_path: no picture at {image}")
    if len(problems) > found:
        return None
    return PieEntry(id=key, image=image.resolve(), source=plain(texts["original_prompt"]).strip(),
                    target=plain(texts["editing_prompt"]).strip(), kind=kind, blended=blended.split(),
                    mask=list(code), instruction=str(item.get("editing_instruction", "")))


def _mask_problem(code: list[int], side: int = MASK_SIDE) -> str | None:
    """Why a run-length code cannot be a mask of the side x side picture (a run past its last pixel), or None."""
    n = side * side
    for i, (start, length) in enumerate(zip(code[0::2], code[1::2])):
        if start + length > n:
            return (f"run {i + 1} (start {start}, length {length}) ends past the {side}x{side} picture's last"
                    f" pixel ({n}); the code is damaged")
    return None


def _folder_name_problem(key: str) -> str | None:
    if not key or key.startswith(".") or any(c in key for c in "/\\") or any(ord(c) < 32 for c in key):
        return "the entry's key names its output folder: no '/', '\\', leading dot or control characters"
    if len(key.encode()) > 200:
        return "the entry's key names its output folder: at most 200 bytes"
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def entry_recipe(entry: PieEntry, *, protocol: str = "reference", inversion: str = "direct",
                 reweight: float = REWEIGHT, blend: bool = True, joint: bool = False) -> tuple[dict, list[str]]:
    """The recipe (a dict, as YAML would give) that edits an entry under `protocol` (PROTOCOLS), and notes on
    where it leaves the reference (one line each). The mask is never used: it only scores.

    "reference" follows the benchmark's own P2P run (run_editing_p2p.py, models/p2p_editor.py and
    models/p2p/attention_control.py of cure-lab/PnPInversion): always a refinement (`is_replace_controller`
    left False, also when both prompts have as many words); cross window 0.4 and self window 0.6 (steps
    int(0.4 x 51) and int(0.6 x 50), as p2p counts them); self-attention injected in the layers of at most
    32 x 32 queries (its `<= 32 ** 2` test; p2p's default is latent side / 4); guidance 7.5 and 50 steps; a
    local blend (threshold 0.3, from step int(0.2 x 50)) on blended_word's first word looked up in the source
    only and its second in the target only; the second word's attention x2 (`reweight`; 1: none) inside the
    cross window. Where it cannot follow, deliberately:
    - word lookup: the reference finds a word only where it equals a space-separated piece of the prompt, case
      and punctuation included ("cat" is not found in "a cat, sleeping"), and then blends with an empty mask for
      that prompt (both missing: the edit is undone after step 10). p2p's rule (case and punctuation ignored)
      finds it; the note says so, and a word p2p cannot find either is left out (no blend when both are);
    - a blended_word of one word, which the reference's script cannot run (it indexes the second): the word
      is looked up in both prompts, not reweighted; a third word and on are ignored, as the reference does;
    - a joint-attention transformer (SD3, FLUX) has no resolution levels: its self-attention blocks stay the
      family's (`joint`); local blend reads 16 x 16 maps in the reference, latent side / 4 in p2p (the same at
      SD 1.x's 512 px).
    "p2p" is p2p's own choice: the edit type by p2p's rule (replace when both prompts have as many words, else
    refine), the model family's windows, guidance and steps, and the blended words looked up in both prompts;
    reweight and blend as above."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: give one of {', '.join(PROTOCOLS)}")
    notes: list[str] = []
    source_words, target_words = split_words(entry.source), split_words(entry.target)
    edit: dict = {"target": entry.target}
    recipe: dict = {"name": entry.id, "image": str(entry.image), "source": entry.source, "inversion": inversion}
    reweighted = entry.blended[1] if len(entry.blended) >= 2 else None
    if protocol == "reference":
        recipe.update(REFERENCE_SETTINGS)
        if not joint:
            recipe["self_replace_max_res"] = REFERENCE_SELF_MAX_RES
        edit["type"] = "refine"
        if len(entry.blended) >= 2:
            lists = {"source_words": _own_word(entry.blended[0], entry.source, source_words, "source", notes),
                     "target_words": _own_word(entry.blended[1], entry.target, target_words, "target", notes)}
            if len(entry.blended) > 2:
                notes.append(f"blended words {' '.join(entry.blended[2:])!r} after the second are ignored, as the"
                             " reference does")
            lb = {k: v for k, v in lists.items() if v}
        else:
            lb = {"words": _either_words(entry.blended, source_words, target_words, notes)}
            if entry.blended:
                notes.append(f"one blended word {entry.blended[0]!r} (the reference's script needs two): looked up"
                             " in both prompts, not reweighted")
        if blend and any(lb.values()):
            edit["local_blend"] = {**lb, **REFERENCE_BLEND}
    else:
        words = _either_words(entry.blended, source_words, target_words, notes)
        if blend and words:
            edit["local_blend"] = {"words": words}
    if reweight != 1 and reweighted is not None:
        if _in(reweighted, set(target_words)):
            edit["reweight"] = {reweighted: reweight}
        else:
            notes.append(f"blended word {reweighted!r} is not in the target: not reweighted")
    recipe["edits"] = [edit]
    return recipe, notes


def _own_word(word: str, prompt: str, prompt_words: list[str], which: str, notes: list[str]) -> list[str]:
    """[word] when p2p finds it in the prompt (else []), with a note where the reference's exact lookup differs."""
    found, exact = _in(word, set(prompt_words)), word in prompt.split(" ")
    if not found:
        notes.append(f"blended word {word!r} is not in the {which}: left out of the blend")
    elif not exact:
        missed = "blend nothing for it" if which == "source" else "neither blend nor reweight it"
        notes.append(f"blended word {word!r} is in the {which} only after p2p's word split (the reference looks"
                     f" words up at spaces, case and punctuation included, and would {missed})")
    return [word] if found else []


def _either_words(blended: list[str], source_words: list[str], target_words: list[str],
                  notes: list[str]) -> list[str]:
    """The blended words found in either prompt (p2p's local blend looks each up in both), each once."""
    both = set(source_words) | set(target_words)
    words = [w for w in dict.fromkeys(blended) if _in(w, both)]
    missing = [w for w in dict.fromkeys(blended) if w not in words]
    if missing:
        notes.append(f"blended word(s) {', '.join(map(repr, missing))} in neither prompt: left out of the blend")
    return words


def _in(word: str, words: set[str]) -> bool:
    parts = split_words(word)
    return len(parts) == 1 and parts[0] in words


@dataclass
class Settings:
    """How every entry is edited (the CLI's options)."""

    protocol: str = "reference"  # PROTOCOLS: the benchmark's own P2P run, or p2p's own choices
    inversion: str = "direct"
    reweight: float = REWEIGHT
    blend: bool = True
    overrides: list[str] = field(default_factory=list)  # --set, --steps, --seed


def entry_job(entry: PieEntry, settings: Settings, joint: bool = False) -> tuple[dict, list[str]]:
    """The recipe dict of an entry with the settings and --set applied, and notes on it (`joint`: the model is
    a joint-attention transformer)."""
    recipe, notes = entry_recipe(entry, protocol=settings.protocol, inversion=settings.inversion,
                                 reweight=settings.reweight, blend=settings.blend, joint=joint)
    return apply_overrides(recipe, list(settings.overrides)), notes


def invalid_entries(entries: list[PieEntry], settings: Settings, model: str | None) -> list:
    """Each entry whose recipe (with the settings' --set) is invalid on the model's config files, as its
    RecipeError, before any model loads. ValueError when a --set cannot apply (the same for every entry)."""
    from p2p_cli.checks import model_geometry, problems_before_loading
    from p2p_cli.recipe import RecipeError, parse_recipe
    from p2p_cli.resolve import key

    spec = model_geometry(key(model))
    joint = spec is not None and spec.family.joint
    invalid = []
    for entry in entries:
        data, _ = entry_job(entry, settings, joint)
        try:
            recipe = parse_recipe(data, entry.id)
            if problems := problems_before_loading(recipe, key(model), tokenizers=False):
                raise RecipeError(problems, entry.id)
        except RecipeError as err:
            invalid.append(err)
    return invalid
