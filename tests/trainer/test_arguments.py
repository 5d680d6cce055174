"""``hfbridge.TrainingArguments``: each new flag alone and together, conflicts named at construction."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from hfbridge.trainer import TrainingArguments, retention


def _args(tmp_path: Path, **kw: Any) -> TrainingArguments:
    kw.setdefault("report_to", [])
    kw.setdefault("use_cpu", True)
    return TrainingArguments(output_dir=str(tmp_path), **kw)


@pytest.mark.parametrize(
    ("flags", "attr", "value"),
    [
        ({"batching": "length"}, "batching", "length"),
        ({"batching": "random"}, "batching", "random"),
        ({"batching": "balanced"}, "batching", "balanced"),
        ({"batching": "tokens", "max_tokens": 512}, "max_tokens", 512),
        ({"freeze": "embeddings,layers:1"}, "freeze", "embeddings,layers:1"),
        ({"keep_last": 2, "metric_for_best_model": "accuracy"}, "keep_last", 2),
        ({"early_stopping_patience": 3}, "early_stopping_patience", 3),
        ({"early_stopping_patience": 3, "early_stopping_threshold": 0.01}, "early_stopping_threshold", 0.01),
        ({"sort_eval_by_length": False}, "sort_eval_by_length", False),
    ],
)
def test_each_flag_alone(tmp_path: Path, flags: dict[str, Any], attr: str, value: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. patience with eval_strategy="no" warns; covered below
        args = _args(tmp_path, **flags)
    assert getattr(args, attr) == value


def test_all_flags_together_and_hf_flags_keep_their_values(tmp_path: Path) -> None:
    args = _args(
        tmp_path,
        batching="tokens",
        max_tokens=256,
        freeze="embeddings",
        keep_last=1,
        save_total_limit=2,
        metric_for_best_model="accuracy",
        early_stopping_patience=2,
        early_stopping_threshold=0.001,
        eval_strategy="steps",
        eval_steps=5,
        save_steps=5,
        load_best_model_at_end=True,
        sort_eval_by_length=False,
    )
    assert args.greater_is_better is True  # HF's default for a metric that is not a loss
    assert args.save_total_limit == 2
    assert args.eval_steps == 5
    assert retention(args) == {
        "monitor": "eval_accuracy",
        "mode": "max",
        "keep_best": 2,
        "keep_last": 1,
        "keep_total": None,
    }


def test_the_hf_argument_parser_picks_up_the_new_flags(tmp_path: Path) -> None:
    from transformers import HfArgumentParser

    argv = ["--output_dir", str(tmp_path), "--batching", "tokens", "--max_tokens", "300", "--keep_last", "1"]
    argv += ["--metric_for_best_model", "f1", "--early_stopping_patience", "4", "--no_sort_eval_by_length"]
    argv += ["--freeze", "embeddings", "--report_to", "none"]
    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(argv)
    assert (args.batching, args.max_tokens, args.keep_last) == ("tokens", 300, 1)
    assert (args.early_stopping_patience, args.sort_eval_by_length, args.freeze) == (4, False, "embeddings")
    with pytest.raises(SystemExit):
        HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(
            ["--output_dir", str(tmp_path), "--batching", "bogus"]
        )


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        ({"max_tokens": 100}, ("max_tokens", "batching")),
        ({"batching": "length", "max_tokens": 100}, ("max_tokens", "batching")),
        ({"batching": "tokens"}, ("batching", "max_tokens")),
        (
            {"batching": "length", "train_sampling_strategy": "sequential"},
            ("batching", "train_sampling_strategy"),
        ),
        ({"keep_last": 1}, ("keep_last", "metric_for_best_model")),
        ({"freeze": "nonsense"}, ("freeze", "nonsense")),
        ({"batching": "shuffle"}, ("batching", "shuffle")),
    ],
)
def test_conflicts_and_bad_values_raise_naming_the_flags(
    tmp_path: Path, flags: dict[str, Any], names: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError) as info:
        _args(tmp_path, **flags)
    for name in names:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        ({"max_tokens": -3, "batching": "tokens"}, ValueError),
        ({"early_stopping_patience": 0}, ValueError),
        ({"early_stopping_patience": 2, "early_stopping_threshold": -0.1}, ValueError),
        ({"keep_last": -1, "metric_for_best_model": "loss"}, ValueError),
        ({"max_tokens": "many", "batching": "tokens"}, TypeError),
    ],
)
def test_bad_numbers_raise(tmp_path: Path, flags: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        _args(tmp_path, **flags)


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (
            {"batching": "tokens", "max_tokens": 64, "train_sampling_strategy": "group_by_length"},
            ("batching", "train_sampling_strategy"),
        ),
        ({"early_stopping_patience": 2}, ("early_stopping_patience", "eval_strategy")),
        (
            {"early_stopping_patience": 2, "eval_strategy": "epoch", "save_strategy": "no"},
            ("early_stopping_patience", "save_strategy"),
        ),
        ({"early_stopping_threshold": 0.5}, ("early_stopping_threshold", "early_stopping_patience")),
        ({"save_strategy": "no", "save_total_limit": 2}, ("save_total_limit", "save_strategy")),
        ({"metric_for_best_model": "accuracy"}, ("metric_for_best_model", "eval_strategy")),
    ],
)
def test_inert_settings_warn_naming_the_flags(
    tmp_path: Path, flags: dict[str, Any], names: tuple[str, ...]
) -> None:
    with pytest.warns(UserWarning, match=names[0]) as record:
        _args(tmp_path, **flags)
    text = " ".join(str(w.message) for w in record)
    for name in names:
        assert name in text


def test_quiet_when_nothing_conflicts(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _args(tmp_path, eval_strategy="epoch", save_strategy="epoch", early_stopping_patience=2)
        _args(tmp_path, train_sampling_strategy="group_by_length", batching="length")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, (None, 0, None, None)),
        ({"save_total_limit": 3}, (None, 0, 3, None)),
        ({"save_total_limit": 0}, (None, 0, None, None)),  # HF: no deletion when <= 0
        ({"metric_for_best_model": "loss"}, ("eval_loss", 1, None, None)),
        ({"metric_for_best_model": "loss", "save_total_limit": 3}, ("eval_loss", 1, 3, 3)),
        ({"metric_for_best_model": "loss", "save_total_limit": 1}, ("eval_loss", 1, 1, 1)),
        ({"metric_for_best_model": "f1", "save_total_limit": 3, "keep_last": 2}, ("eval_f1", 3, 2, None)),
        ({"metric_for_best_model": "f1", "save_total_limit": 2, "keep_last": 0}, ("eval_f1", 2, 0, None)),
    ],
)
def test_retention_follows_the_documented_mapping(
    tmp_path: Path, flags: dict[str, Any], expected: tuple[Any, int, int | None, int | None]
) -> None:
    flags = {"eval_strategy": "steps", "eval_steps": 1, **flags}
    rule = retention(_args(tmp_path, **flags))
    assert (rule["monitor"], rule["keep_best"], rule["keep_last"], rule["keep_total"]) == expected
