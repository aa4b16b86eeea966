"""What the attention processors apply: the edit maths, the attention store, local blend."""
