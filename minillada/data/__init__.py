"""What the model reads: corpora and the tokenizer (`corpus`), tokenized splits cached on disk
(`token_cache`), retrieval keys (`keys`), synthetic long-context tasks (`tasks`) and documents
packed into rows under each packing strategy (`packing`)."""
