"""examples/token_classification.py: BIO spans, sub-word alignment on the demo data, a short run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.examples.conftest import DATA, load_example


def test_spans_reads_bio_tags() -> None:
    spans = load_example("token_classification").spans
    assert spans(["B-PER", "I-PER", "O", "B-LOC"]) == {(0, 2, "PER"), (3, 4, "LOC")}
    assert spans(["B-ORG", "B-ORG", "I-ORG"]) == {(0, 1, "ORG"), (1, 3, "ORG")}
    assert spans(["O", "I-LOC", "I-LOC", "I-PER"]) == {
        (1, 3, "LOC"),
        (3, 4, "PER"),
    }  # a stray I- opens a span
    assert spans(["O", "O"]) == set()


def test_demo_words_align_to_their_first_sub_word(wordpiece_tokenizer: Any) -> None:
    import hfbridge

    rows = [json.loads(line) for line in (DATA / "ner_validation.jsonl").read_text().splitlines()]
    data = hfbridge.adapt(
        {"tokens": [r["tokens"] for r in rows], "ner_tags": [r["ner_tags"] for r in rows]},
        wordpiece_tokenizer,
        task="token-classification",
        text_column="tokens",
        label_column="ner_tags",
    )
    batch = data.collator([data[i] for i in range(len(rows))])
    split_words = 0
    for i, row in enumerate(rows):
        labels = batch["labels"][i]
        kept = labels[labels != -100].tolist()
        assert [data.id2label[t] for t in kept] == row["ner_tags"]  # one label per word, in order
        split_words += int(batch["attention_mask"][i].sum()) - 2 - len(row["tokens"])
    assert split_words > 0  # the small vocabulary splits words, so the alignment was exercised


@pytest.mark.slow
def test_short_run_reports_entity_scores(
    run_main: Callable[..., Any], tiny_tokcls: Path, tmp_path: Path
) -> None:
    code, out, err = run_main(
        "token_classification",
        "--model",
        str(tiny_tokcls),
        "--ignore-mismatched-sizes",
        "--output-dir",
        str(tmp_path),
        "--max-steps",
        "3",
        "--no-progress",
    )
    assert code == 0, err
    assert "validation (entity level)" in out
    assert "->" in out  # the word-by-word view of a validation sentence
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert sorted(config["label2id"]) == ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O"]


def test_missing_tags_column_is_an_argparse_error(run_main: Callable[..., Any], tiny_tokcls: Path) -> None:
    code, _, err = run_main("token_classification", "--model", str(tiny_tokcls), "--tags-column", "labels")
    assert code == 2
    assert "--tags-column: no column 'labels' in the train data" in err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--epochs", "inf"], "--epochs must be a finite number above 0, got inf"),
        (["--epochs", "0"], "--epochs must be a finite number above 0, got 0"),
        (["--freeze", "layers:100"], "--freeze: `layers` must be at most the number of blocks"),
        (["--output-dir", __file__], f"--output-dir: {__file__} exists and is not a folder"),
    ],
)
def test_bad_flags_get_argparse_errors(
    run_main: Callable[..., Any], tiny_tokcls: Path, argv: list[str], match: str
) -> None:
    code, _, err = run_main("token_classification", "--model", str(tiny_tokcls), *argv)
    assert code == 2
    assert match in err
