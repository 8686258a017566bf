"""Rotary position embeddings: every variant's law in one registry (`laws`), the closed forms the
laws share (`formulas`), checks of plain RoPE numbers (`checks`), the rotary module (`rotary`) and
what a setting does to the angles (`analysis`)."""
