"""The mask predictor: a LLaDA-style bidirectional Transformer in Hugging Face conventions.

Pre-norm blocks x + attn(rms(x)), x + swiglu(rms(x)); RoPE from `minillada.rope` (the variant is
configuration, swappable with `set_rope` or at load time); attention restricted to documents by
`minillada.modeling.attention`; untied output head; no biases unless `include_qkv_bias`. With
`activation_checkpointing` each block's activations are recomputed in backward instead of stored
(training only; for long sequences). Under context parallelism (`context_parallel`, set from
outside by `modeling.context_parallel.apply_context_parallel`) the model is given this rank's
shard of each row and its attention gathers the whole row's keys and values. Config fields and
weight names are LLaDA's, so the same class holds a LLaDA-8B checkpoint:

    model.transformer.wte
    model.transformer.blocks.{i}.{attn_norm, q_proj, k_proj, v_proj, attn_out,
                                  ff_norm, ff_proj (gate), up_proj, ff_out}
    model.transformer.ln_f
    model.transformer.ff_out                    (the output head)
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import MaskedLMOutput

from minillada.modeling.attention import DocumentMask, build_document_mask, masked_attention
from minillada.modeling.context_parallel import ContextParallel
from minillada.modeling.masked_loss import DEFAULT_CHUNK, chunked_cross_entropy
from minillada.modeling.model_shape import check_model_shape, model_fields
from minillada.rope.laws import compute_rope
from minillada.rope.rotary import RotaryEmbedding, apply_rotary


class LLaDAConfig(PretrainedConfig):
    """LLaDA's configuration fields, plus the RoPE variant and the attention backend.

    `max_sequence_length` is the pre-training length T_train that RoPE variants extend from;
    `rope_variant`/`rope_target_len`/`rope_params` select a variant of `minillada.rope`;
    `activation_checkpointing` recomputes each block in backward (saves only block inputs).
    """

    model_type = "llada"

    def __init__(
        self,
        vocab_size: int = 2048,
        d_model: int = 256,
        n_heads: int = 4,
        n_kv_heads: int | None = None,
        n_layers: int = 4,
        mlp_hidden_size: int = 768,
        max_sequence_length: int = 128,
        rope_theta: float = 10000.0,
        rope_variant: str = "default",
        rope_target_len: int | None = None,
        rope_params: dict[str, Any] | None = None,
        include_qkv_bias: bool = False,
        attention_backend: str = "per_document",
        activation_checkpointing: bool = False,
        rms_norm_eps: float = 1e-5,
        init_std: float = 0.02,
        mask_token_id: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
        tie_word_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        self.vocab_size, self.d_model, self.n_layers = vocab_size, d_model, n_layers
        self.n_heads = n_heads
        self.n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        self.mlp_hidden_size, self.max_sequence_length = mlp_hidden_size, max_sequence_length
        self.rope_theta, self.rope_variant = float(rope_theta), rope_variant
        self.rope_target_len, self.rope_params = rope_target_len, dict(rope_params or {})
        self.include_qkv_bias, self.attention_backend = include_qkv_bias, attention_backend
        self.activation_checkpointing = bool(activation_checkpointing)
        self.rms_norm_eps, self.init_std = rms_norm_eps, init_std
        self.mask_token_id = mask_token_id
        super().__init__(
            tie_word_embeddings=tie_word_embeddings,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            **kwargs,
        )
        self.validate_shapes()

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate_shapes(self) -> None:
        """Raise ValueError naming any field that cannot build a model (`check_model_shape`)."""
        check_model_shape({name: getattr(self, name) for name in model_fields()})


class LLaDABlock(nn.Module):
    """One pre-norm block: bidirectional (document-masked) attention, then a SwiGLU MLP."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        d, head_dim, bias = config.d_model, config.head_dim, config.include_qkv_bias
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, head_dim
        self.attn_norm = nn.RMSNorm(d, eps=config.rms_norm_eps)
        self.q_proj = nn.Linear(d, config.n_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(d, config.n_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(d, config.n_kv_heads * head_dim, bias=bias)
        self.attn_out = nn.Linear(config.n_heads * head_dim, d, bias=False)
        self.ff_norm = nn.RMSNorm(d, eps=config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)  # the gate
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=False)

    def _heads(self, x: torch.Tensor, n_heads: int) -> torch.Tensor:
        return x.view(*x.shape[:2], n_heads, self.head_dim).transpose(1, 2)  # [B, H, L, D]

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor,
             sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.attn_norm(x)
        q = apply_rotary(self._heads(self.q_proj(h), self.n_heads), cos, sin)
        k = apply_rotary(self._heads(self.k_proj(h), self.n_kv_heads), cos, sin)
        return q, k, self._heads(self.v_proj(h), self.n_kv_heads)

    def attention_probs(self, x: torch.Tensor, cos: torch.Tensor,
                        sin: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T / sqrt(D)) [B, H, L, L] of full (unmasked) attention for the block's
        input x: what each query would attend to if no document mask held it back."""
        q, k, _ = self._qkv(x, cos, sin)
        k = k.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
        return torch.softmax(q.float() @ k.float().transpose(-1, -2) / self.head_dim**0.5, dim=-1)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: DocumentMask | None,
    ) -> torch.Tensor:
        q, k, v = self._qkv(x, cos, sin)
        attended = masked_attention(q, k, v, mask).transpose(1, 2).flatten(2)
        x = x + self.attn_out(attended)
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


class LLaDAModel(nn.Module):
    """The trunk, in a `transformer` dict as LLaDA names it, plus the rotary tables."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.vocab_size, config.d_model),
                "blocks": nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
                "ln_f": nn.RMSNorm(config.d_model, eps=config.rms_norm_eps),
                "ff_out": nn.Linear(config.d_model, config.vocab_size, bias=False),
            }
        )
        self.rotary = RotaryEmbedding(
            config.head_dim,
            config.rope_theta,
            config.max_sequence_length,
            config.rope_variant,
            config.rope_target_len,
            config.rope_params,
        )


class LLaDAModelLM(PreTrainedModel):
    """Mask predictor: token ids (+ positions, document ids) -> logits over the vocabulary."""

    config_class = LLaDAConfig
    base_model_prefix = "model"
    # Tied only with config.tie_word_embeddings (LLaDA's `weight_tying`; off for LLaDA-8B).
    _tied_weights_keys: ClassVar[dict[str, str]] = {
        "model.transformer.ff_out.weight": "model.transformer.wte.weight"}
    _no_split_modules: ClassVar[list[str]] = ["LLaDABlock"]
    # forward takes `scored`: evaluations ask for logits only where they score
    # (`diffusion.scored_logits`); a model without this flag is given whole rows.
    supports_scored: ClassVar[bool] = True
    # Context parallelism's group (`context_parallel.apply_context_parallel`); None: whole rows.
    context_parallel: ContextParallel | None = None

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def get_output_embeddings(self) -> nn.Linear:
        return self.model.transformer.ff_out

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' default (normal(0, init_std) for linear and embedding weights, ones for
        norms), plus the RoPE table: from_pretrained builds the model on the meta device, and a
        non-persistent buffer is not in the checkpoint, so it is recomputed here."""
        super()._init_weights(module)
        if isinstance(module, RotaryEmbedding):
            inv_freq, _ = compute_rope(
                module.variant,
                module.head_dim,
                module.base,
                module.train_len,
                module.target_len,
                module.params,
            )
            init.copy_(module.inv_freq, inv_freq)

    def set_rope(
        self, variant: str, target_len: int | None = None, params: dict[str, Any] | None = None
    ) -> None:
        """Swap the RoPE variant in place (and in the config, so it is saved); weights untouched."""
        params, c = dict(params or {}), self.config
        # Built (so validated) before anything changes: a refused variant leaves the model as is.
        rotary = RotaryEmbedding(
            c.head_dim, c.rope_theta, c.max_sequence_length, variant, target_len, params
        )
        self.model.rotary = rotary.to(self.model.transformer.wte.weight.device)
        c.rope_variant, c.rope_target_len, c.rope_params = variant, target_len, params

    def _validate(
        self, input_ids: torch.Tensor, positions: torch.Tensor | None, doc_ids: torch.Tensor | None
    ) -> None:
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"input_ids must be an integer tensor [B, L], got {input_ids.dtype} of shape "
                f"{tuple(input_ids.shape)}"
            )
        vocab = self.config.vocab_size
        outside = input_ids[(input_ids < 0) | (input_ids >= vocab)]
        if outside.numel():
            raise ValueError(f"token id {int(outside[0])} is outside the vocabulary [0, {vocab})")
        for name, tensor in (("positions", positions), ("doc_ids", doc_ids)):
            if tensor is not None and tensor.shape != input_ids.shape:
                raise ValueError(
                    f"{name} shape {tuple(tensor.shape)} must equal input_ids shape "
                    f"{tuple(input_ids.shape)}"
                )
        if positions is not None and positions.numel() and int(positions.min()) < 0:
            raise ValueError(f"positions must be >= 0, got {int(positions.min())}")

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
        scored: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        label_weights: torch.Tensor | None = None,
        loss_chunk: int = DEFAULT_CHUNK,
    ) -> MaskedLMOutput:
        """input_ids, positions (default arange), doc_ids (None: full attention): [B, L] each.

        Logits [B, L, V] by default. With `scored` ([B, L] bool) the head runs only at those
        positions: logits [N, V] in `logits[scored]` order; adding `labels` and `label_weights`
        ([N] each) returns instead `loss` = sum_i w_i CE_i computed `loss_chunk` positions at a
        time (`masked_loss.chunked_cross_entropy`), inside forward so that a sharded model's
        head is gathered for it.
        """
        self._validate(input_ids, positions, doc_ids)
        if scored is not None and (scored.shape != input_ids.shape or scored.dtype != torch.bool):
            raise ValueError(f"scored must be a bool tensor of shape {tuple(input_ids.shape)}, "
                             f"got {scored.dtype} of shape {tuple(scored.shape)}")
        if (labels is None) != (label_weights is None) or (labels is not None and scored is None):
            raise ValueError("labels and label_weights go together, and with scored")
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        cos, sin = self.model.rotary(positions)  # float32 even under autocast
        mask = build_document_mask(doc_ids, self.config.attention_backend, self.context_parallel)
        transformer = self.model.transformer
        x = transformer.wte(input_ids)
        # Recompute each block in backward: only its input x stays saved per layer.
        recompute = (self.config.activation_checkpointing and self.training
                     and torch.is_grad_enabled())
        for block in transformer.blocks:
            x = (checkpoint(block, x, cos, sin, mask, use_reentrant=False) if recompute
                 else block(x, cos, sin, mask))
        if scored is None:
            return MaskedLMOutput(logits=transformer.ff_out(transformer.ln_f(x)))
        hidden = transformer.ln_f(x[scored])
        if labels is None:
            return MaskedLMOutput(logits=transformer.ff_out(hidden))
        return MaskedLMOutput(loss=chunked_cross_entropy(
            hidden, transformer.ff_out.weight, labels, label_weights, loss_chunk))
