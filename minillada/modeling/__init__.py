"""The mask predictor and its objective: document-masked attention (`attention`), the model
(`model`, its fields and checks torch-free in `model_shape`), the chunked masked loss
(`masked_loss`), LLaDA's forward process, likelihood and sampler (`diffusion`), and one model on
many processes (`distributed`: ranks and FSDP2, applied from outside the model)."""
