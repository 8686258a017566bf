"""`minillada prepare`: tokenize a corpus once, in this one process, into the token cache that
every training process memory-maps (`minillada.data.token_cache`), keyed by the corpus bytes,
the tokenizer and the split seed.

    minillada prepare --corpus books.jsonl --tokenizer /path/to/LLaDA-8B-Base
    minillada prepare --preset cpu      # the standard library, the cpu preset's BPE tokenizer

A run under torchrun refuses to start without it, naming the command for its corpus and
tokenizer; a single process prepares a missing cache itself. A cache already prepared is checked
(every file against the sha256 its manifest records) and left as it is; a damaged one is written
again.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from minillada.common.names import STDLIB
from minillada.released.model_files import model_folder
from minillada.training.presets import PRESETS, get_preset

TRAINED_PRESETS = sorted(name for name, preset in PRESETS.items() if not preset.released)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare", help="tokenize a corpus once into the token cache training reads",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=STDLIB,
                        help="'stdlib' (default), a folder of .txt or a .jsonl file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tokenizer", type=Path, metavar="FOLDER",
                        help="the model folder (or run folder) whose tokenizer.json the run "
                        "reads: a released LLaDA checkpoint (train --init) or a minillada model")
    source.add_argument("--preset", choices=TRAINED_PRESETS,
                        help="the BPE tokenizer this preset's pre-training trains on the corpus")
    parser.add_argument("--vocab-size", type=int,
                        help="with --preset: the BPE vocabulary (default the preset's)")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="the run's split_seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ValueError("minillada prepare tokenizes in one process: run it without torchrun, "
                         "then start the run with torchrun")
    if args.corpus != STDLIB and not Path(args.corpus).exists():
        raise FileNotFoundError(f"corpus {args.corpus!r} does not exist")
    if args.vocab_size is not None and args.preset is None:
        raise ValueError("--vocab-size sizes the BPE tokenizer of --preset; a --tokenizer folder "
                         "has its own vocabulary")
    folder = model_folder(args.tokenizer) if args.tokenizer is not None else None
    if folder is not None and not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {str(folder)!r}: give the model folder "
                                "whose tokenizer the run reads")
    from minillada.data.token_cache import prepare_token_cache, read_manifest

    tokenizer = (folder_tokenizer(folder) if folder is not None else
                 preset_tokenizer(args.preset, args.vocab_size, args.corpus, args.split_seed))
    cache, written = prepare_token_cache(tokenizer, args.corpus, args.split_seed,
                                         progress=not args.quiet)
    manifest = read_manifest(cache)
    splits = "; ".join(f"{split} {counts['documents']} documents, {counts['tokens']:,} tokens"
                       for split, counts in manifest["splits"].items())
    print(f"token cache of corpus {manifest['corpus']!r} (sha256 "
          f"{manifest['corpus_sha256'][:12]}), split seed {args.split_seed}, "
          f"{'written' if written else 'already prepared, its files checked'}: {cache}")
    print(splits)
    return 0


def folder_tokenizer(folder: Path):
    """The tokenizer a run reads from a model folder, loaded as the run loads it: a minillada
    model's BPE tokenizer (it holds minillada's special tokens), else a released checkpoint's own
    with the token roles of its config.json."""
    from transformers import PreTrainedTokenizerFast

    from minillada.data.corpus import SPECIAL_TOKENS, load_tokenizer
    from minillada.released.token_roles import load_released_tokenizer

    vocabulary = PreTrainedTokenizerFast.from_pretrained(folder).get_vocab()
    if all(token in vocabulary for token in SPECIAL_TOKENS.values()):
        return load_tokenizer(folder)
    return load_released_tokenizer(folder)[0]


def preset_tokenizer(preset: str, vocab_size: int | None, corpus: str, split_seed: int):
    """The BPE tokenizer a pre-training run of `preset` trains on the corpus (trained here and
    cached, if it is not yet)."""
    from minillada.data.corpus import get_tokenizer

    return get_tokenizer(vocab_size or get_preset(preset).model["vocab_size"], corpus=corpus,
                         split_seed=split_seed)
