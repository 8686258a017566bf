"""The study's pictures: one style and the result plots (`plots`), the RoPE analysis plots
(`rope_plots`), the walkthrough's teaching pictures (`teaching`) and the interactive RoPE explorer
(`explorer`: its figure; `widgets`: its controls)."""
