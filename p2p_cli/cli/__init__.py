"""The `p2p` command line: one thin module per command (the only package that imports typer)."""
