"""p2p: Prompt-to-Prompt image editing (Hertz et al., ICLR 2023) from the command line."""

__version__ = "0.1.0"
