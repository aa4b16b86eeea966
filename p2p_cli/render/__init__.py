"""Pictures from tensors: PNG files, labelled grids (the only package that imports PIL)."""
