"""Deterministic English captions for scenes, e.g. "a big red circle on the left on a white background"."""

from __future__ import annotations

from p2p_cli.shapes.vocabulary import PLACE

from .world import Obj, Scene

__all__ = ["PLACE", "caption", "describe"]


def describe(o: Obj, place: bool = True) -> str:
    """'a big red circle on the left' ('a big red circle' without the place)."""
    return f"a {o.size} {o.colour} {o.shape} {PLACE[o.position]}" if place else f"a {o.size} {o.colour} {o.shape}"


def caption(scene: Scene, background: bool = True) -> str:
    """The scene's caption: its objects in order joined by 'and' (with their places when scene.places), then the
    background (unless omitted)."""
    objects = " and ".join(describe(o, scene.places) for o in scene.objects)
    return f"{objects} on a {scene.background} background" if background else objects
