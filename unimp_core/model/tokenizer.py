"""Tokenizers: a byte-level BPE trained on the dataset's own text (tiny), or the LM's own (real presets).

The tiny tokenizer is saved with the run (`save_tokenizer(tok, run_dir)` -> `run_dir/tokenizer/`) so
the run folder can rebuild the model offline; `load_tokenizer(run_dir / "tokenizer")` reads it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from ..errors import UnimpError, first_line
from ..run_folder import TOKENIZER_DIR

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..data.store import Dataset

EOS = "<|endoftext|>"

# Text columns of the dataset folder the tiny vocabulary is learned from (whatever the source).
ITEM_TEXT_COLUMNS = ("title", "brand", "category", "description")
INTERACTION_TEXT_COLUMNS = ("review", "summary", "explanation")


def dataset_texts(ds: "Dataset") -> Iterator[str]:
    """Every non-empty text of a dataset: item titles/brands/categories/descriptions, then the
    interactions' reviews/summaries/explanations."""
    for table, columns in ((ds.items, ITEM_TEXT_COLUMNS), (ds.interactions, INTERACTION_TEXT_COLUMNS)):
        for column in columns:
            if column not in table.columns:
                continue
            for text in table.get_column(column).drop_nulls().to_list():
                if text:
                    yield str(text)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> "PreTrainedTokenizerBase":
    """Train a byte-level BPE (GPT-2 style: any text encodes, nothing is unknown) on `texts`.

    Returns a transformers fast tokenizer with `<|endoftext|>` as its end-of-sequence token; the
    vocabulary may come out smaller than `vocab_size` when the text is small.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        # every byte is in the base alphabet, so no text ever needs an unknown token
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(iter(texts), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=None)


def load_tokenizer(source: str | Path, *, trust_remote_code: bool = True,
                   local_files_only: bool = False) -> "PreTrainedTokenizerBase":
    """A tokenizer from a local folder (e.g. a run's `tokenizer/`) or a Hugging Face hub id."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            str(source), trust_remote_code=trust_remote_code, local_files_only=local_files_only
        )
    except Exception as exc:  # hub/network/format errors: one line naming the source
        raise UnimpError(f"tokenizer {source}: cannot load: {first_line(exc)}") from exc


def save_tokenizer(tokenizer: "PreTrainedTokenizerBase", run_dir: str | Path) -> Path:
    """Save the (extended) tokenizer as `run_dir/tokenizer/`, atomically (written aside, then renamed)."""
    import os
    import shutil
    import tempfile

    target = Path(run_dir) / TOKENIZER_DIR
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{TOKENIZER_DIR}.", dir=target.parent))
    try:
        tokenizer.save_pretrained(str(staging))
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{TOKENIZER_DIR}.old.", dir=target.parent))
            os.replace(target, old / TOKENIZER_DIR)
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target
