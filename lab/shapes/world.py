"""A tiny world of flat shapes on a plain background: scene sampling and rendering (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from p2p_cli.shapes.vocabulary import SHAPES

SIDE = 64  # image side in pixels
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
    cx: float = -1  # centre in pixels (-1: the anchor, no jitter)
    cy: float = -1
    radius: float = -1  # half the bounding-box side in pixels (-1: SIZES[size]); the wide world sets it

    def centre(self) -> tuple[int, int]:
        """(x, y) of the centre in pixels, the anchor when none was set."""
        row, col = divmod(POSITIONS.index(self.position), 3)
        return (ANCHORS[col] if self.cx < 0 else self.cx, ANCHORS[row] if self.cy < 0 else self.cy)


    def r(self) -> float:
        """Half the bounding-box side in pixels."""
        return SIZES[self.size] if self.radius < 0 else self.radius


@dataclass
class Scene:
    """Non-overlapping objects on a background: one or two in reading order of their positions (the grid
    world), or one to three in any order (the wide world, see sample_wide_scene)."""

    objects: list[Obj] = field(default_factory=list)
    background: str = "white"
    places: bool = True  # whether the caption names each object's place (the wide world leaves some out)


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
        img[shape_mask(o.shape, cx, cy, o.r())] = COLOURS[o.colour]
    return img


def _apart(a: Obj, b: Obj) -> bool:
    """True when the bounding boxes of a and b are at least GAP pixels apart."""
    (ax, ay), (bx, by) = a.centre(), b.centre()
    need = a.r() + b.r() + GAP
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


# The wide world. In the grid world the caption names one of nine anchors, so the text alone pins the layout
# and any noise lands the object in place. Here sizes and centres vary continuously, a scene holds one to three
# objects, and half the captions name no place at all: then the object may be anywhere on the canvas, and only
# the noise (or Prompt-to-Prompt's control) decides where. A named place is the 3x3 cell holding the centroid of
# the drawn pixels (a triangle's lies below its box centre), as the oracle reads it.
# The grid world's pictures are wide-world pictures too (anchors +- JITTER lie inside their cells; radii 7 and
# 12 lie inside the small and big ranges), so a model trained here can be measured on the grid world's lines.
WIDE_RADII = {"small": (5.0, 8.0), "big": (11.0, 13.0)}  # kept apart so the oracle's size reading is unambiguous
WIDE_COUNTS = (0.45, 0.35, 0.2)  # probability of 1, 2, 3 objects
WIDE_PLACES = 0.5  # share of captions that name every object's place


def cell(x: float, y: float) -> str:
    """The name of the 3x3 grid cell holding the point (x, y) in pixels."""
    col = min(2, max(0, int(x * 3 // SIDE)))
    row = min(2, max(0, int(y * 3 // SIDE)))
    return POSITIONS[3 * row + col]


def _draw_wide_object(rng: np.random.Generator) -> Obj:
    size = list(SIZES)[rng.integers(len(SIZES))]
    r = float(rng.uniform(*WIDE_RADII[size]))
    cx, cy = rng.uniform(r + 1, SIDE - r - 1, size=2)
    shape = SHAPES[rng.integers(len(SHAPES))]
    ys, xs = np.nonzero(shape_mask(shape, cx, cy, r))
    return Obj(  # the place is the cell of the drawn pixels' centroid, where the oracle reads it
        shape=shape, colour=list(COLOURS)[rng.integers(len(COLOURS))], size=size,
        position=cell(xs.mean() + 0.5, ys.mean() + 0.5), cx=float(cx), cy=float(cy), radius=r,
    )  # fmt: skip


def _draw_wide_scene(rng: np.random.Generator, keep, places: bool | None = None,
                     counts: tuple[float, ...] = WIDE_COUNTS) -> Scene:
    """A random wide scene whose objects all pass keep(obj); places None: drawn (WIDE_PLACES); counts: the
    probability of 1, 2, 3 objects."""
    n = 1 + int(rng.choice(len(counts), p=counts))
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    named = bool(rng.random() < WIDE_PLACES) if places is None else places
    while True:
        objs: list[Obj] = []
        for _ in range(50 * n):
            o = _draw_wide_object(rng)
            if keep(o) and all(_apart(o, p) for p in objs):
                objs.append(o)
                if len(objs) == n:
                    return Scene(objs, background, places=named)


def sample_wide_scene(rng: np.random.Generator, counts: tuple[float, ...] = WIDE_COUNTS) -> Scene:
    """A wide-world training scene, never containing an object whose (shape, colour, cell) is held out; counts:
    the probability of 1, 2, 3 objects (a training run may weight the crowded scenes more than the world does)."""
    return _draw_wide_scene(rng, lambda o: not is_heldout(o), counts=counts)


MIXED_GRID = 0.5  # share of the mixed world's scenes drawn from the grid world


def sample_mixed_scene(rng: np.random.Generator) -> Scene:
    """A training scene from the grid world (MIXED_GRID of them) or the wide one: a model trained on the grid
    world learns captions without places and continuous layouts while still seeing what it was good at."""
    return sample_scene(rng) if rng.random() < MIXED_GRID else sample_wide_scene(rng)


def sample_grid_unplaced_scene(rng: np.random.Generator) -> Scene:
    """A grid-world training scene whose caption names no place half the time (WIDE_PLACES): the layouts stay on
    the nine cells the place words bind to, only the text stops pinning them."""
    scene = sample_scene(rng)
    return replace(scene, places=bool(rng.random() < WIDE_PLACES))


def wide_heldout_scenes(n: int = 100, seed: int = 0, places: bool = False) -> list[Scene]:
    """n wide scenes each with at least one held-out object (its (shape, colour, cell) never drawn in training);
    places False: captions without place words (the text no longer pins the layout)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        scene = _draw_wide_scene(rng, lambda o: True, places=places)
        if any(is_heldout(o) for o in scene.objects):
            out.append(scene)
    return out
