"""Whisper's encoder in NumPy, with the loaded model's own weights and the runtime's GELU and
attention: the ``runtime`` encoder back-end (``AMANUENSIS_ENCODER_BACKEND=runtime``).

Weights are read from the CTranslate2 model directory by :mod:`npu.ops.ct2_reader` (no
CTranslate2 call) and widened to float32. The computation is Whisper's: two convolutions
(kernel 3, padding 1, the second with stride 2) each followed by GELU, sinusoidal position
embeddings, ``n`` pre-norm transformer blocks (layer norm -> fused QKV projection -> attention
per head -> output projection, residual; layer norm -> linear -> GELU -> linear, residual) and a
final layer norm. Matrix products run on the CPU (NumPy/BLAS); every GELU and every head's
attention goes through ``runtime.gelu`` / ``runtime.attention``, so they run on the NPU when the
runtime has it. CTranslate2 decodes from the result (``Whisper.generate`` takes encoder output).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npu.ops.ct2_reader import Ct2Model, read_model

LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True)
class Linear:
    weight_t: np.ndarray
    bias: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = x @ self.weight_t
        out += self.bias
        return out


@dataclass(frozen=True)
class LayerNorm:
    gamma: np.ndarray
    beta: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        centred = x - mean
        variance = np.mean(centred * centred, axis=-1, keepdims=True)
        centred *= 1.0 / np.sqrt(variance + np.float32(LAYER_NORM_EPS))
        centred *= self.gamma
        centred += self.beta
        return centred


@dataclass(frozen=True)
class Conv1d:
    """Kernel-3 convolution with padding 1, as im2col and one matrix product."""

    weight: np.ndarray  # [out, in * 3], in-major like the [out, in, 3] weight
    bias: np.ndarray
    stride: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x`` [in, time] -> [time_out, out]."""
        padded = np.pad(x, ((0, 0), (1, 1)))
        steps = (padded.shape[1] - 3) // self.stride + 1
        columns = np.stack([padded[:, k:k + self.stride * steps:self.stride] for k in range(3)],
                           axis=1).reshape(x.shape[0] * 3, steps)
        out = (self.weight @ columns).T
        out += self.bias
        return out


@dataclass(frozen=True)
class Block:
    attention_norm: LayerNorm
    qkv: Linear
    out: Linear
    ffn_norm: LayerNorm
    ffn_in: Linear
    ffn_out: Linear


class WhisperEncoder:
    """The encoder of one CTranslate2 Whisper model; ``encode`` runs it for one 30 s chunk."""

    def __init__(self, model: Ct2Model) -> None:
        if model.spec != "WhisperSpec":
            raise ValueError(f"not a Whisper model: spec {model.spec!r}")
        self.n_heads = int(model["encoder/num_heads"])
        self.conv1 = self._conv(model, "encoder/conv1", stride=1)
        self.conv2 = self._conv(model, "encoder/conv2", stride=2)
        self.positions = model.float32("encoder/position_encodings/encodings")
        self.final_norm = self._norm(model, "encoder/layer_norm")
        self.blocks = []
        index = 0
        while f"encoder/layer_{index}/ffn/linear_0/weight" in model.variables:
            prefix = f"encoder/layer_{index}"
            self.blocks.append(Block(
                self._norm(model, f"{prefix}/self_attention/layer_norm"),
                self._linear(model, f"{prefix}/self_attention/linear_0"),
                self._linear(model, f"{prefix}/self_attention/linear_1"),
                self._norm(model, f"{prefix}/ffn/layer_norm"),
                self._linear(model, f"{prefix}/ffn/linear_0"),
                self._linear(model, f"{prefix}/ffn/linear_1")))
            index += 1
        self.n_mels = self.conv1.weight.shape[1] // 3
        self.d_model = self.positions.shape[1]

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> WhisperEncoder:
        return cls(read_model(model_dir))

    @staticmethod
    def _linear(model: Ct2Model, name: str) -> Linear:
        return Linear(np.ascontiguousarray(model.float32(f"{name}/weight").T),
                      model.float32(f"{name}/bias"))

    @staticmethod
    def _norm(model: Ct2Model, name: str) -> LayerNorm:
        return LayerNorm(model.float32(f"{name}/gamma"), model.float32(f"{name}/beta"))

    @staticmethod
    def _conv(model: Ct2Model, name: str, stride: int) -> Conv1d:
        weight = model.float32(f"{name}/weight")
        return Conv1d(weight.reshape(weight.shape[0], -1), model.float32(f"{name}/bias"), stride)

    def encode(self, features: np.ndarray, runtime) -> np.ndarray:
        """Log-mel ``[n_mels, 3000]`` -> encoder output ``[1500, d_model]`` (float32)."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[0] != self.n_mels:
            raise ValueError(f"features must be [{self.n_mels}, frames], got {features.shape}")
        x = runtime.gelu(self.conv1(features))
        x = runtime.gelu(self.conv2(np.ascontiguousarray(x.T)))
        if x.shape[0] != self.positions.shape[0]:
            raise ValueError(f"features must be {2 * self.positions.shape[0]} frames, "
                             f"got {features.shape[1]}")
        x = x + self.positions
        for block in self.blocks:
            x += self._attention(block, x, runtime)
            x += block.ffn_out(runtime.gelu(block.ffn_in(block.ffn_norm(x))))
        return self.final_norm(x)

    def _attention(self, block: Block, x: np.ndarray, runtime) -> np.ndarray:
        steps, head_dim = x.shape[0], self.d_model // self.n_heads
        qkv = block.qkv(block.attention_norm(x)).reshape(steps, 3, self.n_heads, head_dim)
        q, k, v = (np.ascontiguousarray(qkv[:, i].transpose(1, 0, 2)) for i in range(3))
        heads = runtime.attention(q, k, v)
        return block.out(heads.transpose(1, 0, 2).reshape(steps, self.d_model))

    def flops(self, frames: int = 3000) -> dict[str, float]:
        """Multiply-add FLOPs (2 per MAC) of one chunk: ``attention`` (Q K^T and P V, what the
        NPU attention kernel takes), ``gelu`` (counted as one per element: the NPU takes them
        too) and ``cpu_matmul`` (convolutions and projections, which stay on the CPU)."""
        steps, d, n_layers = frames // 2, self.d_model, len(self.blocks)
        ffn = self.blocks[0].ffn_in.weight_t.shape[1] if self.blocks else 0
        conv = 2 * frames * d * self.n_mels * 3 + 2 * steps * d * d * 3
        projections = n_layers * 2 * steps * d * (3 * d + d + 2 * ffn)
        attention = n_layers * 2 * 2 * steps * steps * d
        gelu = frames * d + steps * d + n_layers * steps * ffn
        return {"attention": float(attention), "gelu": float(gelu),
                "cpu_matmul": float(conv + projections)}
