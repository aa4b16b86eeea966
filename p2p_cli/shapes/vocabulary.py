"""The words of the bundled shapes models' training captions: what `p2p` warns about when a recipe for a bundled
model uses a word outside them. The world that draws the scenes (lab/shapes/world.py) takes its names from here."""

from __future__ import annotations

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
BACKGROUNDS = ("white", "black", "gray")
SIZES = ("small", "big")
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
JOINING = ("a", "and", "on", "background")  # the caption's own words around the objects
