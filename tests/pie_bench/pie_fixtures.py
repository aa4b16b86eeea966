"""A three-picture folder in the benchmark's format (shapes-world pictures at 512 px, JPEG, run-
length masks of each object's box)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from lab.shapes.world import Obj, Scene, render

SIDE = 512
SCALE = SIDE // 64

# (id, kind folder, type id, scene, original prompt, editing prompt, blended words)
ENTRIES = [
    ("000000000000", "0_random_140", "0", Scene([Obj("circle", "red", "big", "left")], "white"),
     "a big [red] circle on the left on a white background",
     "a big [blue] circle on the left on a white background", "circle circle"),
    ("111000000000", "1_change_object_80/1_artificial/1_animal", "1",
     Scene([Obj("square", "green", "big", "right")], "white"),
     "a big green [square] on the right on a white background",
     "a big green [triangle] on the right on a white background", "square triangle"),
    ("611000000000", "6_change_attribute_color_40/1_artificial/1_animal", "6",
     Scene([Obj("circle", "yellow", "small", "center")], "gray"),
     "a small [yellow] circle in the center on a gray background",
     "a small [red] circle in the center on a gray background", ""),
]


def rle(mask: np.ndarray) -> list[int]:
    """Run-length code of a (512, 512) 0/1 mask, row by row: start, length, ..."""
    flat = np.concatenate([[0], mask.reshape(-1).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]


def object_box(scene: Scene) -> np.ndarray:
    """(512, 512) mask of the object's bounding box (with a 2-pixel margin at 64 px), scaled up."""
    from lab.shapes.world import SIZES

    o = scene.objects[0]
    cx, cy = o.centre()
    r = SIZES[o.size] + 2
    small = np.zeros((64, 64), np.uint8)
    small[max(0, cy - r):cy + r, max(0, cx - r):cx + r] = 1
    return np.kron(small, np.ones((SCALE, SCALE), np.uint8))


def write_pie_folder(root: Path, entries=ENTRIES) -> Path:
    """root/mapping_file.json and root/annotation_images/... as PIE-Bench lays them out."""
    mapping = {}
    for key, where, kind, scene, original, editing, blended in entries:
        picture = np.kron(render(scene), np.ones((SCALE, SCALE, 1), np.uint8))  # (512, 512, 3)
        path = root / "annotation_images" / where / f"{key}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(path, quality=95)
        mapping[key] = {"image_path": f"{where}/{key}.jpg", "original_prompt": original, "editing_prompt": editing,
                        "editing_instruction": "", "editing_type_id": kind, "blended_word": blended,
                        "mask": rle(object_box(scene))}
    (root / "mapping_file.json").write_text(json.dumps(mapping))
    return root
