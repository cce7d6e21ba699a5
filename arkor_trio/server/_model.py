"""The local engine's language model: a character-level MLP in NumPy with manual backprop.

For each position the model sees the previous ``context`` characters (embedded and concatenated)
plus a *memory*: the mean of hashed character-bigram embeddings over everything before the
position, which carries what the user asked about into the reply. One tanh hidden layer maps
that to logits over the vocabulary::

    x = [E[c(t-N)], ..., E[c(t-1)], mean(U[bigram(s)] for s < t)]
    p(c_t) = softmax(W2 @ tanh(W1 @ x + b1) + b2)

Everything is float32; the same seed and data give bit-identical results.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import attrs
import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from ._data import PAD, UNK

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "Batch",
    "Bools",
    "CharModel",
    "Floats",
    "Hyper",
    "Ints",
    "Params",
    "single_threaded_blas",
]

Floats: TypeAlias = npt.NDArray[np.float32]
Ints: TypeAlias = npt.NDArray[np.int64]
Bools: TypeAlias = npt.NDArray[np.bool_]
Params: TypeAlias = dict[str, Floats]


@attrs.frozen(kw_only=True)
class Hyper:
    """Shape of the network. ``buckets`` is the size of the hashed bigram table."""

    context: int = 8
    embed: int = 16
    memory: int = 32
    hidden: int = 192
    buckets: int = 16384


@attrs.frozen
class Batch:
    """Encoded sequences for one forward pass.

    ``tokens`` is ``(B, context + T)``: ``context`` PAD columns, then each sequence, then PAD.
    ``rows``/``cols`` select the ``P`` positions that are scored and ``targets`` their characters.
    """

    tokens: Ints
    bigrams: Ints
    valid: Bools
    rows: Ints
    cols: Ints
    targets: Ints


class CharModel:
    """A character-level language model: vocabulary, hyperparameters and float32 parameters.

    Args:
        vocab: The characters, index = token id; must start with PAD and contain UNK.
        hyper: The network shape.
        params: The arrays ``E, U, W1, b1, W2, b2``.
    """

    def __init__(self, vocab: str, hyper: Hyper, params: Params) -> None:
        self.vocab = vocab
        self.hyper = hyper
        self.params = params
        self._index = {c: i for i, c in enumerate(vocab)}
        self._unk = self._index[UNK]

    @classmethod
    def initial(cls, vocab: str, *, seed: int, hyper: Hyper | None = None) -> CharModel:
        """A new model; equal ``vocab``, ``seed`` and ``hyper`` give equal weights."""
        h = hyper or Hyper()
        rng = np.random.default_rng(seed)
        v, width = len(vocab), h.context * h.embed + h.memory

        def normal(*shape: int, scale: float) -> Floats:
            return (rng.standard_normal(shape) * scale).astype(np.float32)

        params = {
            "E": normal(v, h.embed, scale=1.0),
            "U": normal(h.buckets, h.memory, scale=1.0),
            "W1": normal(width, h.hidden, scale=width**-0.5),
            "b1": np.zeros(h.hidden, np.float32),
            "W2": normal(h.hidden, v, scale=0.1 * h.hidden**-0.5),
            "b2": np.zeros(v, np.float32),
        }
        return cls(vocab, h, params)

    @classmethod
    def seeded_from_name(cls, name: str, vocab: str) -> CharModel:
        """An untrained model whose weights depend only on ``name`` (a stable hash seeds them)."""
        seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
        return cls.initial(vocab, seed=seed)

    # --- encoding ----------------------------------------------------------------------------

    def encode(self, text: str) -> Ints:
        """Token ids of ``text``; characters outside the vocabulary become UNK."""
        get, unk = self._index.get, self._unk
        return np.fromiter((get(c, unk) for c in text), np.int64, len(text))

    def bigram(self, prev: int, cur: int) -> int:
        """The memory-table bucket of the character pair ``(prev, cur)``."""
        return (prev * len(self.vocab) + cur) % self.hyper.buckets

    def batch(self, seqs: Sequence[Ints], weights: Sequence[Bools]) -> Batch:
        """Pad ``seqs`` into a :class:`Batch` scoring the positions where ``weights`` is true."""
        n, longest = self.hyper.context, max(len(s) for s in seqs)
        tokens = np.zeros((len(seqs), n + longest), np.int64)
        valid = np.zeros((len(seqs), longest), np.bool_)
        scored = np.zeros((len(seqs), longest), np.bool_)
        for i, (seq, weight) in enumerate(zip(seqs, weights, strict=True)):
            tokens[i, n : n + len(seq)] = seq
            valid[i, : len(seq)] = True
            scored[i, : len(seq)] = weight
        body = tokens[:, n:]
        prev = tokens[:, n - 1 : -1] if n else np.zeros_like(body)
        bigrams = (prev * len(self.vocab) + body) % self.hyper.buckets
        rows, cols = np.nonzero(scored)
        return Batch(tokens, bigrams, valid, rows, cols, body[rows, cols])

    # --- forward and backward ----------------------------------------------------------------

    def _features(self, b: Batch) -> tuple[Floats, Floats]:
        """Inputs ``x`` of the scored positions ``(P, width)`` and the raw bigram embeddings."""
        p, h = self.params, self.hyper
        windows = sliding_window_view(b.tokens, h.context, axis=1)[b.rows, b.cols]
        ctx = p["E"][windows].reshape(len(b.rows), h.context * h.embed)
        grams = p["U"][b.bigrams] * b.valid[..., None]
        before = np.cumsum(grams, axis=1, dtype=np.float32) - grams
        counts = np.maximum(b.cols, 1).astype(np.float32)[:, None]
        memory = before[b.rows, b.cols] / counts
        return np.concatenate([ctx, memory], axis=1), grams

    def _logprobs(self, x: Floats) -> tuple[Floats, Floats]:
        p = self.params
        hidden = np.tanh(x @ p["W1"] + p["b1"])
        logits = hidden @ p["W2"] + p["b2"]
        logits -= logits.max(axis=1, keepdims=True)
        logits -= np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return logits, hidden

    def token_logprobs(self, b: Batch) -> Floats:
        """Log-probability of each scored target, in ``rows``/``cols`` order."""
        if not len(b.rows):
            return np.zeros(0, np.float32)
        logp, _ = self._logprobs(self._features(b)[0])
        return logp[np.arange(len(b.targets)), b.targets]

    def loss(self, b: Batch) -> float:
        """Mean cross-entropy (nats per character) over the scored positions."""
        return float(-self.token_logprobs(b).mean())

    def loss_and_grads(self, b: Batch) -> tuple[float, Params]:
        """Mean cross-entropy over the scored positions and its gradient for every parameter."""
        p, h = self.params, self.hyper
        x, _ = self._features(b)
        logp, hidden = self._logprobs(x)
        count = len(b.targets)
        picked = np.arange(count)
        loss = float(-logp[picked, b.targets].mean())
        dlogits = np.exp(logp)
        dlogits[picked, b.targets] -= 1.0
        dlogits /= count
        grads: Params = {"W2": hidden.T @ dlogits, "b2": dlogits.sum(axis=0)}
        dpre = (dlogits @ p["W2"].T) * (1.0 - hidden * hidden)
        grads["W1"], grads["b1"] = x.T @ dpre, dpre.sum(axis=0)
        dx = dpre @ p["W1"].T
        width = h.context * h.embed
        windows = sliding_window_view(b.tokens, h.context, axis=1)[b.rows, b.cols]
        grads["E"] = _scatter_add(windows.ravel(), dx[:, :width].reshape(-1, h.embed), len(p["E"]))
        dmemory = np.zeros((*b.bigrams.shape, h.memory), np.float32)
        dmemory[b.rows, b.cols] = dx[:, width:] / np.maximum(b.cols, 1).astype(np.float32)[:, None]
        # memory[t] = sum_{s<t} g[s] / t, so dg[s] = sum_{t>s} dmemory[t] / t (a reverse cumsum).
        after = np.cumsum(dmemory[:, ::-1], axis=1, dtype=np.float32)[:, ::-1] - dmemory
        grads["U"] = _scatter_add(b.bigrams[b.valid], after[b.valid], h.buckets)
        return loss, grads

    def next_logprobs(self, window: Ints, memory: Floats) -> Floats:
        """Log-probabilities of the next character for one position (generation).

        Args:
            window: The previous ``context`` token ids (PAD on the left when fewer).
            memory: The mean bigram embedding of everything before the position.
        """
        x = np.concatenate([self.params["E"][window].ravel(), memory])[None, :]
        logp: Floats = self._logprobs(x.astype(np.float32))[0][0]
        return logp

    # --- persistence -------------------------------------------------------------------------

    def save(self, path: Path, meta: dict[str, Any] | None = None) -> int:
        """Write an ``.npz`` (vocab, hyperparameters, weights) atomically; return its size.

        The file is private (0600, in directories created 0700); a failed write (disk full)
        removes its temporary file and raises the ``OSError``.
        """
        header = {"vocab": self.vocab, "hyper": attrs.asdict(self.hyper), "meta": meta or {}}
        buf = io.BytesIO()
        arrays: dict[str, Any] = {"header": np.array(json.dumps(header)), **self.params}
        np.savez(buf, **arrays)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = buf.getbuffer()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # never leave a partial file behind (e.g. disk full)
            raise
        return len(data)

    @classmethod
    def load(cls, path: Path) -> CharModel:
        """Read a model written by :meth:`save`. Raises FileNotFoundError if it is absent."""
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            params = {k: data[k].astype(np.float32) for k in data.files if k != "header"}
        vocab = str(header["vocab"])
        if not vocab.startswith(PAD):
            raise ValueError(f"{path} is not a model checkpoint")
        return cls(vocab, Hyper(**header["hyper"]), params)


def _scatter_add(index: Ints, values: Floats, size: int) -> Floats:
    """``out[index[i]] += values[i]`` row-wise; a bincount per column beats ``np.add.at``."""
    out = np.empty((size, values.shape[1]), np.float32)
    for col in range(values.shape[1]):
        out[:, col] = np.bincount(index, weights=values[:, col], minlength=size)
    return out


@functools.cache
def _thread_local_blas_setter() -> Callable[[int], int] | None:
    """OpenBLAS's ``openblas_set_num_threads_local`` (>= 0.3.27) from the loaded library, if any."""
    candidates: list[str] = []
    maps = Path("/proc/self/maps")
    with contextlib.suppress(OSError):
        if maps.exists():
            candidates = [line.split()[-1] for line in maps.read_text().splitlines()]
    root = Path(np.__file__).parent
    candidates += [
        str(p) for d in (root.parent / "numpy.libs", root / ".dylibs") for p in d.glob("*")
    ]
    for path in dict.fromkeys(c for c in candidates if "openblas" in c.lower()):
        try:
            setter = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
        return cast("Callable[[int], int]", setter)
    return None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run BLAS single-threaded in the calling thread only, restoring its setting afterwards.

    The engine's matrices are small: with OpenBLAS's thread pool, two cores spend twice the CPU
    time and more wall time on them (and tiny products are ~100x slower). Other threads and the
    process environment are untouched; without a thread-local OpenBLAS this does nothing.
    """
    setter = _thread_local_blas_setter()
    previous = setter(1) if setter else None
    try:
        yield
    finally:
        if setter and previous is not None:
            setter(previous)
