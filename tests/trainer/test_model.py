"""The NumPy model: analytic gradients, Adam, and the checkpoint round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from scaimind.coordinator.worker.model import (
    Adam,
    CharLM,
    ModelConfig,
    ModelFormatError,
    TrainState,
    context_windows,
    encode,
    load_model,
    load_state,
    save,
)

TEXT = "the cat sees the dog. the dog sees the cat. "


def _batch(context: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = encode(TEXT)
    return context_windows(tokens, context), tokens


def test_context_windows_pad_the_start() -> None:
    windows = context_windows(encode("abc"), 2)

    assert windows.tolist() == [[256, 256], [256, ord("a")], [ord("a"), ord("b")]]


def test_gradients_match_finite_differences() -> None:
    config = ModelConfig(context=3, embed_dim=4, hidden_dim=8)
    model = CharLM.initialise(config, np.random.default_rng(0))
    # Float64 copies make central differences precise enough to compare.
    model.params = {name: value.astype(np.float64) for name, value in model.params.items()}
    model.params["w2"] *= 100  # a model far from uniform exercises every term
    contexts, targets = _batch(config.context)
    _, grads = model.loss_and_grads(contexts, targets)
    rng = np.random.default_rng(1)
    for name, value in model.params.items():
        for _ in range(5):
            index = tuple(int(rng.integers(n)) for n in value.shape)
            if name == "embed":
                index = (int(rng.choice(contexts.reshape(-1))), index[1])
            original = value[index]
            value[index] = original + 1e-6
            plus, _ = model.loss_and_grads(contexts, targets)
            value[index] = original - 1e-6
            minus, _ = model.loss_and_grads(contexts, targets)
            value[index] = original
            numeric = (plus - minus) / 2e-6
            assert grads[name][index] == pytest.approx(numeric, rel=1e-4, abs=1e-8), name


def test_adam_fits_a_short_text() -> None:
    model = CharLM.initialise(ModelConfig(), np.random.default_rng(0))
    optimizer = Adam()
    contexts, targets = _batch(model.config.context)
    first, _ = model.loss_and_grads(contexts, targets)
    for _ in range(60):
        _, grads = model.loss_and_grads(contexts, targets)
        optimizer.step(model.params, grads, 0.01)
    result = model.evaluate(targets)

    assert first == pytest.approx(math.log(256), abs=0.05)
    assert result.loss < 0.5
    assert result.accuracy > 0.9
    assert result.perplexity == pytest.approx(math.exp(result.loss))


def test_checkpoint_round_trip_restores_everything(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    model = CharLM.initialise(ModelConfig(context=4, embed_dim=8, hidden_dim=16), rng)
    optimizer = Adam()
    contexts, targets = _batch(4)
    _, grads = model.loss_and_grads(contexts, targets)
    optimizer.step(model.params, grads, 0.01)
    order = rng.permutation(7).astype(np.int64)
    state = TrainState(model, optimizer, rng, step=3, epoch=1, cursor=2, order=order, info={"a": 1})

    size = save(tmp_path / "step-000003", state)
    loaded = load_state((tmp_path / "step-000003").as_uri())

    assert size == sum(p.stat().st_size for p in (tmp_path / "step-000003").iterdir())
    assert (loaded.step, loaded.epoch, loaded.cursor, loaded.info) == (3, 1, 2, {"a": 1})
    assert loaded.order is not None
    assert np.array_equal(loaded.order, order)
    assert loaded.model.config == model.config
    assert loaded.optimizer.t == 1
    for name, value in model.params.items():
        assert np.array_equal(loaded.model.params[name], value)
        assert np.array_equal(loaded.optimizer.m[name], optimizer.m[name])
        assert np.array_equal(loaded.optimizer.v[name], optimizer.v[name])
    assert loaded.rng.integers(1 << 62) == rng.integers(1 << 62)
    # A checkpoint root resolves to its newest step.
    save(tmp_path / "step-000010", state)
    assert load_model(tmp_path).params["w1"].shape == (32, 16)
    assert not list(tmp_path.glob(".*"))


def test_loading_something_else_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text('{"format": "other"}', encoding="utf-8")
    np.savez(tmp_path / "model.npz", x=np.zeros(1))

    with pytest.raises(ModelFormatError, match="not a scaimind-charlm model"):
        load_model(tmp_path)
    with pytest.raises(ModelFormatError, match="no such model directory"):
        load_model(tmp_path / "absent")
    with pytest.raises(ModelFormatError, match="only local paths"):
        load_model("s3://bucket/model")
