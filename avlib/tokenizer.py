"""Tokenizers: a miniature byte-level BPE for the tiny profiles, and the media tokens.

phi-2's tokenizer is a byte-level BPE whose end-of-text token closes every
assistant turn. The miniature tokenizer is trained the same way on the corpus
text (`tokenizers`), so the template treats both alike.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from avlib.template import AUDIO_TOKEN, END_OF_TURN, VIDEO_TOKEN


def add_media_tokens(tokenizer) -> int:
    """Add `<video>` and `<audio>` as special tokens; returns how many were new."""
    return tokenizer.add_special_tokens({"additional_special_tokens": [VIDEO_TOKEN, AUDIO_TOKEN]})


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts`, with end-of-turn and media tokens."""
    specials = [END_OF_TURN, VIDEO_TOKEN, AUDIO_TOKEN]
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size must be at least {256 + len(specials)} (bytes + special tokens), got {vocab_size}")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=END_OF_TURN,
        bos_token=END_OF_TURN,
    )
    add_media_tokens(tokenizer)
    return tokenizer
