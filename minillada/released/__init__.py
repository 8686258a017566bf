"""LLaDA's released checkpoint format, in and out: its config and weights loaded and checked
(`llada`), a model folder's files (`model_files`), the token roles of its tokenizer
(`token_roles`), each rank's shard (`sharded_load`) and the export of a post-trained model
(`export`)."""
