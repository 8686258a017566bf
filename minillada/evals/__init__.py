"""Long-context evaluations of a masked-diffusion LM, each returning a tidy `pandas.DataFrame`.

- `evals.models`: the models under comparison (`ModelAtLength`, `rope_variants`, `fixed_model`).
- `evals.perplexity`: LongLLaDA's chunked PPL beside LLaDA's unbiased bound, and the paired
  masked-diffusion loss grid (the cheap, robust primary metric).
- `evals.retrieval`: passkey / NIAH / RULER-style grids scored from generated text or by
  likelihood, resumable; chance levels; re-binning by needle distance (local perception).
- `evals.leakage`: attention mass that crosses document boundaries.

Tables that survive interruption live in `minillada.claims.table_cache`.
"""
