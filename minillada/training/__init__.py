"""One training run: what it is (`config`, its presets, typed fields and schedules), the rows of
each step (`batches`, `packed_corpus`), held-out validation (`heldout`), the loop (`trainer`), the
run folder and checkpoints (`checkpoint`), precision, wall time, throughput, memory on paper and
metric tracking."""
