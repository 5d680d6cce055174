"""``MaskedLMCollator``: pad, then mask tokens for masked-LM training (80/10/10), reproducibly."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from struct import unpack
from typing import Any

import numpy as np

from hfbridge._checks import check_probability, check_type
from hfbridge._distributed import get_rank, get_world_size
from hfbridge._mixing import GOLDEN, mix64, mix64_array
from hfbridge.collators._common import PaddingOptions
from hfbridge.collators._padding import PaddingCollator
from hfbridge.collators._words import continuation_table

__all__ = ["MaskedLMCollator"]


@dataclass
class MaskedLMCollator(PaddingOptions):
    """Pad a batch and mask ``mlm_probability`` of its tokens; ``labels`` hold the originals, -100 elsewhere.

    Of the chosen tokens, ``mask_replace_prob`` become the mask token, ``random_replace_prob`` a random token and
    the rest stay unchanged (80/10/10 by default), as ``DataCollatorForLanguageModeling(mlm=True)``. Special
    tokens (from the rows' ``special_tokens_mask`` when present, else from the tokenizer's special ids) and
    padding are never chosen. With ``whole_word_mask`` a word's sub-tokens are chosen together; word boundaries
    come from the vocabulary (WordPiece ``##``, byte-level ``Ġ``, SentencePiece ``▁``), so no ``offset_mapping``
    is needed.

    The masks are a pure function of ``(seed, epoch, distributed rank, the padded batch's input ids)``: the
    collator keeps no random stream, so a batch gets the same mask whatever was collated before it, in whichever
    DataLoader worker, and a run resumed mid-epoch masks exactly as an uninterrupted one. Masks differ across
    epochs (:meth:`set_epoch`) and ranks; identical batches in one epoch on one rank get identical masks.

    Args:
        tokenizer: gives the mask id, the special ids, the vocabulary size and the pad id (required).
        mlm_probability: the share of (non-special) tokens chosen.
        mask_replace_prob: the share of chosen tokens replaced by the mask token.
        random_replace_prob: the share of chosen tokens replaced by a random token.
        whole_word_mask: choose whole words instead of single tokens.
        seed: seed of the masks; ``None`` takes ``torch.initial_seed()`` when the collator is built, so
            ``torch.manual_seed``/``transformers.set_seed`` called before building it make the masks reproducible.
        padding, max_length, overflow, pad_to_multiple_of, padding_side, pad_token_id, label_pad_token_id, pad_values,
            attention_mask_dtype, return_tensors: as in ``PaddingCollator``.

    Raises:
        ValueError: a tokenizer without a mask token, probabilities out of [0, 1] or summing over 1.

    Example:
        >>> collate = MaskedLMCollator(tokenizer, mlm_probability=0.15, seed=0)  # doctest: +SKIP
        >>> collate.set_epoch(epoch)  # doctest: +SKIP
        >>> batch = collate(rows)  # input_ids with [MASK]s, labels -100 except at the chosen tokens  # doctest: +SKIP
    """

    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    whole_word_mask: bool = False
    seed: int | None = None
    _padding: PaddingCollator = field(init=False, repr=False, compare=False)
    _epoch: int = field(default=0, init=False, repr=False, compare=False)
    _seed: int = field(default=0, init=False, repr=False, compare=False)
    _rank: int | None = field(default=None, init=False, repr=False, compare=False)
    _local: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tok = self.tokenizer
        if tok is None or getattr(tok, "mask_token_id", None) is None:
            raise ValueError(
                "MaskedLMCollator needs a `tokenizer` with a mask token; got "
                f"{type(tok).__name__ if tok is not None else None} without one"
            )
        check_probability("mlm_probability", self.mlm_probability)
        check_probability("mask_replace_prob", self.mask_replace_prob)
        check_probability("random_replace_prob", self.random_replace_prob)
        if self.mask_replace_prob + self.random_replace_prob > 1:
            raise ValueError(
                "`mask_replace_prob + random_replace_prob` must not exceed 1; got "
                f"{self.mask_replace_prob} + {self.random_replace_prob}"
            )
        check_type("whole_word_mask", self.whole_word_mask, bool)
        check_type("seed", self.seed, (int, type(None)), what="an int or None")
        if self.seed is None:
            import torch

            self._seed = int(torch.initial_seed())
        else:
            self._seed = int(self.seed)
        self._padding = self._padder(label_mode="sequence", return_attention_mask=True)
        self._mask_id = int(tok.mask_token_id)
        self._vocab_size = len(tok)
        self._special_ids = np.array(sorted(set(tok.all_special_ids)), dtype=np.int64)
        self._continuation = continuation_table(tok) if self.whole_word_mask else None
        self._local = threading.local()

    def set_epoch(self, epoch: int) -> None:
        """Mask ``epoch``'s batches: the same batch gets a different mask in each epoch."""
        check_type("epoch", epoch, int)
        self._epoch = epoch

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_local"] = None  # a cached generator per thread, rebuilt on demand
        if state.get("_rank") is None and get_world_size() > 1:
            state["_rank"] = get_rank()  # a spawned DataLoader worker has no process group to ask
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _rng(self, ids: np.ndarray) -> np.random.Generator:
        """The batch's generator: a PCG64 whose increment hashes ``(seed, epoch, rank)`` and whose state mixes
        that hash with a fingerprint of the padded ids and their shape."""
        rank = self._rank if self._rank is not None else get_rank()
        local = self._local
        key = (self._seed, self._epoch, rank)
        if getattr(local, "key", None) != key:
            digest = hashlib.sha256(f"{self._seed},{self._epoch},{rank}".encode()).digest()
            high, low, inc_high, inc_low = unpack("4Q", digest)
            local.words = (high, low)
            local.generator = np.random.Generator(np.random.PCG64(0))  # its state is reset every call
            local.state = {
                "bit_generator": "PCG64",
                "state": {"state": 0, "inc": (inc_high << 64 | inc_low) | 1},
                "has_uint32": 0,
                "uinteger": 0,
            }
            local.key = key
        x = _fingerprint(ids)
        high, low = local.words
        state = local.state
        # distinct batches, distinct and unrelated states
        state["state"]["state"] = mix64(x ^ high) << 64 | mix64(x ^ low)
        generator: np.random.Generator = local.generator  # resetting its state: ~10x cheaper than a new one
        generator.bit_generator.state = state
        return generator

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate and mask ``features``; returns ``input_ids``, ``attention_mask``, ``labels`` (and other keys)."""
        batch = self._padding.collate_numpy(features)
        special = batch.pop("special_tokens_mask", None)
        ids = batch["input_ids"]
        rng = self._rng(ids)
        # one uniform draw per token decides whether it is chosen and, scaled, what becomes of it: [0, lo) the
        # mask token, [lo, lo + span) a random token (the draw's place in that range picks which), [lo + span,
        # top) unchanged, [top, 2] not chosen
        draw = rng.random(ids.shape)
        replace, random = self.mask_replace_prob, self.random_replace_prob
        if self._continuation is None:
            top = self.mlm_probability
            # specials and padding are never chosen: their draws go to 2, above every threshold (all at most 1)
            np.putmask(draw, special if special is not None else np.isin(ids, self._special_ids), 2.0)
            np.putmask(draw, batch["attention_mask"] == 0, 2.0)
            chosen = draw < top
        else:
            top = 1.0
            blocked = batch["attention_mask"] == 0
            blocked |= special != 0 if special is not None else np.isin(ids, self._special_ids)
            chosen = _choose_words(self._continuation, self.mlm_probability, ids, blocked, rng)
            chosen &= ~blocked
            np.putmask(draw, ~chosen, 2.0)
        lo, span = top * replace, top * random
        batch["labels"] = np.where(chosen, ids, np.int64(self.label_pad_token_id))
        if span > 0:
            vocab = self._vocab_size
            scale = vocab / span
            if scale < 2.0**61:  # every draw (at most 2) times scale fits an int64
                # floor((draw - lo) * scale) is a uniform token for a draw in [lo, lo + span); written at every
                # draw below lo + span (ids: the collator's own buffer), then the draws below lo get the mask
                scaled = draw * scale
                scaled -= lo * scale
                tokens = scaled.astype(np.int64)
                np.minimum(tokens, vocab - 1, out=tokens)  # float rounding at the range's top end
                np.copyto(ids, tokens, where=draw < min(lo + span, top))  # lo + span may round above top
            else:  # a vanishing `random_replace_prob`: rescale just the few draws in range
                randomized = draw < min(lo + span, top)
                randomized &= draw >= lo
                picked = draw[randomized]
                ids[randomized] = np.minimum(((picked - lo) * scale).astype(np.int64), vocab - 1)
        np.putmask(ids, draw < lo, self._mask_id)
        return self._padding.to_output(batch)


_WEIGHTS: np.ndarray | None = None  # 2**16 odd 64-bit weights (splitmix64 of 0, 1, ...), built on first use
_M64 = (1 << 64) - 1


def _fingerprint(ids: np.ndarray) -> int:
    """A 64-bit fingerprint of ``ids`` and their shape: the dot product with fixed odd random weights, modulo
    2**64, with the shape mixed in.

    Two batches that differ anywhere (a token or the shape) get the same fingerprint with probability about
    2**-64, and it costs a fraction of hashing the ids' bytes (sha256 of a 32 x 100 batch: ~15 us; this:
    ~2 us). Batches of more than 2**16 tokens are hashed whole.
    """
    global _WEIGHTS
    flat = np.ascontiguousarray(ids, dtype=np.int64).ravel()
    if flat.shape[0] > 1 << 16:
        x = int.from_bytes(hashlib.sha256(flat.data).digest()[:8], "little")
    else:
        if _WEIGHTS is None:
            _WEIGHTS = mix64_array(np.arange(1 << 16, dtype=np.uint64) * np.uint64(GOLDEN)).view(np.int64) | 1
        x = int(np.dot(flat, _WEIGHTS[: flat.shape[0]])) & _M64
    shape = 0  # rows * (2**40 + 435) + width: distinct for any two 2-D shapes
    for size in ids.shape:
        shape = (shape * 0x100000001B3 + size) & _M64
    return mix64(x ^ (shape * GOLDEN & _M64))


def _choose_words(
    table: np.ndarray, probability: float, ids: np.ndarray, blocked: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Choose whole words: draw once per word start, then spread each draw over the word's tokens."""
    continuation = table[np.clip(ids, 0, table.shape[0] - 1)] & (ids < table.shape[0])
    after_blocked = np.ones_like(blocked)
    after_blocked[..., 1:] = blocked[..., :-1]
    starts = ~blocked & (~continuation | after_blocked)
    word_chosen = (rng.random(ids.shape) < probability)[starts]
    word_index = np.cumsum(starts.ravel()) - 1  # the latest word start at or before each token
    chosen = np.zeros(ids.size, dtype=bool)
    inside = word_index >= 0
    chosen[inside] = word_chosen[word_index[inside]]
    return chosen.reshape(ids.shape)
