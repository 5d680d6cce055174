"""``Checkpointer``: crash-safe checkpoints with best-K / last-N retention and exact resume."""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hfbridge._checks import check_choice, check_non_negative_int, check_positive_int, check_type
from hfbridge._distributed import (
    Failure,
    attempt,
    broadcast_object,
    gather_object,
    get_rank,
    get_world_size,
    raise_first_failure,
)
from hfbridge.callbacks._atomic import dir_lock
from hfbridge.callbacks._early_stopping import clean_metrics
from hfbridge.callbacks._files import (
    Payload,
    apply_payload,
    capture_rng_state,
    check_plain,
    checkpoint_model,
    read_payload,
)
from hfbridge.callbacks._sharded import ShardedSaves, is_sharded
from hfbridge.callbacks._store import (
    FORMAT,
    ManifestStore,
    decode_float,
    encode_float,
    is_checkpoint_name,
    rank_best,
)

__all__ = ["Checkpointer", "ResumeResult"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


def _check_template(template: str) -> None:
    """Refuse a ``filename`` template that cannot be filled with an int step/epoch and float metrics."""
    try:
        fields = [(f, c, spec) for _, f, spec, c in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"`filename` must be a str.format template; {template!r} is not ({exc})") from None
    if not template or template.startswith(".") or "/" in template or "\\" in template:
        raise ValueError(
            "`filename` must be a non-empty folder-name template without path separators and not starting "
            f"with '.'; got {template!r}"
        )
    for field, conv, spec in fields:
        if not field.isidentifier():
            raise ValueError(
                f"`filename` fields must be plain names ({{step}}, {{epoch}} or a metric key), without "
                f"indexing or attributes; got {{{field}}} in {template!r}"
            )
        sample = 0 if field in ("step", "epoch") else 0.5  # metrics are floats
        try:
            ("{x" + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}").format(x=sample)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            kind = "an int" if field in ("step", "epoch") else "a float metric"
            raise ValueError(
                f"`filename` field {{{field}}} in {template!r} cannot format {kind}: {exc}"
            ) from None


def _check_callbacks(callbacks: Any, method: str) -> None:
    if callbacks is None:
        return
    if not isinstance(callbacks, Mapping):
        raise TypeError(
            f"`callbacks` must be a mapping of name -> object with {method}(), e.g. "
            f"{{'early_stopping': es}}; got {type(callbacks).__name__}"
        )
    for key, cb in callbacks.items():
        if not hasattr(cb, method):
            raise TypeError(f"`callbacks[{key!r}]` must have {method}(); got {type(cb).__name__}")


@dataclass(frozen=True)
class ResumeResult:
    """What :meth:`Checkpointer.resume` restored.

    Attributes:
        step: the step the checkpoint was saved at; continue with ``step + 1``.
        epoch: the epoch passed to ``save`` (``None`` when none was).
        path: the checkpoint folder.
        metrics: the metrics saved with it.
        extra_state: the ``extra_state`` passed to ``save``.
    """

    step: int
    epoch: int | float | None
    path: Path
    metrics: dict[str, float]
    extra_state: Any


class Checkpointer:
    """Crash-safe checkpoints: atomic folders, a manifest, best-K by a metric plus the last N, exact resume.

    Args:
        dirpath: folder that holds the checkpoints and ``manifest.json`` (created on first save).
        monitor: metric key that ranks checkpoints (e.g. ``"eval_loss"``); ``None`` keeps only the last N.
        mode: ``"min"`` or ``"max"``: whether a lower or higher ``monitor`` is better; NaN is always worst.
        keep_best: how many best checkpoints by ``monitor`` to keep (ties keep the earlier one).
        keep_last: how many newest checkpoints to keep; ``None`` keeps all. A checkpoint is kept when it is in
            either set.
        keep_total: at most this many checkpoints in all (HF's ``save_total_limit`` rule): when the two sets
            together hold more, the oldest of the newest that are not among the best go first. The best
            ``keep_best`` and the newest one always stay, so more are kept when those alone exceed it.
        every_n_steps: write only when ``step % every_n_steps == 0`` (for ``save`` called every step).
        every_n_epochs: write when ``save(..., epoch=e, epoch_end=True)`` and ``(e+1) % every_n_epochs == 0``.
            With neither set, every ``save`` call writes.
        filename: folder-name template; fields ``{step}``, ``{epoch}`` and any metric key, e.g.
            ``"step{step}-loss{eval_loss:.3f}"``. Values are sanitized (no path separators, no ``..``).
        check_disk_space: estimate the size before writing and fail early when it cannot fit.
        frozen: ``"save"`` writes every weight; ``"reference"`` writes only the parameters that train (and
            buffers) plus a fingerprint of the frozen rest, which resume verifies against the base model you
            load (see docs/callbacks.md). A checkpoint of either kind resumes under either setting.
        async_save: for an FSDP-sharded model, write the shards in the background (``dcp.async_save``); the
            checkpoint is published by the next ``save``, ``resume`` or :meth:`wait` (call it at the end).
        sharded_timeout: seconds a rank waits for the others during a sharded save or load before raising
            (also the longest a background write may take); make it longer than a save takes.

    Raises:
        ValueError, TypeError: on a bad argument (each names the argument and the valid values).

    Example:
        >>> ckpt = Checkpointer("ckpts", monitor="eval_loss", keep_best=2, keep_last=1)  # doctest: +SKIP
        >>> ckpt.save(step, model=model, optimizer=opt, metrics={"eval_loss": 0.4})  # doctest: +SKIP
        >>> resumed = ckpt.resume(model=model, optimizer=opt, loader=loader)  # doctest: +SKIP
    """

    def __init__(
        self,
        dirpath: str | Path,
        *,
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
        keep_best: int = 1,
        keep_last: int | None = 1,
        keep_total: int | None = None,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        filename: str = "step{step}",
        check_disk_space: bool = True,
        async_save: bool = False,
        sharded_timeout: float = 600.0,
        frozen: Literal["save", "reference"] = "save",
    ) -> None:
        check_type("dirpath", dirpath, (str, Path), what="a str or pathlib.Path")
        if Path(dirpath).is_file():
            raise ValueError(
                f"`dirpath` must be a folder (created on first save); {str(dirpath)!r} is a file"
            )
        if monitor is not None:
            check_type("monitor", monitor, str)
        check_choice("mode", mode, ("min", "max"))
        check_non_negative_int("keep_best", keep_best)
        check_non_negative_int("keep_last", keep_last, allow_none=True)
        if keep_last == 0 and (monitor is None or keep_best == 0):
            raise ValueError(
                "`keep_last=0` keeps no checkpoint unless `monitor` is set and `keep_best` > 0; got "
                f"keep_last=0, keep_best={keep_best}, monitor={monitor!r}"
            )
        check_positive_int("keep_total", keep_total, allow_none=True)
        check_positive_int("every_n_steps", every_n_steps, allow_none=True)
        check_positive_int("every_n_epochs", every_n_epochs, allow_none=True)
        check_type("filename", filename, str)
        _check_template(filename)
        check_type("check_disk_space", check_disk_space, bool)
        check_type("async_save", async_save, bool)
        if isinstance(sharded_timeout, bool) or not isinstance(sharded_timeout, (int, float)):
            raise TypeError(
                f"`sharded_timeout` must be a number of seconds; got {type(sharded_timeout).__name__}"
            )
        if not sharded_timeout > 0:
            raise ValueError(f"`sharded_timeout` must be positive; got {sharded_timeout!r}")
        self.frozen = check_choice("frozen", frozen, ("save", "reference"))
        self.dirpath = Path(dirpath)
        self.monitor, self.mode = monitor, mode
        self.keep_best, self.keep_last, self.keep_total = keep_best, keep_last, keep_total
        self.every_n_steps, self.every_n_epochs = every_n_steps, every_n_epochs
        self.filename = filename
        self.check_disk_space = check_disk_space
        self._store = ManifestStore(
            self.dirpath, mode=mode, keep_best=keep_best, keep_last=keep_last, keep_total=keep_total
        )
        self._sharded = ShardedSaves(self.dirpath, asynchronous=async_save, timeout=float(sharded_timeout))

    def __repr__(self) -> str:
        return (
            f"Checkpointer({str(self.dirpath)!r}, monitor={self.monitor!r}, mode={self.mode!r}, "
            f"keep_best={self.keep_best}, keep_last={self.keep_last}, keep_total={self.keep_total})"
        )

    # ------------------------------------------------------------------------------------------- schedule

    def should_save(self, step: int, *, epoch: int | float | None = None, epoch_end: bool = False) -> bool:
        """Whether ``save(step, epoch=epoch, epoch_end=epoch_end)`` writes a checkpoint under the schedule."""
        if self.every_n_steps is None and self.every_n_epochs is None:
            return True
        if self.every_n_steps is not None and step % self.every_n_steps == 0:
            return True
        return bool(
            self.every_n_epochs is not None
            and epoch_end
            and epoch is not None
            and (int(epoch) + 1) % self.every_n_epochs == 0
        )

    # ------------------------------------------------------------------------------------------------ saving

    def save(
        self,
        step: int,
        *,
        model: Any,
        optimizer: Any = None,
        scheduler: Any = None,
        scaler: Any = None,
        loader: Any = None,
        extra_state: Any = None,
        metrics: Mapping[str, Any] | None = None,
        epoch: int | float | None = None,
        epoch_end: bool = False,
        callbacks: Mapping[str, Any] | None = None,
        force: bool = False,
        trainer_state: dict[str, Any] | None = None,
        extra_files: Callable[[Path], None] | None = None,
    ) -> Path | None:
        """Write a checkpoint atomically (rank 0 only; every rank must call it) and apply best-K / last-N.

        Args:
            step: the global step (non-negative int).
            model: the model (DDP / compiled wrappers are unwrapped). An FSDP-sharded model (and its
                optimizer) is saved by every rank through ``torch.distributed.checkpoint``, no full gather.
            optimizer, scheduler, scaler: objects with ``state_dict()``; saved when given.
            loader: a sampler or loader with ``state_dict()`` (each rank's state is kept).
            extra_state: any tree of tensors and plain values, handed back by ``resume``.
            metrics: metric values; must contain ``monitor`` when one is set. Only rank 0's are read (rank 0's
                evaluation is authoritative, so other ranks may pass ``None``); a bad value there makes every
                rank raise.
            epoch: the current epoch index, handed back by ``resume``.
            epoch_end: ``True`` when called at the end of epoch ``epoch`` (for ``every_n_epochs``).
            callbacks: named objects with ``state_dict``/``load_state_dict``, e.g. ``{"early_stopping": es}``.
            force: write even when ``every_n_steps`` / ``every_n_epochs`` say not to.
            trainer_state: JSON-able HF ``TrainerState`` dict (used by the Trainer bridge).
            extra_files: called on the writing rank with the unpublished folder, to add files (e.g. an HF
                ``config.json`` and tokenizer) that are checksummed and published with the rest.

        Returns:
            The checkpoint folder, or ``None`` when nothing was written (not due under the schedule, or a
            checkpoint that retention would drop at once). With ``async_save`` and a sharded model, ``None``:
            :meth:`wait` (or the next ``save``) publishes it and returns its folder.

        Raises:
            OSError: ``ENOSPC`` when the checkpoint does not fit (checked before writing, or hit while
                writing: the partial folder is removed and earlier checkpoints stay intact).
            ValueError, TypeError: on bad arguments or state that cannot be saved safely.
        """
        check_non_negative_int("step", step)
        if extra_files is not None and not callable(extra_files):
            raise TypeError(
                "`extra_files` must be a callable taking the checkpoint folder (a pathlib.Path); got "
                f"{type(extra_files).__name__}"
            )
        if not force and not self.should_save(step, epoch=epoch, epoch_end=epoch_end):
            return None
        sharded = is_sharded(model)
        module: list[Any] = [model]  # check() unwraps it; a sharded model stays (for its config.json)

        def check() -> dict[str, Any]:  # every check runs before the gather, so a failure reaches every rank
            _check_callbacks(callbacks, "state_dict")
            if not sharded:
                module[0] = checkpoint_model(model)
            state = {
                "rng": capture_rng_state(),
                "loader": loader.state_dict() if loader is not None else None,
            }
            check_plain(state["loader"], "loader.state_dict()")
            return state

        rank_states: list[Any] = gather_object(attempt(check))  # every rank learns whether any rank failed
        raise_first_failure(rank_states)

        def build() -> tuple[dict[str, float], Payload]:
            clean = clean_metrics(metrics, self.monitor)  # rank 0's metrics are authoritative
            world = len(rank_states)
            state = {
                "step": step,
                "epoch": epoch,
                "metrics": clean,
                "loader": [r["loader"] for r in rank_states] if world > 1 else rank_states[0]["loader"],
                "callbacks": {k: cb.state_dict() for k, cb in (callbacks or {}).items()},
                "extra_state": extra_state,
                "world_size": world,
            }
            own = {"optimizer": None if sharded else optimizer, "scheduler": scheduler, "scaler": scaler}
            parts = {k: v.state_dict() if v is not None else None for k, v in own.items()}
            for what, obj in parts.items():
                check_plain(obj, f"{what}.state_dict()")
            check_plain(extra_state, "extra_state")
            check_plain(state["callbacks"], "callbacks")
            payload = Payload(
                model=module[0],
                state=state,
                rng_states=[r["rng"] for r in rank_states],
                trainer_state=trainer_state,
                extra_files=extra_files,
                reference_frozen=self.frozen == "reference" and not sharded,  # shards hold every weight
                **parts,
            )
            return clean, payload

        def write(built: tuple[dict[str, float], Payload], shards: Path | None = None) -> str | None:
            built[1].shards = shards
            path = self._write(step, epoch, built[0], built[1])
            return None if path is None else str(path)

        if sharded:  # every rank writes its shards, then rank 0 publishes as below
            return self._sharded.save(step, model, optimizer, build, write)
        outcome = broadcast_object(attempt(lambda: write(build())) if get_rank() == 0 else None)
        raise_first_failure([outcome])
        return None if outcome is None else Path(str(outcome))

    def format_name(self, step: int, epoch: int | float | None, metrics: Mapping[str, float]) -> str:
        """The folder name ``filename`` gives for these values, sanitized into one safe path component.

        Every character outside ``[A-Za-z0-9._+=-]`` becomes ``_``, so no value can add a path separator.

        Raises:
            ValueError: when the template names an unavailable field or the result is not a safe name.

        Example:
            >>> ckpt = Checkpointer("ck", filename="step{step}-loss{eval_loss:.2f}")
            >>> ckpt.format_name(7, None, {"eval_loss": 0.4321})
            'step7-loss0.43'
        """
        fields: dict[str, Any] = {k: v for k, v in metrics.items() if k.isidentifier()}
        fields.update(step=step, epoch=epoch if epoch is not None else 0)
        try:
            name = self.filename.format(**fields)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ValueError(
                f"`filename` template {self.filename!r} cannot be filled ({type(exc).__name__}: {exc}); "
                f"available fields: {sorted(fields)}"
            ) from None
        name = _UNSAFE.sub("_", name)
        if not is_checkpoint_name(name):
            raise ValueError(f"`filename` {self.filename!r} gives an unsafe folder name {name!r}")
        return name

    def _write(self, step: int, epoch: Any, metrics: dict[str, float], payload: Payload) -> Path | None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        with dir_lock(self.dirpath):  # one writer at a time, so recover() never clears a live writer's folder
            manifest = self._store.recover()
            name = self.format_name(step, epoch, metrics)
            entry: dict[str, Any] = {
                "format": FORMAT,
                "name": name,
                "run": manifest["run"],
                "step": step,
                "epoch": epoch,
                "metrics": {k: encode_float(v) for k, v in metrics.items()},
                "score": encode_float(metrics.get(self.monitor) if self.monitor else None),
                "seq": manifest["next_seq"],
            }
            return self._store.add(manifest, entry, payload, check_disk_space=self.check_disk_space)

    # ------------------------------------------------------------------------------------------- resuming

    def resume(
        self,
        *,
        model: Any = None,
        optimizer: Any = None,
        scheduler: Any = None,
        scaler: Any = None,
        loader: Any = None,
        callbacks: Mapping[str, Any] | None = None,
        path: str | Path | None = None,
        restore_rng: bool = True,
    ) -> ResumeResult | None:
        """Restore everything from the newest complete checkpoint (or ``path``); every rank must call it.

        Incomplete or corrupt checkpoints (missing or truncated files, a file carrying pickled code) are
        skipped with a warning and the next older one is tried. Nothing is restored until a checkpoint has
        been read in full.

        Args:
            model, optimizer, scheduler, scaler, loader: restored when given (``load_state_dict``).
            callbacks: named objects with ``load_state_dict`` (e.g. ``{"early_stopping": es}``).
            path: a specific checkpoint folder instead of the newest.
            restore_rng: restore the Python, NumPy and torch RNG states.

        Returns:
            A :class:`ResumeResult` (step, epoch, path, metrics, extra_state), or ``None`` when there is no
            usable checkpoint.

        Raises:
            ValueError: when a part you ask for (e.g. ``optimizer``) was never saved in the chosen checkpoint.
        """
        self.wait()
        objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
        wanted = {k: v is not None for k, v in objects.items()}

        def check() -> None:  # bad input fails before any checkpoint is looked at, let alone set aside
            _check_callbacks(callbacks, "load_state_dict")
            if model is not None and not is_sharded(model):
                checkpoint_model(model, "load into")

        raise_first_failure(gather_object(attempt(check)))
        world = get_world_size()
        found: Any = None
        if get_rank() == 0:
            found = attempt(lambda: self._store.choose(None if path is None else Path(path), wanted, world))
        chosen = broadcast_object(found if found is None or isinstance(found, Failure) else str(found[0]))
        raise_first_failure([chosen])
        if chosen is None:
            return None
        folder = Path(str(chosen))
        loaded: Any = (  # rank 0 read its part in full while choosing; the others read theirs now
            found[1]
            if get_rank() == 0
            else attempt(lambda: read_payload(folder, rank=get_rank(), world_size=world, wanted=wanted))
        )
        raise_first_failure(gather_object(loaded if isinstance(loaded, Failure) else None))
        objects["loader"] = loader
        # e.g. a model of another shape on one rank: every rank raises instead of one hanging later
        restore = attempt(
            lambda: apply_payload(
                loaded, objects, callbacks or {}, restore_rng, sharded_timeout=self._sharded.timeout
            )
        )
        raise_first_failure(gather_object(restore))
        state = loaded.state
        return ResumeResult(
            step=int(state["step"]),
            epoch=state.get("epoch"),
            path=folder,
            metrics={k: float(v) for k, v in (state.get("metrics") or {}).items()},
            extra_state=state.get("extra_state"),
        )

    def wait(self) -> Path | None:
        """Publish a pending asynchronous sharded save; every rank must call it, at the end of training too.

        Returns:
            The published folder, or ``None`` when nothing was pending (or retention dropped it).

        Raises:
            RuntimeError: when the background save failed on any rank, or a rank did not answer in time.
        """
        return self._sharded.wait()

    # ------------------------------------------------------------------------------------------------ finding

    def load_weights(self, model: Any, path: str | Path | None = None) -> Path:
        """Load only the weights of ``path`` (default: the best, else the newest checkpoint) into ``model``.

        Returns:
            The checkpoint folder loaded.

        Raises:
            ValueError: when there is no checkpoint, or a trainable-only checkpoint's base does not match.
        """
        found = self.best() or self.latest() if path is None else Path(path)
        if found is None:
            raise ValueError(
                f"there is no complete checkpoint under {str(self.dirpath)!r} to load weights from"
            )
        self.resume(model=model, path=found, restore_rng=False)
        return found

    def export(self, path: str | Path, *, model: Any, checkpoint: str | Path | None = None) -> Path:
        """Write a self-contained ``save_pretrained`` model from a checkpoint (no hfbridge needed to load it).

        ``model`` is the base as you load it for training (``load_pretrained`` / ``from_pretrained``, same
        adapters); the checkpoint's weights are loaded into it (a trainable-only one is verified against it
        first) and a PEFT model is merged, on a copy, into plain weights. The tokenizer is not written.

        Args:
            path: a new or empty folder.
            model: the base model, with a ``save_pretrained`` method.
            checkpoint: the checkpoint folder to export; default: the best, else the newest.

        Returns:
            ``path``.

        Raises:
            ValueError: when ``path`` is a file or a non-empty folder, or there is no checkpoint.
            TypeError: when ``model`` has no ``save_pretrained`` (checked before anything is loaded into it).
        """
        import copy

        out = Path(path)
        if out.is_file() or (out.is_dir() and any(out.iterdir())):
            raise ValueError(f"`path` must be a new or empty folder; {str(out)!r} exists and is not empty")
        module: Any = checkpoint_model(model)
        if not callable(getattr(module, "save_pretrained", None)):
            raise TypeError(f"`model` must have save_pretrained() to export; got {type(module).__name__}")
        self.load_weights(model, checkpoint)
        if callable(getattr(module, "merge_and_unload", None)):  # PEFT: fold the adapters into the weights
            module = copy.deepcopy(module).merge_and_unload()
        module.save_pretrained(out)
        return out

    def latest(self) -> Path | None:
        """The newest complete checkpoint folder, or ``None``."""
        found = self._store.complete_entries()
        return max(found, key=lambda ef: ef[0]["seq"])[1] if found else None

    def best(self) -> Path | None:
        """The best checkpoint by ``monitor`` (``None`` without a monitor or checkpoints)."""
        found = self._store.complete_entries()
        ranked = rank_best([e for e, _ in found], self.mode)
        folders = {e["name"]: folder for e, folder in found}
        return folders[ranked[0]["name"]] if ranked else None

    def checkpoints(self) -> list[dict[str, Any]]:
        """Manifest records of the complete checkpoints, oldest first (name, step, epoch, metrics, score)."""
        out = []
        for e in sorted((e for e, _ in self._store.complete_entries()), key=lambda e: e["seq"]):
            rec = dict(e)
            rec["metrics"] = {k: decode_float(v) for k, v in e["metrics"].items()}
            rec["score"] = decode_float(e.get("score"))
            out.append(rec)
        return out
