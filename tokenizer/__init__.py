"""Byte-level BPE tokenizer: trainer, encoder, standard file formats, packed token streams."""

from tokenizer.encoder import Tokenizer
from tokenizer.trainer import train_bpe

__all__ = ["Tokenizer", "train_bpe"]
