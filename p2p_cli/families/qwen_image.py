"""Qwen-Image (QwenImagePipeline)."""

from __future__ import annotations

# QwenImagePipeline's prompt template and the number of its first tokens the pipeline drops (the system prefix)
TEMPLATE = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial"
            " relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
            "<|im_start|>assistant\n")
DROP = 34
