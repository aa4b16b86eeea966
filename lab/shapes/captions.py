"""Deterministic English captions for scenes, e.g. "a big red circle on the left on a white background"."""

from __future__ import annotations

from .world import Obj, Scene

PLACE = {  # position -> phrase; one-word swaps between phrases keep token counts equal where they can
    "top left": "in the top left",
    "top": "at the top",
    "top right": "in the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "in the bottom left",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right",
}


def describe(o: Obj, place: bool = True) -> str:
    """'a big red circle on the left' ('a big red circle' without the place)."""
    return f"a {o.size} {o.colour} {o.shape} {PLACE[o.position]}" if place else f"a {o.size} {o.colour} {o.shape}"


def caption(scene: Scene, background: bool = True) -> str:
    """The scene's caption: its objects in order joined by 'and' (with their places when scene.places), then the
    background (unless omitted)."""
    objects = " and ".join(describe(o, scene.places) for o in scene.objects)
    return f"{objects} on a {scene.background} background" if background else objects
