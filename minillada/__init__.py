"""minillada: context-window extension of masked-diffusion language models, at laptop scale."""

__version__ = "0.1.0"
