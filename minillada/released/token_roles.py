"""The token roles a released LLaDA checkpoint post-trains with: mask, document separator, padding.

A LLaDA checkpoint names its roles in config.json (LLaDA-8B: `mask_token_id` 126336
`<|mdm_mask|>`, `eos_token_id` 126081 `<|endoftext|>`, `pad_token_id` 126081) and partly in its
tokenizer files (which name no mask token). Post-training uses those ids: packed documents are
separated by the checkpoint's own end-of-text token, an embedding row it was trained with, never a
new `<|eod|>`. The tokenizer is the checkpoint's own, with the roles named the way minillada's
code reads them (`mask_token_id`, `eod_token_id`, `pad_token_id`); no token is added.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerFast

from minillada.released.model_files import read_model_config

# role -> (config.json field, tokenizer attribute) where it is looked for, in that order.
ROLE_SOURCES = {"mask": ("mask_token_id", "mask_token_id"),
                "separator": ("eos_token_id", "eos_token_id"),
                "pad": ("pad_token_id", "pad_token_id")}


@dataclass(frozen=True)
class TokenRoles:
    """Token ids: `mask` (the forward process's mask), `separator` (end of text: ends each packed
    document under the eod packings), `pad` (fills a row's tail)."""

    mask: int
    separator: int
    pad: int


def token_roles(fields: Mapping[str, Any], tokenizer: PreTrainedTokenizerFast,
                where: str = "the checkpoint") -> TokenRoles:
    """Each role from config.json `fields`, else from the tokenizer; ValueError naming a role
    found in neither, an id that is not a token of the tokenizer, or a mask that is also the
    separator or the padding."""
    ids: dict[str, int] = {}
    for role, (field, attribute) in ROLE_SOURCES.items():
        value = fields.get(field)
        if value is None:
            value = getattr(tokenizer, attribute, None)
        if value is None:
            raise ValueError(f"{where} names no {role} token: config.json has no {field} and the "
                             f"tokenizer no {attribute}; add {field} to config.json")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(tokenizer):
            raise ValueError(f"{where}: {field} {value!r} is not a token id of its tokenizer "
                             f"[0, {len(tokenizer)})")
        ids[role] = value
    if ids["mask"] in (ids["separator"], ids["pad"]):
        raise ValueError(f"{where}: the mask token {ids['mask']} is also the separator or the "
                         "padding; a mask must be a token of its own")
    return TokenRoles(**ids)


def load_released_tokenizer(folder: str | os.PathLike
                            ) -> tuple[PreTrainedTokenizerFast, TokenRoles]:
    """A checkpoint folder's own tokenizer (tokenizer.json) with the roles of its config.json."""
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {str(folder)!r}: post-training a released "
                                "checkpoint needs its own tokenizer beside its weights")
    fields = read_model_config(folder)
    plain = PreTrainedTokenizerFast.from_pretrained(folder)
    roles = token_roles(fields, plain, str(folder))
    names = plain.convert_ids_to_tokens([roles.mask, roles.separator, roles.pad])
    tokenizer = PreTrainedTokenizerFast.from_pretrained(
        folder, mask_token=names[0], pad_token=names[2],
        extra_special_tokens={"eod_token": names[1]})
    return tokenizer, roles
