"""The reference trainer's model: a byte-level NumPy MLP language model, Adam and checkpoints.

The model predicts the next UTF-8 byte from the previous `context` bytes: embeddings of the
context are concatenated, passed through one tanh hidden layer and a softmax over 256 bytes.
A checkpoint (and a final model) is a directory holding `model.npz` (parameters, Adam moments,
the current epoch's data order) and `meta.json` (format, config, vocabulary, step, data cursor,
Adam step count, RNG state, free-form info).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import numpy.typing as npt

FORMAT_NAME = "scaimind-charlm"
FORMAT_VERSION = 1
PARAMS_FILE = "model.npz"
META_FILE = "meta.json"
VOCAB_SIZE = 256
# Context slots before the start of the text hold this id; it is never predicted.
PAD_ID = VOCAB_SIZE
PARAM_NAMES = ("embed", "w1", "b1", "w2", "b2")
DTYPE = np.float32

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


class ModelFormatError(Exception):
    """A path is not a loadable model or checkpoint directory."""


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network."""

    context: int = 8
    embed_dim: int = 16
    hidden_dim: int = 128


def encode(text: str) -> IntArray:
    """Turn text into byte token ids."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)


def context_windows(tokens: IntArray, context: int) -> IntArray:
    """Return a (len(tokens), context) view whose row p holds the `context` tokens before p."""
    padded = np.concatenate([np.full(context, PAD_ID, dtype=np.int64), tokens])
    return np.lib.stride_tricks.sliding_window_view(padded, context)[: len(tokens)]


@dataclass(frozen=True)
class Evaluation:
    """Scores of a model on a token stream."""

    loss: float
    accuracy: float
    num_tokens: int

    @property
    def perplexity(self) -> float:
        """exp(mean cross-entropy), capped so that JSON never sees inf."""
        return math.exp(min(self.loss, 700.0))


class CharLM:
    """Byte-level MLP language model with an explicit forward and backward pass."""

    def __init__(self, config: ModelConfig, params: dict[str, FloatArray]) -> None:
        self.config = config
        self.params = params

    @classmethod
    def initialise(cls, config: ModelConfig, rng: np.random.Generator) -> CharLM:
        """Create a model with random weights drawn from `rng`."""
        fan_in = config.context * config.embed_dim

        def normal(shape: tuple[int, ...], scale: float) -> FloatArray:
            return (rng.standard_normal(shape) * scale).astype(DTYPE)

        params = {
            "embed": normal((VOCAB_SIZE + 1, config.embed_dim), 0.5),
            "w1": normal((fan_in, config.hidden_dim), 1.0 / math.sqrt(fan_in)),
            "b1": np.zeros(config.hidden_dim, dtype=DTYPE),
            # Small output weights: the untrained model starts near the uniform distribution.
            "w2": normal((config.hidden_dim, VOCAB_SIZE), 0.01),
            "b2": np.zeros(VOCAB_SIZE, dtype=DTYPE),
        }
        return cls(config, params)

    def _hidden(self, contexts: IntArray) -> tuple[FloatArray, FloatArray]:
        flat = self.params["embed"][contexts].reshape(len(contexts), -1)
        return flat, np.tanh(flat @ self.params["w1"] + self.params["b1"])

    def logits(self, contexts: IntArray) -> FloatArray:
        """Unnormalised next-byte scores for a batch of contexts."""
        _, hidden = self._hidden(contexts)
        result: FloatArray = hidden @ self.params["w2"] + self.params["b2"]
        return result

    def loss_and_grads(
        self, contexts: IntArray, targets: IntArray
    ) -> tuple[float, dict[str, FloatArray]]:
        """Mean cross-entropy of the batch and its gradient for every parameter."""
        count = len(targets)
        flat, hidden = self._hidden(contexts)
        logits = hidden @ self.params["w2"] + self.params["b2"]
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        total = exp.sum(axis=1, keepdims=True)
        rows = np.arange(count)
        log_likelihood = logits[rows, targets] - np.log(total[:, 0])
        loss = -float(log_likelihood.astype(np.float64).mean())

        d_logits = exp / total
        d_logits[rows, targets] -= 1.0
        d_logits /= count
        d_hidden = d_logits @ self.params["w2"].T
        d_pre = d_hidden * (1.0 - hidden * hidden)
        d_flat = d_pre @ self.params["w1"].T
        d_embed = np.zeros_like(self.params["embed"])
        np.add.at(d_embed, contexts.reshape(-1), d_flat.reshape(-1, self.config.embed_dim))
        grads = {
            "embed": d_embed,
            "w1": flat.T @ d_pre,
            "b1": d_pre.sum(axis=0),
            "w2": hidden.T @ d_logits,
            "b2": d_logits.sum(axis=0),
        }
        return loss, grads

    def evaluate(self, tokens: IntArray, batch_size: int = 4096) -> Evaluation:
        """Mean next-byte cross-entropy and accuracy over a whole token stream."""
        if len(tokens) == 0:
            raise ValueError("cannot evaluate on an empty text")
        windows = context_windows(tokens, self.config.context)
        nll = 0.0
        correct = 0
        for start in range(0, len(tokens), batch_size):
            logits = self.logits(windows[start : start + batch_size]).astype(np.float64)
            targets = tokens[start : start + batch_size]
            peak = logits.max(axis=1, keepdims=True)
            log_total = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]
            nll += float((log_total - logits[np.arange(len(targets)), targets]).sum())
            correct += int((logits.argmax(axis=1) == targets).sum())
        return Evaluation(nll / len(tokens), correct / len(tokens), len(tokens))


@dataclass
class Adam:
    """Adam with bias correction; moments are kept per parameter name."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    t: int = 0
    m: dict[str, FloatArray] = field(default_factory=dict)
    v: dict[str, FloatArray] = field(default_factory=dict)

    def step(self, params: dict[str, FloatArray], grads: dict[str, FloatArray], lr: float) -> None:
        """Apply one update in place."""
        self.t += 1
        correction1 = 1.0 - self.beta1**self.t
        correction2 = 1.0 - self.beta2**self.t
        for name, grad in grads.items():
            m = self.m.setdefault(name, np.zeros_like(grad))
            v = self.v.setdefault(name, np.zeros_like(grad))
            m *= self.beta1
            m += (1.0 - self.beta1) * grad
            v *= self.beta2
            v += (1.0 - self.beta2) * grad * grad
            update = (lr / correction1) * m / (np.sqrt(v / correction2) + self.eps)
            params[name] -= update.astype(DTYPE)


def grad_norm(grads: dict[str, FloatArray]) -> float:
    """Global L2 norm of all gradients."""
    return math.sqrt(sum(float(np.square(g, dtype=np.float64).sum()) for g in grads.values()))


@dataclass
class TrainState:
    """Everything needed to continue training exactly where it stopped."""

    model: CharLM
    optimizer: Adam
    rng: np.random.Generator
    step: int = 0
    epoch: int = 0  # 0-based index of the epoch `order` belongs to
    cursor: int = 0  # how many entries of `order` have been consumed
    order: IntArray | None = None
    info: dict[str, Any] = field(default_factory=dict)


def resolve_model_path(path: str | Path) -> Path:
    """Accept a directory path or a `file://` URI; a checkpoint root resolves to its latest step."""
    text = str(path)
    if text.startswith("file:"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise ModelFormatError(f"{text}: file:// URIs must name a local directory")
        text = unquote(parsed.path)
    elif "://" in text:
        raise ModelFormatError(f"{text}: only local paths and file:// URIs can be loaded")
    directory = Path(text)
    if not directory.is_dir():
        raise ModelFormatError(f"{directory}: no such model directory")
    if not (directory / META_FILE).is_file():
        steps = sorted(p for p in directory.glob("step-*") if (p / META_FILE).is_file())
        if not steps:
            raise ModelFormatError(f"{directory}: not a model directory (no {META_FILE})")
        directory = steps[-1]
    return directory


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(path: Path, state: TrainState) -> int:
    """Write `state` as a model directory atomically and return its size in bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    arrays: dict[str, npt.NDArray[Any]] = {}
    for name in PARAM_NAMES:
        arrays[f"param_{name}"] = state.model.params[name]
        if name in state.optimizer.m:
            arrays[f"adam_m_{name}"] = state.optimizer.m[name]
            arrays[f"adam_v_{name}"] = state.optimizer.v[name]
    if state.order is not None:
        arrays["data_order"] = state.order
    np.savez(staging / PARAMS_FILE, **arrays)  # type: ignore[arg-type]
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": asdict(state.model.config),
        "vocab": {"type": "bytes", "encoding": "utf-8", "size": VOCAB_SIZE, "pad_id": PAD_ID},
        "step": state.step,
        "epoch": state.epoch,
        "cursor": state.cursor,
        "adam": {
            "t": state.optimizer.t,
            "beta1": state.optimizer.beta1,
            "beta2": state.optimizer.beta2,
            "eps": state.optimizer.eps,
        },
        "rng_state": state.rng.bit_generator.state,
        "info": state.info,
    }
    (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    for name in (PARAMS_FILE, META_FILE):
        _fsync_file(staging / name)
    # Move an existing directory aside before replacing it, so a kill at any instant leaves
    # either the old or the new model complete on disk.
    retired = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        if retired.exists():
            shutil.rmtree(retired)
        os.replace(path, retired)
    os.replace(staging, path)
    shutil.rmtree(retired, ignore_errors=True)
    return sum(p.stat().st_size for p in path.iterdir())


def save_into(directory: str | Path, state: TrainState) -> int:
    """Write `state` into an existing directory (the job's /output, a mount point that cannot
    be renamed): staged inside it, then each file moved into place. Returns its size."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staging = directory / f".partial-{os.getpid()}"
    save(staging, state)
    for item in staging.iterdir():
        os.replace(item, directory / item.name)
    staging.rmdir()
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def relative_traceback(exc: BaseException) -> str:
    """A traceback whose file names are relative to their package (no installation paths)."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in frames:
        frame.filename = _package_relative(frame.filename)
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    return "".join(lines).rstrip()


def _package_relative(filename: str) -> str:
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return "/".join(parts[parts.index(marker) + 1 :])
    if "scaimind" in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("scaimind") :])
    return Path(filename).name


def _read(path: str | Path) -> tuple[Path, dict[str, Any], dict[str, npt.NDArray[Any]]]:
    directory = resolve_model_path(path)
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        with np.load(directory / PARAMS_FILE, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{directory}: cannot read model files: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{directory}: not a {FORMAT_NAME} model")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(
            f"{directory}: unsupported format version {meta.get('format_version')!r}"
        )
    missing = [name for name in PARAM_NAMES if f"param_{name}" not in arrays]
    if missing:
        raise ModelFormatError(f"{directory}: missing parameters {', '.join(missing)}")
    return directory, meta, arrays


def _model_from(meta: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> CharLM:
    config = ModelConfig(**meta["config"])
    return CharLM(config, {name: arrays[f"param_{name}"] for name in PARAM_NAMES})


def load_model(path: str | Path) -> CharLM:
    """Load the network from a checkpoint or final model directory (or `file://` URI)."""
    _, meta, arrays = _read(path)
    return _model_from(meta, arrays)


def load_state(path: str | Path) -> TrainState:
    """Load a checkpoint with everything needed to resume training."""
    _, meta, arrays = _read(path)
    adam_meta = meta["adam"]
    optimizer = Adam(
        beta1=adam_meta["beta1"], beta2=adam_meta["beta2"], eps=adam_meta["eps"], t=adam_meta["t"]
    )
    for name in PARAM_NAMES:
        if f"adam_m_{name}" in arrays:
            optimizer.m[name] = arrays[f"adam_m_{name}"]
            optimizer.v[name] = arrays[f"adam_v_{name}"]
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng_state"]
    order = arrays.get("data_order")
    return TrainState(
        model=_model_from(meta, arrays),
        optimizer=optimizer,
        rng=rng,
        step=int(meta["step"]),
        epoch=int(meta["epoch"]),
        cursor=int(meta["cursor"]),
        order=None if order is None else order.astype(np.int64),
        info=dict(meta.get("info") or {}),
    )
