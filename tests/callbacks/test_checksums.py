"""Checksums taken while writing: they cover exactly the bytes on disk, the streamed safetensors file is what
safetensors itself reads (and writes), and verification on resume stays independent of the writer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import xxhash

import hfbridge.callbacks._atomic as hashed
from hfbridge.callbacks import Checkpointer
from hfbridge.models import freeze
from tests.callbacks.test_trainable_only import _bert


def _records(dirpath: Path) -> dict[str, dict[str, Any]]:
    manifest = json.loads((dirpath / "manifest.json").read_text())
    return {e["name"]: e["files"] for e in manifest["checkpoints"]}


def _assert_records_match_disk(dirpath: Path) -> int:
    """Every recorded size and checksum equals one computed from the file's bytes on disk, independently."""
    n = 0
    for name, files in _records(dirpath).items():
        folder = dirpath / name
        on_disk = {p.name for p in folder.iterdir() if p.name != "checkpoint.json"}
        assert set(files) == on_disk, name
        for file, rec in files.items():
            data = (folder / file).read_bytes()
            assert rec == {"size": len(data), "xxh3_64": xxhash.xxh3_64_hexdigest(data)}, (name, file)
            n += 1
    return n


@pytest.mark.parametrize("frozen", ["save", "reference"])
def test_every_recorded_checksum_is_of_the_bytes_on_disk(
    tmp_path: Path, train_objects: Any, frozen: str
) -> None:
    model, opt, sched = train_objects(0)
    scaler = torch.amp.GradScaler("cpu")
    ckpt = Checkpointer(tmp_path, frozen=frozen, keep_last=2)  # type: ignore[arg-type]
    for step in (1, 2):
        ckpt.save(
            step,
            model=model,
            optimizer=opt,
            scheduler=sched,
            scaler=scaler,
            trainer_state={"global_step": step},
        )
    assert _assert_records_match_disk(tmp_path) == 2 * 7  # weights, 3 parts, rng, state, trainer_state.json
    bert = _bert()
    freeze(bert, "all-but-head")
    Checkpointer(tmp_path / "bert", frozen=frozen).save(1, model=bert)  # type: ignore[arg-type]
    assert _assert_records_match_disk(tmp_path / "bert") == 3


def test_streamed_weights_are_byte_for_byte_what_safetensors_writes(tmp_path: Path) -> None:
    import safetensors.torch
    import transformers as tf

    cfg = tf.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    model = tf.BertForMaskedLM(cfg)  # tied decoder weight and bias: stored once, aliases in the metadata
    safetensors.torch.save_model(model, str(tmp_path / "theirs.safetensors"), metadata={"format": "pt"})
    rec = hashed.write_weights(tmp_path / "ours.safetensors", model, {"format": "pt"})
    ours, theirs = (_split(tmp_path / f"{who}.safetensors") for who in ("ours", "theirs"))
    assert ours[0] == theirs[0]  # the same header (safetensors writes its metadata in hash-map order) ...
    assert ours[1] == theirs[1]  # ... and byte for byte the same tensor data
    data = (tmp_path / "ours.safetensors").read_bytes()
    assert rec == {"size": len(data), "xxh3_64": xxhash.xxh3_64_hexdigest(data)}


@pytest.mark.parametrize("arch", ["gpt2", "t5"])
def test_tied_weights_are_stored_under_the_names_save_pretrained_keeps(tmp_path: Path, arch: str) -> None:
    # sorted order alone would keep lm_head.weight (GPT-2) or decoder.embed_tokens.weight (T5)
    import transformers as tf
    from safetensors import safe_open

    from hfbridge.callbacks import Checkpointer

    if arch == "gpt2":
        model: Any = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2))
    else:
        cfg = tf.T5Config(vocab_size=100, d_model=32, num_layers=1, num_heads=2, d_ff=64, d_kv=16)
        model = tf.T5ForConditionalGeneration(cfg)
    model.save_pretrained(tmp_path / "hf")
    folder = Checkpointer(tmp_path / "ck").save(1, model=model)
    assert folder is not None
    keys = []
    for path in (tmp_path / "hf" / "model.safetensors", folder / "model.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            keys.append(sorted(f.keys()))
    assert keys[0] == keys[1]
    assert ("lm_head.weight" in keys[1]) is False
    reloaded = type(model)(model.config)
    assert Checkpointer(tmp_path / "ck").resume(model=reloaded) is not None  # still tied, same weights
    assert reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight
    assert torch.equal(reloaded.get_input_embeddings().weight, model.get_input_embeddings().weight)


def _split(path: Path) -> tuple[dict[str, Any], bytes]:
    """A safetensors file's parsed header and its data bytes."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def test_streamed_tensors_of_every_dtype_load_back_exactly(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    g = torch.Generator().manual_seed(0)
    tensors = {
        f"t_{str(dtype).removeprefix('torch.')}": (torch.randn(3, 5, generator=g) * 50).to(dtype)
        for dtype in hashed.safetensors_dtypes()
        if dtype not in (torch.uint16, torch.uint32, torch.uint64)  # no randn cast on every torch build
    }
    tensors["scalar"] = torch.tensor(7, dtype=torch.int64)
    tensors["empty"] = torch.zeros(0, 4)
    tensors["strided"] = torch.arange(20.0).reshape(4, 5).t()  # not contiguous in memory
    rec = hashed.write_tensors(tmp_path / "t.safetensors", tensors, {"format": "pt", "note": "x"})
    back = load_file(str(tmp_path / "t.safetensors"))
    assert back.keys() == tensors.keys()
    for name, t in tensors.items():
        assert (back[name].dtype, back[name].shape) == (t.dtype, t.shape), name
        as_bytes = back[name].reshape(-1).view(torch.uint8)
        assert torch.equal(as_bytes, t.contiguous().reshape(-1).view(torch.uint8)), name
    with safe_open(str(tmp_path / "t.safetensors"), "pt") as fh:
        assert fh.metadata() == {"format": "pt", "note": "x"}
    assert rec["xxh3_64"] == xxhash.xxh3_64_hexdigest((tmp_path / "t.safetensors").read_bytes())


def test_partly_shared_memory_falls_back_to_safetensors(tmp_path: Path) -> None:
    class Fused(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = torch.nn.Parameter(torch.randn(6, 4))
            self.register_buffer("q", self.qkv.data[:2], persistent=True)  # a view into part of it

    assert hashed.model_tensors(Fused()) is None
    assert hashed.model_tensors(_bert()) is not None
    model = torch.nn.Linear(3, 3)
    model.register_buffer("phase", torch.randn(3, dtype=torch.complex64))  # left to safetensors itself
    assert hashed.model_tensors(model) is None
    Checkpointer(tmp_path).save(1, model=model)
    _assert_records_match_disk(tmp_path)
    fresh = torch.nn.Linear(3, 3)
    fresh.register_buffer("phase", torch.zeros(3, dtype=torch.complex64))
    Checkpointer(tmp_path).resume(model=fresh)
    assert torch.equal(fresh.weight, model.weight)
    assert torch.equal(fresh.phase, model.phase)


def test_a_file_written_around_the_checksum_fails_the_save(
    tmp_path: Path, tiny_net: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = Checkpointer(tmp_path, keep_last=1)
    ckpt.save(1, model=tiny_net(), extra_state={"tag": 1})
    real = hashed.write_safetensors

    def sneaky(out: hashed.HashingWriter, *a: Any, **k: Any) -> None:
        real(out, *a, **k)
        out.raw.write(b"unhashed tail")  # lands on disk, never reaches the hasher

    monkeypatch.setattr(hashed, "write_safetensors", sneaky)
    with pytest.raises(OSError, match=r"holds \d+ bytes but \d+ bytes were checksummed"):
        ckpt.save(2, model=tiny_net())
    monkeypatch.undo()
    assert [c["step"] for c in ckpt.checkpoints()] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "step1"]


@pytest.mark.parametrize("frozen", ["save", "reference"])
def test_a_writer_that_hashed_other_bytes_than_it_wrote_is_caught_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frozen: str
) -> None:
    """Verification reads the files back from disk: it does not trust what the writer hashed."""
    model = _bert()
    freeze(model, "all-but-head")
    ckpt = Checkpointer(tmp_path, frozen=frozen, keep_last=2)  # type: ignore[arg-type]
    ckpt.save(1, model=model, extra_state={"tag": 1})
    real_write = hashed.HashingWriter.write

    def lying_write(self: hashed.HashingWriter, data: Any) -> int:
        if len(memoryview(data).cast("B")) < 256:
            return real_write(self, data)
        self._hash.update(data)  # hashes the real bytes ...
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0xFF  # ... but one byte lands on disk flipped
        self.raw.write(flipped)
        self.nbytes += len(flipped)
        return len(flipped)

    monkeypatch.setattr(hashed.HashingWriter, "write", lying_write)
    ckpt.save(2, model=model, extra_state={"tag": 2})
    monkeypatch.undo()
    with pytest.warns(
        RuntimeWarning, match=r"skipping checkpoint 'step2': file '.*' fails its xxh3_64 checksum"
    ):
        result = ckpt.resume(model=model)
    assert result is not None
    assert result.extra_state == {"tag": 1}


@pytest.mark.parametrize(
    ("frozen", "victim"), [("reference", "trainable.safetensors"), ("save", "hfbridge_state.pt")]
)
def test_a_byte_flipped_on_disk_after_the_save_is_caught(tmp_path: Path, frozen: str, victim: str) -> None:
    model = _bert()
    freeze(model, "all-but-head")
    ckpt = Checkpointer(tmp_path, frozen=frozen, keep_last=2)  # type: ignore[arg-type]
    ckpt.save(1, model=model, extra_state={"tag": 1})
    ckpt.save(2, model=model, extra_state={"tag": 2})
    path = tmp_path / "step2" / victim
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match=rf"{victim}.*checksum"):
        result = ckpt.resume(model=model)
    assert result is not None
    assert result.extra_state == {"tag": 1}


# ------------------------------------------------------------------------------- the frozen fingerprint


def test_the_fingerprint_travels_in_the_weights_header(tmp_path: Path) -> None:
    from safetensors import safe_open

    model = _bert()
    freeze(model, "all-but-head")
    folder = Checkpointer(tmp_path, frozen="reference").save(1, model=model)
    assert folder is not None
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint.json",
        "hfbridge_state.pt",
        "rng_state.pth",
        "trainable.safetensors",
    ]
    with safe_open(str(folder / "trainable.safetensors"), "pt") as fh:
        fingerprint = json.loads(fh.metadata()["hfbridge_frozen"])
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert set(fingerprint["tensors"]) == frozen


def test_a_checkpoint_with_frozen_json_still_resumes(tmp_path: Path) -> None:
    """The layout before 2026-12-06: the fingerprint in frozen.json, the weights' header without it."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model = _bert()
    freeze(model, "all-but-head")
    with torch.no_grad():
        model.classifier.weight.mul_(3)
    ckpt = Checkpointer(tmp_path, frozen="reference")
    folder = ckpt.save(1, model=model)
    assert folder is not None
    weights = folder / "trainable.safetensors"
    with safe_open(str(weights), "pt") as fh:
        fingerprint = fh.metadata()["hfbridge_frozen"]
    tensors = load_file(str(weights))
    weights.unlink()
    save_file(tensors, str(weights), metadata={"format": "pt"})
    (folder / "frozen.json").write_text(fingerprint + "\n")
    data = weights.read_bytes()
    for record in (tmp_path / "manifest.json", folder / "checkpoint.json"):
        doc = json.loads(record.read_text())
        for entry in doc.get("checkpoints", [doc]):
            entry["files"]["trainable.safetensors"] = {
                "size": len(data),
                "xxh3_64": xxhash.xxh3_64_hexdigest(data),
            }
        record.write_text(json.dumps(doc))
    fresh = _bert()
    assert ckpt.resume(model=fresh) is not None
    assert torch.equal(fresh.classifier.weight, model.classifier.weight)
    with torch.no_grad():
        fresh.bert.pooler.dense.bias.add_(1)  # the old fingerprint is still checked
    with pytest.raises(ValueError, match=r"frozen tensor 'bert\.pooler\.dense\.bias'"):
        ckpt.resume(model=fresh)


def test_a_frozen_tensor_changed_through_data_between_saves_is_caught(tmp_path: Path) -> None:
    """``.data`` writes bypass torch's version counter: the fingerprint must be recomputed, not cached on it."""
    model = _bert()
    freeze(model, "all-but-head")
    ckpt = Checkpointer(tmp_path, frozen="reference", keep_last=1)
    ckpt.save(1, model=model)
    weight = model.bert.encoder.layer[1].attention.self.query.weight
    version = weight._version
    weight.data[0, 0] += 1.0  # e.g. how peft merges adapters into a frozen base
    assert weight._version == version
    ckpt.save(2, model=model)
    with pytest.raises(
        ValueError, match=r"frozen tensor 'bert\.encoder\.layer\.1\.attention\.self\.query\.weight'"
    ):
        ckpt.resume(model=_bert())
    ckpt.resume(model=model)  # the model it was saved from matches
