"""The engine: edit plan, control maths, attention processors, sampler, the batched edit, inversion, model families."""
