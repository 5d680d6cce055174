"""``MaskedLMCollator``: pad, then mask tokens for masked-LM training (80/10/10), reproducibly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import xxhash
from numpy.random.bit_generator import ISeedSequence

from hfbridge._checks import check_probability, check_type
from hfbridge._distributed import get_rank, get_world_size
from hfbridge.collators._arrays import Batch
from hfbridge.collators._padding import padding_collator, padding_option, task_options

__all__ = ["BatchSeed", "MaskedLMCollator", "continuation_table"]

_M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment (2**64 / golden ratio)
# how a sub-word scheme marks words: a continuation prefix, or a word-start prefix
_CONTINUATION_PREFIX = "##"  # WordPiece: "##ing" continues a word
_START_PREFIXES = ("\u0120", "\u2581")  # byte-level BPE "Ġword", SentencePiece "▁word" start a word


class MaskedLMCollator:
    """Pad a batch and mask ``mlm_probability`` of its tokens; ``labels`` hold the originals, -100 elsewhere.

    Of the chosen tokens, ``mask_replace_prob`` become the mask token, ``random_replace_prob`` a random token
    and the rest stay unchanged (80/10/10 by default), as ``DataCollatorForLanguageModeling(mlm=True)``.
    Special tokens (from the rows' ``special_tokens_mask`` when present, else from the tokenizer's special
    ids) and padding are never chosen. With ``whole_word_mask`` a word's sub-tokens are chosen together; word
    boundaries come from the vocabulary (WordPiece ``##``, byte-level ``Ġ``, SentencePiece ``▁``), so no
    ``offset_mapping`` is needed.

    The masks are a pure function of ``(seed, epoch, distributed rank, the padded batch's input ids)``: each
    batch gets its own generator, a PCG64 seeded by a SplitMix64 stream (:class:`BatchSeed`) from the 64-bit
    xxh3 hash of the ids keyed by ``(seed, epoch, rank, rows, width)``, so a batch gets the same mask whatever
    was collated before it, in whichever DataLoader worker or thread, and a run resumed mid-epoch masks
    exactly as an uninterrupted one. Masks differ across epochs (:meth:`set_epoch`) and ranks; identical
    batches in one epoch on one rank get identical masks.

    Args:
        tokenizer: gives the mask id, the special ids, the vocabulary size and the pad id (required).
        mlm_probability: the share of (non-special) tokens chosen.
        mask_replace_prob: the share of chosen tokens replaced by the mask token.
        random_replace_prob: the share of chosen tokens replaced by a random token.
        whole_word_mask: choose whole words instead of single tokens.
        seed: seed of the masks; ``None`` takes ``torch.initial_seed()`` when the collator is built, so
            ``torch.manual_seed``/``transformers.set_seed`` called before building it make the masks
            reproducible.
        return_attention_mask: return the attention mask (padding is never chosen either way).
        **padding: every other ``PaddingCollator`` option but ``label_mode`` (always ``"sequence"``).

    Raises:
        ValueError: a tokenizer without a mask token, probabilities out of [0, 1] or summing over 1.

    Example:
        >>> collate = MaskedLMCollator(tokenizer, mlm_probability=0.15, seed=0)  # doctest: +SKIP
        >>> collate.set_epoch(epoch)  # doctest: +SKIP
        >>> batch = collate(rows)  # doctest: +SKIP
    """

    OPTIONS: ClassVar[tuple[str, ...]] = task_options(
        ("mlm_probability", "mask_replace_prob", "random_replace_prob", "whole_word_mask", "seed"),
        ("label_mode",),
    )

    def __init__(
        self,
        tokenizer: Any = None,
        *,
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        whole_word_mask: bool = False,
        seed: int | None = None,
        return_attention_mask: bool = True,
        **padding: Any,
    ) -> None:
        tok = tokenizer
        if getattr(tok, "mask_token_id", None) is None:
            raise ValueError(
                "MaskedLMCollator needs a `tokenizer` with a mask token; got "
                f"{type(tok).__name__ if tok is not None else None} without one"
            )
        self.mlm_probability = check_probability("mlm_probability", mlm_probability)
        self.mask_replace_prob = check_probability("mask_replace_prob", mask_replace_prob)
        self.random_replace_prob = check_probability("random_replace_prob", random_replace_prob)
        if mask_replace_prob + random_replace_prob > 1:
            raise ValueError(
                "`mask_replace_prob + random_replace_prob` must not exceed 1; got "
                f"{mask_replace_prob} + {random_replace_prob}"
            )
        self.whole_word_mask = check_type("whole_word_mask", whole_word_mask, bool)
        self.seed = check_type("seed", seed, (int, type(None)), what="an int or None")
        self.return_attention_mask = check_type("return_attention_mask", return_attention_mask, bool)
        if seed is None:
            import torch

            seed = int(torch.initial_seed())
        self._seed = seed & _M64
        self._epoch = 0
        self._rank: int | None = None  # pinned when pickled for a worker that cannot ask the process group
        self.padder = padding_collator(
            type(self).__name__, tok, padding, label_mode="sequence", return_attention_mask=True
        )
        self._mask_id = int(tok.mask_token_id)
        self._special_ids = np.array(sorted(set(tok.all_special_ids)), dtype=np.int64)
        self._continuation = continuation_table(tok) if whole_word_mask else None

    __getattr__ = padding_option  # the padding options read back from `padder`: collate.pad_to_multiple_of

    def set_epoch(self, epoch: int) -> None:
        """Mask ``epoch``'s batches: the same batch gets a different mask in each epoch."""
        check_type("epoch", epoch, int)
        self._epoch = epoch

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if state.get("_rank") is None and get_world_size() > 1:
            state["_rank"] = get_rank()  # a spawned DataLoader worker has no process group to ask
        return state

    def _rng(self, ids: np.ndarray) -> np.random.Generator:
        """The batch's own generator, seeded by ``(seed, epoch, rank)`` and the padded ids and their shape."""
        rank = self._rank if self._rank is not None else get_rank()
        key = 0
        for value in (self._seed, self._epoch & _M64, rank & _M64, *ids.shape):
            key = mix64(((key ^ value) + GOLDEN) & _M64)
        digest = xxhash.xxh3_64_intdigest(np.ascontiguousarray(ids).data, seed=key)
        # ~1 us, where np.random.default_rng([...]) spends ~20 us hashing its entropy list
        seed = BatchSeed(digest)  # NumPy takes any ISeedSequence; its stubs name only SeedSequence
        return np.random.Generator(np.random.PCG64(seed))  # type: ignore[arg-type]

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Batch:
        """Collate and mask ``features``: ``input_ids``, ``attention_mask``, ``labels`` (and other keys)."""
        batch = self.padder.collate_arrays(features)
        special = batch.pop("special_tokens_mask", None)
        ids = batch["input_ids"]
        rng = self._rng(ids)
        # one uniform draw per token decides whether it is chosen and, scaled, what becomes of it: [0, lo) the
        # mask token, [lo, lo + span) a random token (the draw's place in that range picks which), [lo + span,
        # top) unchanged, [top, 2] not chosen
        draw = rng.random(ids.shape)
        replace, random = self.mask_replace_prob, self.random_replace_prob
        blocked = batch["attention_mask"] == 0
        blocked |= special != 0 if special is not None else np.isin(ids, self._special_ids)
        if self._continuation is None:
            top = self.mlm_probability
            np.putmask(draw, blocked, 2.0)  # above every threshold (all at most 1): never chosen
            chosen = draw < top
        else:
            top = 1.0
            chosen = _choose_words(self._continuation, self.mlm_probability, ids, blocked, rng)
            chosen &= ~blocked
            np.putmask(draw, ~chosen, 2.0)
        lo, span = top * replace, top * random
        batch["labels"] = np.where(chosen, ids, np.int64(self.padder.label_pad_token_id))
        if span > 0:
            vocab = len(self.padder.tokenizer)
            scale = vocab / span
            if scale < 2.0**61:  # every draw (at most 2) times scale fits an int64
                # floor((draw - lo) * scale) is a uniform token for a draw in [lo, lo + span); written at
                # every draw below lo + span (ids: the collator's own buffer), then the draws below lo get
                # the mask
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
        if not self.return_attention_mask:
            batch.pop("attention_mask")
        return self.padder.to_output(batch)


class BatchSeed(ISeedSequence):
    """The seed of one batch's generator: a SplitMix64 stream from one 64-bit key.

    NumPy's ``SeedSequence`` hashes its entropy in ~10 us per batch; a batch's key is already a well-mixed
    64-bit hash, so expanding it with SplitMix64 (the usual seeder of 64-bit generators) is enough, and
    ``PCG64(BatchSeed(key))`` is a pure function of ``key``.

    Args:
        key: the batch's 64-bit key.
    """

    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key & _M64

    def generate_state(self, n_words: int, dtype: Any = np.uint32) -> np.ndarray:
        """``n_words`` words of ``dtype`` (``uint32`` or ``uint64``) of the key's SplitMix64 stream."""
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.uint32), np.dtype(np.uint64)):
            raise ValueError(f"`dtype` must be uint32 or uint64; got {dtype}")
        wide = n_words if dtype == np.uint64 else (n_words + 1) // 2
        z, words = self.key, []
        for _ in range(wide):
            z = (z + GOLDEN) & _M64
            words.append(mix64(z))
        out = np.array(words, dtype=np.uint64)
        return out if dtype == np.uint64 else out.view(np.uint32)[:n_words]


def mix64(x: int) -> int:
    """splitmix64's finalizer of one int in ``[0, 2**64)``: every input bit changes about half the output
    bits."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


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


def continuation_table(tokenizer: Any) -> np.ndarray:
    """A boolean array over token ids: ``True`` where the token continues the previous token's word.

    Raises:
        ValueError: the vocabulary shows no known sub-word scheme (WordPiece ``##``, byte-level ``Ġ``,
            SentencePiece ``▁``), so words cannot be told apart.
    """
    vocab: dict[str, int] = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values(), default=-1) + 1)
    tokens = [""] * size
    for token, index in vocab.items():
        tokens[index] = token
    special = set(getattr(tokenizer, "all_special_tokens", ()))
    if any(t.startswith(_CONTINUATION_PREFIX) for t in tokens):
        return np.array([t.startswith(_CONTINUATION_PREFIX) and t not in special for t in tokens], dtype=bool)
    for prefix in _START_PREFIXES:
        if any(t.startswith(prefix) for t in tokens):
            return np.array(
                [bool(t) and not t.startswith(prefix) and t not in special for t in tokens], dtype=bool
            )
    raise ValueError(
        "`whole_word_mask=True` needs word boundaries, but the tokenizer's vocabulary uses none of the known "
        "sub-word markers (WordPiece '##', byte-level 'Ġ', SentencePiece '▁'); use whole_word_mask=False"
    )
