"""A tiny world of flat shapes on a plain background: scene sampling and rendering (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SIDE = 64  # image side in pixels

SHAPES = ("circle", "square", "triangle")
COLOURS = {  # object colours, far apart from each other and from every background
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 200, 40),
}
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
SIZES = {"small": 7, "big": 12}  # "radius": half the bounding-box side, in pixels

# 3x3 grid of anchors (row, column) -> name; the name is also how captions and the oracle speak of it.
ANCHORS = (14, 32, 50)  # pixel centre of each row/column
JITTER = 2  # +- pixels around the anchor
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip
GAP = 2  # minimum empty pixels between the bounding boxes of two objects


@dataclass(frozen=True)
class Obj:
    """One flat shape: what it is, its colour, its size name, its grid position and its exact centre."""

    shape: str
    colour: str
    size: str
    position: str
    cx: int = -1  # centre in pixels (-1: the anchor, no jitter)
    cy: int = -1

    def centre(self) -> tuple[int, int]:
        """(x, y) of the centre in pixels, the anchor when none was set."""
        row, col = divmod(POSITIONS.index(self.position), 3)
        return (ANCHORS[col] if self.cx < 0 else self.cx, ANCHORS[row] if self.cy < 0 else self.cy)


@dataclass
class Scene:
    """One or two non-overlapping objects, in reading order of their positions, on a background."""

    objects: list[Obj] = field(default_factory=list)
    background: str = "white"


def shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """(64, 64) bool mask of a shape with bounding box [cx-r, cx+r] x [cy-r, cy+r] (pixel centres at i+0.5)."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] + 0.5  # (2, 64, 64)
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        h = 0.9 * r  # a little smaller, so a square does not look bigger than a circle of the same size
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "triangle":  # apex up, base at the bottom of the box
        return (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene) -> np.ndarray:
    """The scene as a (64, 64, 3) uint8 RGB picture, crisp edges."""
    img = np.empty((SIDE, SIDE, 3), np.uint8)
    img[:] = BACKGROUNDS[scene.background]
    for o in scene.objects:
        cx, cy = o.centre()
        img[shape_mask(o.shape, cx, cy, SIZES[o.size])] = COLOURS[o.colour]
    return img


def _apart(a: Obj, b: Obj) -> bool:
    """True when the bounding boxes of a and b are at least GAP pixels apart."""
    (ax, ay), (bx, by) = a.centre(), b.centre()
    need = SIZES[a.size] + SIZES[b.size] + GAP
    return abs(ax - bx) >= need or abs(ay - by) >= need


def _draw_object(rng: np.random.Generator, position: str) -> Obj:
    row, col = divmod(POSITIONS.index(position), 3)
    jx, jy = rng.integers(-JITTER, JITTER + 1, size=2)
    return Obj(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=list(COLOURS)[rng.integers(len(COLOURS))],
        size=list(SIZES)[rng.integers(len(SIZES))],
        position=position,
        cx=int(ANCHORS[col] + jx),
        cy=int(ANCHORS[row] + jy),
    )


def _draw_scene(rng: np.random.Generator, keep) -> Scene:
    """A random scene (1 or 2 objects, equally likely) whose objects all pass keep(obj)."""
    n = 1 + int(rng.integers(2))
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    while True:
        spots = sorted(rng.choice(len(POSITIONS), size=n, replace=False))
        objs = [_draw_object(rng, POSITIONS[i]) for i in spots]
        if all(keep(o) for o in objs) and (n == 1 or _apart(objs[0], objs[1])):
            return Scene(objs, background)


# Held-out rule: these (shape, colour, position) triples never appear in a training scene, in either slot.
HELDOUT = frozenset({
    ("triangle", "yellow", "top left"),
    ("circle", "blue", "bottom right"),
    ("square", "green", "center"),
    ("circle", "red", "top"),
    ("square", "yellow", "bottom left"),
    ("triangle", "blue", "right"),
    ("circle", "green", "left"),
    ("square", "red", "top right"),
})  # fmt: skip


def is_heldout(o: Obj) -> bool:
    """True when the object's (shape, colour, position) is one the training sampler never draws."""
    return (o.shape, o.colour, o.position) in HELDOUT


def sample_scene(rng: np.random.Generator) -> Scene:
    """A training scene: random, never containing a held-out (shape, colour, position) triple."""
    return _draw_scene(rng, lambda o: not is_heldout(o))


def heldout_scenes(n: int = 100, seed: int = 0) -> list[Scene]:
    """n scenes each with at least one held-out object, so their captions never occur in training."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        scene = _draw_scene(rng, lambda o: True)
        if any(is_heldout(o) for o in scene.objects):
            out.append(scene)
    return out
