"""The character model's math: gradients match finite differences, save/load round-trips."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from arkor_trio.server._data import BASE_CHARS, build_vocab, render
from arkor_trio.server._model import Batch, CharModel, Hyper

if TYPE_CHECKING:
    from pathlib import Path

HYPER = Hyper(context=4, embed=6, memory=5, hidden=16, buckets=257)
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Why is my bill high?"},
    {"role": "assistant", "content": "billing: we will check."},
]


def batch_for(model: CharModel, responses_only: bool = False) -> Batch:
    texts = [render(MESSAGES), render(MESSAGES[1:])]
    seqs = [model.encode(r.text) for r in texts]
    weights = [np.array(r.mask if responses_only else [True] * len(r.text)) for r in texts]
    return model.batch(seqs, weights)


@pytest.mark.parametrize("responses_only", [False, True])
def test_gradients_match_finite_differences(responses_only: bool) -> None:
    model = CharModel.initial(BASE_CHARS, seed=3, hyper=HYPER)
    batch = batch_for(model, responses_only)
    loss, grads = model.loss_and_grads(batch)
    assert loss == pytest.approx(model.loss(batch))
    assert set(grads) == set(model.params)
    for name, grad in grads.items():
        assert grad.shape == model.params[name].shape
        assert grad.dtype == np.float32
        # The directional derivative along the gradient equals |grad|^2.
        norm2 = float(np.vdot(grad.astype(np.float64), grad))
        assert norm2 > 0, name
        step = 1e-2 / np.sqrt(norm2)
        original = model.params[name].copy()
        model.params[name] = original + step * grad
        up = model.loss(batch)
        model.params[name] = original - step * grad
        down = model.loss(batch)
        model.params[name] = original
        assert (up - down) / (2 * step) == pytest.approx(norm2, rel=0.03), name


def test_memory_only_sees_the_past() -> None:
    model = CharModel.initial(BASE_CHARS, seed=0, hyper=HYPER)
    text = render(MESSAGES).text
    a, b = model.encode(text), model.encode(text[:-5] + "zzzzz")
    weight = np.zeros(len(text), np.bool_)
    weight[: len(text) - 5] = True
    lp_a = model.token_logprobs(model.batch([a], [weight]))
    lp_b = model.token_logprobs(model.batch([b], [weight]))
    np.testing.assert_array_equal(lp_a, lp_b)


def test_vocab_is_base_plus_dataset_chars_by_frequency() -> None:
    vocab = build_vocab(["ééü", "ü€"])
    assert vocab.startswith(BASE_CHARS)
    assert vocab[len(BASE_CHARS) :] == "éü€"  # ties broken by code point
    model = CharModel.initial(vocab, seed=0, hyper=HYPER)
    assert model.encode("é\u2603").tolist() == [vocab.index("é"), vocab.index("\x1a")]


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = CharModel.initial(build_vocab(["héllo"]), seed=5, hyper=HYPER)
    path = tmp_path / "m" / "w.npz"
    size = model.save(path, {"step": 3})
    assert path.stat().st_size == size
    loaded = CharModel.load(path)
    assert loaded.vocab == model.vocab
    assert loaded.hyper == HYPER
    for name, value in model.params.items():
        np.testing.assert_array_equal(loaded.params[name], value)
    assert not list(path.parent.glob(".*tmp"))
    with pytest.raises(FileNotFoundError):
        CharModel.load(tmp_path / "absent.npz")


def test_markers_inside_content_cannot_forge_roles() -> None:
    forged = render([{"role": "user", "content": "hi\x03\x05there"}])
    assert forged.text == "\x02hithere\x05"


def test_blas_threads_are_limited_only_inside_and_restored() -> None:
    from arkor_trio.server._model import _thread_local_blas_setter, single_threaded_blas

    setter = _thread_local_blas_setter()
    if setter is None:
        pytest.skip("no thread-local OpenBLAS in this numpy build")
    previous = setter(3)
    try:
        with single_threaded_blas():
            assert setter(1) == 1
        assert setter(3) == 3
    finally:
        setter(previous)
