"""The reference coordinator's built-in training process.

Run as `python -m scaimind.coordinator.worker.trainer`.

It stands in for every framework, training type and base model: it trains the byte-level NumPy
language model of `scaimind.coordinator.worker.model` on the job's data and speaks the executor's
process contract (spec file, metrics JSON lines, checkpoints, SIGTERM, orphan safety, resume).
Exit codes: 0 finished, 2 bad spec/data/checkpoint, 75 stopped after a checkpoint, 1 crashed.
"""

from __future__ import annotations

import os

# Two cores are shared by the coordinator and every job: a BLAS thread pool per trainer would
# oversubscribe them, so the limit is set before NumPy is imported.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from types import FrameType  # noqa: E402
from typing import IO, Any  # noqa: E402

import numpy as np  # noqa: E402

from scaimind.coordinator.worker.datasets import (  # noqa: E402
    DataFormatError,
    load_texts,
    split_texts,
)
from scaimind.coordinator.worker.model import (  # noqa: E402
    Adam,
    CharLM,
    ModelConfig,
    ModelFormatError,
    TrainState,
    context_windows,
    encode,
    grad_norm,
    load_state,
    relative_traceback,
    save,
    save_into,
)

EXIT_OK = 0
EXIT_CRASHED = 1
EXIT_BAD_INPUT = 2
EXIT_STOPPED = 75

DEFAULT_MAX_STEPS = 50
DEFAULT_BATCH_SIZE = 16
DEFAULT_SEQ_LENGTH = 64
DEFAULT_LEARNING_RATE = 1e-2
DEFAULT_CHECKPOINT_INTERVAL = 10
# The stand-in model gains nothing from huge batches or sequences, and a realistic spec
# (e.g. max_seq_length 4096) must still run in seconds on a laptop.
MAX_BATCH_SIZE = 64
MAX_SEQ_LENGTH = 256
MAX_GRAD_NORM = 1.0
MIN_LR_RATIO = 0.1
HYPERPARAMETERS = (
    "max_steps",
    "epochs",
    "learning_rate",
    "batch_size",
    "seed",
    "warmup_steps",
    "max_seq_length",
)


class SpecError(Exception):
    """The job spec file is missing or malformed."""


def _plain_enum(value: Any, prefix: str, default: str) -> str:
    name = str(value or "").strip().upper().removeprefix(prefix)
    return default if name in ("", "UNSPECIFIED") else name


@dataclass(frozen=True)
class TrainerSpec:
    """The parts of the executor's job spec this trainer uses, with defaults applied."""

    job_id: str
    training_type: str
    framework: str
    model_id: str
    data_files: list[dict[str, Any]]
    validation_split: float
    seed: int
    batch_size: int
    seq_length: int
    max_steps: int  # 0 = derive from epochs (or the default)
    epochs: int
    learning_rate: float
    warmup_steps: int  # -1 = a tenth of the run
    checkpoint_interval: int
    keep_last_checkpoints: int
    output_path: Path
    save_final_model: bool
    ignored_hyperparameters: tuple[str, ...] = field(default=())

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> TrainerSpec:
        """Validate a parsed spec document."""
        raw_hyper = raw.get("hyperparameters") or {}
        if not isinstance(raw_hyper, dict):
            raise SpecError("hyperparameters must be an object of name -> value strings")
        hyper = {str(k): str(v) for k, v in raw_hyper.items()}

        def number(name: str, value: Any, kind: type[int] | type[float]) -> Any:
            try:
                parsed = float(value)
            except (TypeError, ValueError):
                raise SpecError(f"{name} must be a number, got {value!r}") from None
            if not math.isfinite(parsed):
                raise SpecError(f"{name} must be finite, got {value!r}")
            if kind is int:
                if parsed != int(parsed):
                    raise SpecError(f"{name} must be a whole number, got {value!r}")
                return int(parsed)
            return parsed

        def setting(name: str, fallback: Any, kind: type[int] | type[float]) -> Any:
            # Hyperparameters win over the data/output config values of the spec.
            value = hyper.get(name, fallback)
            parsed = number(name, value, kind)
            if parsed < 0:
                raise SpecError(f"{name} must not be negative, got {value!r}")
            return parsed

        data_files = raw.get("data_files")
        if not isinstance(data_files, list) or not all(isinstance(f, dict) for f in data_files):
            raise SpecError("data_files must be a list of {path, format, columns} objects")
        validation_split = number("validation_split", raw.get("validation_split") or 0, float)
        if not 0 <= validation_split < 1:
            raise SpecError(f"validation_split must be in [0, 1), got {validation_split}")
        learning_rate = setting("learning_rate", DEFAULT_LEARNING_RATE, float)
        if learning_rate <= 0:
            raise SpecError(f"learning_rate must be positive, got {learning_rate}")
        warmup = hyper.get("warmup_steps")
        return cls(
            job_id=str(raw.get("job_id") or os.environ.get("SCAIMIND_JOB_ID", "")),
            training_type=_plain_enum(raw.get("training_type"), "TRAINING_TYPE_", "SFT"),
            framework=_plain_enum(raw.get("framework"), "FRAMEWORK_TYPE_", "HF_TRAINER"),
            model_id=str(raw.get("model_id") or "(no base model)"),
            data_files=data_files,
            validation_split=validation_split,
            seed=setting("seed", raw.get("seed") or 0, int),
            batch_size=setting("batch_size", raw.get("batch_size") or 0, int) or DEFAULT_BATCH_SIZE,
            seq_length=setting("max_seq_length", raw.get("max_seq_length") or 0, int)
            or DEFAULT_SEQ_LENGTH,
            max_steps=setting("max_steps", 0, int),
            epochs=setting("epochs", 0, int),
            learning_rate=learning_rate,
            warmup_steps=-1 if warmup is None else setting("warmup_steps", warmup, int),
            checkpoint_interval=max(
                0,
                number("checkpoint_interval_steps", raw.get("checkpoint_interval_steps") or 0, int),
            )
            or DEFAULT_CHECKPOINT_INTERVAL,
            keep_last_checkpoints=max(
                0, number("keep_last_checkpoints", raw.get("keep_last_checkpoints") or 0, int)
            ),
            output_path=Path(str(raw.get("output_path") or "final_model")).absolute(),
            save_final_model=bool(raw.get("save_final_model", True)),
            ignored_hyperparameters=tuple(sorted(k for k in hyper if k not in HYPERPARAMETERS)),
        )

    @classmethod
    def from_file(cls, path: str) -> TrainerSpec:
        """Read and validate the spec file named by SCAIMIND_SPEC_FILE."""
        if not path:
            raise SpecError("SCAIMIND_SPEC_FILE is not set")
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise SpecError(f"cannot read spec file {path}: {exc.strerror or exc}") from exc
        except json.JSONDecodeError as exc:
            raise SpecError(f"spec file {path} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise SpecError(f"spec file {path} must hold a JSON object")
        return cls.from_json(raw)


class EventLog:
    """Appends contract events as JSON lines, flushed one by one so the executor sees them live."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def emit(self, event: dict[str, Any]) -> None:
        """Write one event line."""
        self._stream.write(json.dumps(event) + "\n")
        self._stream.flush()

    def log(self, level: str, message: str) -> None:
        """Write a log event."""
        self.emit({"type": "log", "level": level, "message": message})


class StopRequest:
    """Remembers SIGTERM/SIGINT so the training loop can stop at the next step boundary."""

    def __init__(self) -> None:
        self.signal_name = ""
        self._parent = os.getppid()

    def install(self) -> None:
        """Route SIGTERM and SIGINT to this object."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name

    def reason(self) -> str:
        """Why training must stop now, or an empty string."""
        if self.signal_name:
            return f"received {self.signal_name}"
        if os.getppid() != self._parent:
            return "parent process exited (orphaned)"
        return ""


@dataclass(frozen=True)
class Schedule:
    """Step counts and the learning-rate curve: linear warmup, then cosine decay to 10%."""

    total_steps: int
    steps_per_epoch: int
    warmup_steps: int
    learning_rate: float

    @property
    def total_epochs(self) -> int:
        """Number of (possibly partial) epochs the run touches."""
        return max(1, math.ceil(self.total_steps / self.steps_per_epoch))

    def lr(self, step: int) -> float:
        """Learning rate of the 1-based `step`."""
        if step <= self.warmup_steps:
            return self.learning_rate * step / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        floor = self.learning_rate * MIN_LR_RATIO
        return floor + (self.learning_rate - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Trainer:
    """One training run from spec to final model."""

    def __init__(
        self,
        spec: TrainerSpec,
        events: EventLog,
        stop: StopRequest,
        checkpoint_dir: Path,
        resume_from: str,
    ) -> None:
        self.spec = spec
        self.events = events
        self.stop = stop
        self.checkpoint_dir = checkpoint_dir
        self.resume_from = resume_from
        self._checkpointed_step = -1

    def run(self) -> int:
        """Train, evaluate and export; return the process exit code."""
        spec = self.spec
        self.events.log(
            "INFO",
            "reference trainer: character-level NumPy LM standing in for "
            f"{spec.framework} / {spec.training_type} of {spec.model_id}",
        )
        self.events.log(
            "INFO",
            "the real framework, base model weights and GPUs are not used; the loss curve, "
            "checkpoints and final model are those of the small NumPy model",
        )
        if spec.ignored_hyperparameters:
            self.events.log(
                "INFO",
                "hyperparameters not used by the reference trainer: "
                + ", ".join(spec.ignored_hyperparameters),
            )

        texts = load_texts(spec.data_files)
        train_texts, validation_texts = split_texts(texts, spec.validation_split, spec.seed)
        train_tokens = encode("\n".join(train_texts))
        if len(train_tokens) < 2:
            raise DataFormatError("the training split holds less than 2 bytes of text")
        seq_length = min(spec.seq_length, MAX_SEQ_LENGTH, len(train_tokens))
        batch_size = min(spec.batch_size, MAX_BATCH_SIZE)
        num_chunks = len(train_tokens) // seq_length
        steps_per_epoch = math.ceil(num_chunks / batch_size)
        total_steps = spec.max_steps or (spec.epochs * steps_per_epoch) or DEFAULT_MAX_STEPS
        warmup = spec.warmup_steps if spec.warmup_steps >= 0 else max(1, total_steps // 10)
        schedule = Schedule(
            total_steps, steps_per_epoch, min(warmup, total_steps), spec.learning_rate
        )
        fingerprint = f"{len(train_tokens)}:{seq_length}:{batch_size}:{hash_tokens(train_tokens)}"
        self.events.log(
            "INFO",
            f"data: {len(texts)} records ({len(train_texts)} train, {len(validation_texts)} "
            f"validation), {len(train_tokens)} training bytes in {num_chunks} sequences of "
            f"{seq_length}; {total_steps} steps, {steps_per_epoch} per epoch, batch {batch_size}, "
            f"learning rate {spec.learning_rate}, seed {spec.seed}",
        )

        state = self._initial_state(fingerprint)
        state.info.update(
            job_id=spec.job_id,
            training_type=spec.training_type,
            framework=spec.framework,
            base_model=spec.model_id,
            data_fingerprint=fingerprint,
        )
        windows = context_windows(train_tokens, state.model.config.context)
        # About ten progress lines per run, at least one every 100 steps.
        log_every = max(1, min(100, total_steps // 10))
        starts = np.arange(num_chunks, dtype=np.int64) * seq_length
        offsets = np.arange(seq_length, dtype=np.int64)

        while state.step < total_steps:
            reason = self.stop.reason()
            if reason:
                return self._stop(state, reason)
            if state.order is None or state.cursor >= len(state.order):
                if state.order is not None:
                    state.epoch += 1
                state.order = state.rng.permutation(num_chunks).astype(np.int64)
                state.cursor = 0
            began = time.perf_counter()
            chosen = state.order[state.cursor : state.cursor + batch_size]
            state.cursor += len(chosen)
            positions = (starts[chosen][:, None] + offsets[None, :]).reshape(-1)
            loss, grads = state.model.loss_and_grads(windows[positions], train_tokens[positions])
            if not math.isfinite(loss):
                self.events.log("ERROR", f"training diverged at step {state.step + 1}: loss {loss}")
                print(f"training diverged at step {state.step + 1} (loss {loss})", file=sys.stderr)
                return EXIT_CRASHED
            norm = grad_norm(grads)
            if norm > MAX_GRAD_NORM:
                scale = np.float32(MAX_GRAD_NORM / norm)
                for grad in grads.values():
                    grad *= scale
            state.step += 1
            lr = schedule.lr(state.step)
            state.optimizer.step(state.model.params, grads, lr)
            elapsed = max(time.perf_counter() - began, 1e-9)
            metrics = {
                "loss": loss,
                "learning_rate": lr,
                "tokens_per_second": len(positions) / elapsed,
                "grad_norm": norm,
            }
            state.info["metrics"] = metrics
            self._emit_metrics(state, schedule, metrics)
            if state.step % log_every == 0 or state.step in (1, total_steps):
                self.events.log(
                    "INFO",
                    f"step {state.step}/{total_steps} loss {loss:.4f} lr {lr:.3g} "
                    f"grad_norm {norm:.3f}",
                )
            if state.step % spec.checkpoint_interval == 0:
                self._checkpoint(state)

        if validation_texts:
            reason = self.stop.reason()
            if reason:
                return self._stop(state, reason)
            self.events.emit({"type": "phase", "phase": "EVALUATING"})
            result = state.model.evaluate(encode("\n".join(validation_texts)))
            self._emit_metrics(
                state,
                schedule,
                {
                    "eval_loss": result.loss,
                    "eval_perplexity": result.perplexity,
                    "eval_token_accuracy": result.accuracy,
                },
            )
            self.events.log(
                "INFO",
                f"validation: loss {result.loss:.4f}, perplexity {result.perplexity:.2f} "
                f"over {result.num_tokens} bytes",
            )
        if spec.save_final_model:
            reason = self.stop.reason()
            if reason:
                return self._stop(state, reason)
            self.events.emit({"type": "phase", "phase": "EXPORTING"})
            state.info["kind"] = "final_model"
            save_into(spec.output_path, state)
            self.events.emit({"type": "final_model", "path": str(spec.output_path)})
        self.events.log("INFO", f"training finished after {state.step} steps")
        return EXIT_OK

    def _initial_state(self, fingerprint: str) -> TrainState:
        if not self.resume_from:
            rng = np.random.default_rng(self.spec.seed)
            model = CharLM.initialise(ModelConfig(), rng)
            return TrainState(model=model, optimizer=Adam(), rng=rng)
        state = load_state(self.resume_from)
        self.events.log(
            "INFO", f"resuming from checkpoint {Path(self.resume_from).name} at step {state.step}"
        )
        if state.info.get("data_fingerprint") != fingerprint:
            # Different data or batching: the saved data order no longer indexes this dataset.
            self.events.log(
                "WARNING",
                "the training data or batching changed since the checkpoint; "
                "continuing with a fresh data order",
            )
            state.order = None
            state.cursor = 0
        self._checkpointed_step = state.step if self._inside_checkpoint_dir() else -1
        return state

    def _inside_checkpoint_dir(self) -> bool:
        resume = Path(self.resume_from.removeprefix("file://")).resolve()
        return resume.parent == self.checkpoint_dir.resolve()

    def _emit_metrics(
        self, state: TrainState, schedule: Schedule, metrics: dict[str, float]
    ) -> None:
        self.events.emit(
            {
                "type": "metrics",
                "step": state.step,
                "epoch": state.epoch + 1,
                "total_steps": schedule.total_steps,
                "total_epochs": schedule.total_epochs,
                "metrics": metrics,
            }
        )

    def _checkpoint(self, state: TrainState) -> None:
        path = (self.checkpoint_dir / f"step-{state.step:06d}").absolute()
        state.info["kind"] = "checkpoint"
        size = save(path, state)
        self._checkpointed_step = state.step
        self.events.emit(
            {
                "type": "checkpoint",
                "step": state.step,
                "path": str(path),
                "size_bytes": size,
                "metrics": dict(state.info.get("metrics") or {}),
            }
        )
        self._prune(path)

    def _prune(self, newest: Path) -> None:
        keep = self.spec.keep_last_checkpoints
        if keep <= 0:
            return
        found = sorted(p for p in self.checkpoint_dir.glob("step-*") if p.is_dir())
        for old in found[: max(0, len(found) - keep)]:
            if old.resolve() == newest.resolve():
                continue
            shutil.rmtree(old, ignore_errors=True)
            self.events.log("INFO", f"removed checkpoint {old.name} (keep_last_checkpoints={keep})")

    def _stop(self, state: TrainState, reason: str) -> int:
        if self._checkpointed_step != state.step:
            self._checkpoint(state)
        self.events.log("INFO", f"{reason}: stopped after step {state.step} with a checkpoint")
        return EXIT_STOPPED


def hash_tokens(tokens: Any) -> str:
    """Short content hash of a token array, to notice changed data on resume."""
    return hashlib.sha256(np.ascontiguousarray(tokens).tobytes()).hexdigest()[:16]


def main() -> int:
    """Run the training process described by the environment; return its exit code."""
    stop = StopRequest()
    stop.install()
    try:
        spec = TrainerSpec.from_file(os.environ.get("SCAIMIND_SPEC_FILE", ""))
    except SpecError as exc:
        print(f"invalid job spec: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    metrics_path = os.environ.get("SCAIMIND_METRICS_FILE", "")
    stream: IO[str] = (
        open(metrics_path, "a", encoding="utf-8") if metrics_path else sys.stdout  # noqa: SIM115
    )
    events = EventLog(stream)
    checkpoint_dir = Path(os.environ.get("SCAIMIND_CHECKPOINT_DIR") or "checkpoints").absolute()
    trainer = Trainer(
        spec, events, stop, checkpoint_dir, os.environ.get("SCAIMIND_RESUME_CHECKPOINT", "")
    )
    try:
        code = trainer.run()
        if code == EXIT_OK:
            # Finished and exported: a stop request now must not turn the run into a killed
            # one (Python restores the default SIGTERM action while it shuts down).
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return code
    except (KeyboardInterrupt, SystemExit):
        raise
    except DataFormatError as exc:
        events.log("ERROR", f"data error: {exc}")
        print(f"data error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ModelFormatError as exc:
        events.log("ERROR", f"cannot resume: {exc}")
        print(f"cannot resume: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        # The job's log gets the traceback with package-relative file names (never where the
        # service is installed); the last line, the error itself, becomes error.message.
        print(relative_traceback(exc), file=sys.stderr)
        print(f"trainer crashed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CRASHED
    finally:
        if stream is not sys.stdout:
            stream.close()


if __name__ == "__main__":
    sys.exit(main())
