"""Read a shapes picture back: objects as connected non-background regions, with colour, shape, size, position."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .world import ANCHORS, BACKGROUNDS, COLOURS, POSITIONS, SIDE, SIZES, Scene

FG_DISTANCE = 60.0  # RGB distance from the background above which a pixel belongs to an object
MIN_AREA = 20  # smaller regions are noise
BIG_SIDE = SIZES["small"] + SIZES["big"]  # bounding-box side (px) from which an object counts as big


@dataclass
class Found:
    """One object the oracle sees."""

    mask: np.ndarray  # (64, 64) bool
    centroid: tuple[float, float]  # (x, y) in pixels
    area: int
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    colour: tuple[float, float, float]  # mean RGB
    colour_name: str
    shape: str
    size: str
    position: str


def estimate_background(img: np.ndarray) -> np.ndarray:
    """The most common colour on the border (colours binned to 16 levels), as a mean RGB (3,)."""
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).astype(np.float64)  # (256, 3)
    bins = (border // 16).astype(np.int64) @ np.array([256, 16, 1])
    mode = np.bincount(bins).argmax()
    return border[bins == mode].mean(0)


def nearest(rgb, names: dict[str, tuple[int, int, int]]) -> str:
    """The name whose RGB value is closest to rgb."""
    return min(names, key=lambda n: float(np.sum((np.asarray(rgb, float) - names[n]) ** 2)))


def components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected regions of a (H, W) bool mask, each as a bool mask."""
    h, w = mask.shape
    label = np.zeros((h, w), np.int32)
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if label[y0, x0]:
            continue
        n = len(out) + 1
        label[y0, x0] = n
        stack = [(y0, x0)]
        while stack:
            y, x = stack.pop()
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not label[yy, xx]:
                    label[yy, xx] = n
                    stack.append((yy, xx))
        out.append(label == n)
    return out


def classify_shape(mask: np.ndarray, bbox: tuple[int, int, int, int]) -> str:
    """Triangle when the top third is much narrower than the bottom third, else square by bbox fill ratio."""
    x0, y0, x1, y1 = bbox
    box = mask[y0:y1, x0:x1]
    widths = box.sum(1)  # (h,) pixels per row
    third = max(1, len(widths) // 3)
    if widths[:third].mean() < 0.6 * widths[-third:].mean():  # circle/square ~1, triangle ~1/3
        return "triangle"
    fill = box.mean()  # square ~1.0, circle ~0.785, triangle ~0.5
    return "square" if fill > 0.89 else "circle" if fill > 0.62 else "triangle"


def position_name(x: float, y: float) -> str:
    """The 3x3 grid cell holding (x, y)."""
    col = min(2, max(0, int(x * 3 // SIDE)))
    row = min(2, max(0, int(y * 3 // SIDE)))
    return POSITIONS[3 * row + col]


def read(img: np.ndarray, background=None) -> list[Found]:
    """Every object in a (64, 64, 3) uint8 picture, in reading order (row, then column, of the centroid)."""
    bg = estimate_background(img) if background is None else np.asarray(BACKGROUNDS.get(background, background))
    dist = np.sqrt(((img.astype(np.float64) - bg) ** 2).sum(-1))  # (64, 64)
    found = []
    for m in components(dist > FG_DISTANCE):
        area = int(m.sum())
        if area < MIN_AREA:
            continue
        ys, xs = np.nonzero(m)
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        cx, cy = float(xs.mean() + 0.5), float(ys.mean() + 0.5)
        rgb = tuple(img[m].astype(np.float64).mean(0))
        side = max(bbox[2] - bbox[0], bbox[3] - bbox[1])
        found.append(Found(
            mask=m, centroid=(cx, cy), area=area, bbox=bbox, colour=rgb, colour_name=nearest(rgb, COLOURS),
            shape=classify_shape(m, bbox), size="big" if side >= BIG_SIDE else "small",
            position=position_name(cx, cy),
        ))  # fmt: skip
    return sorted(found, key=lambda f: (POSITIONS.index(f.position), f.centroid[1], f.centroid[0]))


ATTRIBUTES = ("colour", "shape", "size", "position")


def check(scene: Scene, img: np.ndarray) -> dict[str, float]:
    """Fraction of the scene's objects whose colour, shape, size, position the oracle reads correctly in img.

    Each expected object is matched to the found object nearest its grid anchor (a wide-world object: its centre); "count" is 1.0 when the number
    of objects found equals the number expected, and "background" 1.0 when the border matches the named one.
    """
    found = read(img)
    score = dict.fromkeys(ATTRIBUTES, 0.0)
    for o in scene.objects:
        if not found:
            break
        if o.radius >= 0:  # a wide-world object: its own centre (it may lie anywhere in its cell)
            ax, ay = o.centre()
        else:
            row, col = divmod(POSITIONS.index(o.position), 3)
            ax, ay = ANCHORS[col], ANCHORS[row]
        f = min(found, key=lambda f: (f.centroid[0] - ax) ** 2 + (f.centroid[1] - ay) ** 2)
        score["colour"] += f.colour_name == o.colour
        score["shape"] += f.shape == o.shape
        score["size"] += f.size == o.size
        score["position"] += f.position == o.position
    n = len(scene.objects)
    score = {k: v / n for k, v in score.items()}
    score["count"] = float(len(found) == n)
    score["background"] = float(nearest(estimate_background(img), BACKGROUNDS) == scene.background)
    return score


def match_unplaced(scene: Scene, found: list[Found]) -> list[Found | None]:
    """For each of the scene's objects, a distinct found object of its colour (of its shape, then its size, too
    where one is; the largest of equals), or None: how to pair objects whose caption names no place (they may be
    anywhere)."""
    left, out = list(found), []
    for o in scene.objects:
        same = [f for f in left if f.colour_name == o.colour]
        f = max(same, key=lambda f: (f.shape == o.shape, f.size == o.size, f.area)) if same else None
        if f is not None:
            left = [g for g in left if g is not f]
        out.append(f)
    return out


def check_unplaced(scene: Scene, img: np.ndarray) -> dict[str, float]:
    """check() for a caption without places: each object is paired with a found one of its colour
    (match_unplaced); "colour" is the share paired, "shape" and "size" the shares of paired ones read right
    among all objects, "count" and "background" as in check()."""
    found = read(img)
    pairs = match_unplaced(scene, found)
    n = len(scene.objects)
    return {
        "colour": sum(f is not None for f in pairs) / n,
        "shape": sum(f is not None and f.shape == o.shape for o, f in zip(scene.objects, pairs)) / n,
        "size": sum(f is not None and f.size == o.size for o, f in zip(scene.objects, pairs)) / n,
        "count": float(len(found) == n),
        "background": float(nearest(estimate_background(img), BACKGROUNDS) == scene.background),
    }
