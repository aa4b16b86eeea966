"""The shapes world of the bundled models: scene generator, captions, oracle, training, evaluation and export.
The trained weights and their loading live in the package (p2p_cli/shapes)."""
