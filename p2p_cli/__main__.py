"""`python -m p2p_cli` is the `p2p` command."""

from p2p_cli.cli.main import main

main()
