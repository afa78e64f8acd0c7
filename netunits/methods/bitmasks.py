"""Bit-packed masks: bool images x S x S as uint64 images x words, each image padded to whole
words, so that intersections are word-wise ANDs and areas popcounts.

Position p of image i is bit p % 64 of word p // 64; a mask's flat position, as the search
keeps a unit's, is image * words * 64 + p.
"""
from __future__ import annotations

import sys

import numpy as np
import torch


def pack(masks: torch.Tensor) -> np.ndarray:
    """bool images x S x S (torch) -> uint64 images x words; position p of image i is bit p % 64 of
    word p // 64."""
    flat = masks.reshape(len(masks), -1).numpy()
    words = -(-flat.shape[1] // 64)
    padded = np.zeros((len(flat), words * 64), dtype=bool)
    padded[:, :flat.shape[1]] = flat
    packed = np.packbits(padded, axis=1, bitorder="little")
    return packed.view("<u8") if sys.byteorder == "little" else packed.view("<u8").astype(np.uint64)


def unpack(bits: np.ndarray, size: int) -> torch.Tensor:
    """uint64 images x words -> bool images x size x size (pack's inverse)."""
    flat = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little", count=size * size)
    return torch.from_numpy(flat.astype(bool)).reshape(len(bits), size, size)


def popcount_per_image(bits: np.ndarray) -> np.ndarray:
    """uint64 ... x images x words -> int64 ... x images."""
    return np.bitwise_count(bits).sum(axis=-1, dtype=np.int64)


def gather(bits: np.ndarray, flat_positions: np.ndarray) -> np.ndarray:
    """The bits at flat positions (image * words * 64 + position) of ... x images x words."""
    flat = bits.reshape(*bits.shape[:-2], -1)
    return ((flat[..., flat_positions >> 6] >> (flat_positions & 63).astype(np.uint64)) & np.uint64(1)).astype(bool)
