"""Piper's audio streamed below the sentence: the VITS graph split at its latent.

A Piper voice is one ONNX graph: phoneme ids -> text encoder, duration predictor and the random
sampling of the prior (`z_p`) -> normalising flow -> latent `z` [1, C, T frames] -> HiFi-GAN
decoder -> T * hop samples. Piper runs it whole, so a sentence's first sound waits for all of
its audio. The flow and the decoder are convolutional, each output frame depends only on a
few latent frames around it, so the graph is split in three (onnx.utils.Extractor, at load
time, in memory; the voice file stays as it is):

- front: phonemes -> `z_p` and its mask. Both random draws of VITS are in here, so a sentence
  gets one draw and every window below decodes the same latent;
- flow: `z_p` -> `z`;
- decoder: `z` -> audio.

The decoder then runs over windows of `z` widened by `DECODER_CONTEXT` frames on each side,
and each window keeps only its own frames' samples: with the context at least the decoder's
receptive field, the samples are the ones the whole graph makes (docs/performance.md,
"Piper's audio below the sentence", gives the measured difference). The first window's
latent comes from a flow run over just its frames and `FLOW_CONTEXT` more, so the first audio
waits for the front, a short flow and a short decode, not for the whole sentence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime  # type: ignore[import-untyped]

Float32Array = npt.NDArray[np.float32]

# Latent frames of context each side of a window: how far a latent frame's change reaches
# in the joe voice's decoder (10 frames) and flow (30; its 4 couplings of 4 convolutions of
# kernel 5 could reach 32), measured (tests/unit/test_piper_stream.py), plus 2.
DECODER_CONTEXT = 12
FLOW_CONTEXT = 32
# The first window: about 0.28 s of audio at 22.05 kHz (hop 256), so the first audio waits
# for a short decode only. The rest comes in windows of 1.5 s: few, so the context decoded
# twice costs about a fifth more decoding, and the second is ready well before the first
# has played (0.1 s for it on a quiet core, against the first window's 0.28 s).
FIRST_WINDOW_FRAMES = 24
WINDOW_FRAMES = 128


@dataclass(frozen=True)
class Window:
    """Latent frames [start, end) are kept; [context_start, context_end) are decoded."""

    start: int
    end: int
    context_start: int
    context_end: int


def plan_windows(
    frames: int,
    *,
    first: int = FIRST_WINDOW_FRAMES,
    size: int = WINDOW_FRAMES,
    context: int = DECODER_CONTEXT,
) -> list[Window]:
    """Windows covering [0, frames) once, in order: `first` frames, then `size` frames each;
    a remainder shorter than `first` joins the window before it rather than cost a decode
    (and twice the context) of its own."""
    if first < 1 or size < first or context < 0:
        raise ValueError("need 1 <= first <= size and context >= 0")
    windows: list[Window] = []
    start, length = 0, first
    while start < frames:
        end = min(frames, start + length)
        if frames - end < first:
            end = frames
        windows.append(Window(start, end, max(0, start - context), min(frames, end + context)))
        start, length = end, size
    return windows


def keep_window(decoded: Float32Array, window: Window, hop: int) -> Float32Array:
    """A window's own samples out of the audio decoded from its widened frames."""
    expected = (window.context_end - window.context_start) * hop
    if decoded.size != expected:
        raise ValueError(f"decoded {decoded.size} samples, expected {expected}")
    offset = (window.start - window.context_start) * hop
    return decoded[offset : offset + (window.end - window.start) * hop]


@dataclass(frozen=True)
class VitsSplit:
    """The three parts of a voice graph, serialized, and the tensors that join them."""

    front: bytes
    flow: bytes
    decoder: bytes
    prior: str  # z_p, the flow's input
    mask: str  # the frames' mask [1, 1, T], the flow's other input
    latent: str  # z, the decoder's input


def split_vits(model_path: Path) -> VitsSplit | None:
    """Split a Piper voice into front, flow and decoder; None for a graph this does not
    know (not a single-speaker VITS export with /flow/ and /dec/ scopes)."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(str(model_path))
    graph = model.graph
    if len(graph.output) != 1 or {i.name for i in graph.input} != {
        "input",
        "input_lengths",
        "scales",
    }:
        return None
    initializers = {i.name for i in graph.initializer}
    producer: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.output:
            producer[name] = index

    def scope(prefix: str) -> set[int]:
        return {i for i, node in enumerate(graph.node) if node.name.startswith(prefix)}

    def downstream(start: set[int]) -> set[int]:
        """`start` and every node that uses what they compute (the exporter leaves some of
        the flow's own nodes without its scope)."""
        found = set(start)
        for index, node in enumerate(graph.node):  # nodes are in topological order
            if index not in found and any(
                name in producer and producer[name] in found for name in node.input
            ):
                found.add(index)
        return found

    def inputs_from_outside(part: set[int]) -> set[str]:
        return {
            name
            for i in part
            for name in graph.node[i].input
            if name and name not in initializers and producer.get(name, -1) not in part
        }

    decoder_nodes = scope("/dec/")
    flow_nodes = scope("/flow/")
    if not decoder_nodes or not flow_nodes:
        return None
    latent_in = inputs_from_outside(decoder_nodes)
    tail = downstream(flow_nodes)
    flow_in = inputs_from_outside(tail - downstream(decoder_nodes))
    if len(latent_in) != 1 or len(flow_in) != 2:
        return None
    (latent,) = latent_in
    # z_p is drawn from both random draws (the durations' and its own); the mask [1, 1, T]
    # only from the durations'.
    draws = {name: _random_sources(graph, producer, name) for name in flow_in}
    prior, mask = sorted(flow_in, key=lambda name: draws[name], reverse=True)
    if draws[prior] <= draws[mask]:
        return None
    if any(graph.node[i].op_type.startswith("Random") for i in tail):
        return None  # the random draw must happen once per sentence, in the front
    extractor = Extractor(model)
    names = [i.name for i in graph.input]
    output = graph.output[0].name
    return VitsSplit(
        front=extractor.extract_model(names, [prior, mask]).SerializeToString(),
        flow=extractor.extract_model([prior, mask], [latent]).SerializeToString(),
        decoder=extractor.extract_model([latent], [output]).SerializeToString(),
        prior=prior,
        mask=mask,
        latent=latent,
    )


def _random_sources(graph: Any, producer: dict[str, int], name: str) -> int:
    """How many random nodes the tensor `name` is computed from."""
    nodes = graph.node
    seen: set[str] = set()
    found: set[int] = set()
    stack = [name]
    while stack:
        current = stack.pop()
        if current in seen or current not in producer:
            continue
        seen.add(current)
        index = producer[current]
        if nodes[index].op_type.startswith("Random"):
            found.add(index)
        stack.extend(n for n in nodes[index].input if n)
    return len(found)


class Session(Protocol):
    """What StreamingVits uses of an onnxruntime.InferenceSession."""

    def run(
        self, output_names: list[str] | None, input_feed: dict[str, npt.NDArray[Any]]
    ) -> list[npt.NDArray[Any]]: ...


@dataclass(frozen=True)
class StreamingVits:
    """The split voice on three sessions; blocking, safe from several threads."""

    front: Session
    flow: Session
    decoder: Session
    split: VitsSplit
    hop: int  # samples per latent frame

    @classmethod
    def load(cls, split: VitsSplit, options: onnxruntime.SessionOptions, hop: int) -> StreamingVits:
        def session(model: bytes) -> Session:
            return onnxruntime.InferenceSession(  # type: ignore[no-any-return]
                model, sess_options=options, providers=["CPUExecutionProvider"]
            )

        sessions = session(split.front), session(split.flow), session(split.decoder)
        # The sessions hold the weights; the serialized parts need not stay (62 MB for joe).
        names = dataclasses.replace(split, front=b"", flow=b"", decoder=b"")
        return cls(*sessions, names, hop)

    def prior(
        self, phoneme_ids: list[int], scales: tuple[float, float, float]
    ) -> tuple[Float32Array, Float32Array]:
        """The sentence's sampled prior z_p and mask: its one random draw."""
        prior, mask = self.front.run(
            [self.split.prior, self.split.mask],
            {
                "input": np.array([phoneme_ids], dtype=np.int64),
                "input_lengths": np.array([len(phoneme_ids)], dtype=np.int64),
                "scales": np.array(scales, dtype=np.float32),
            },
        )
        return prior, mask

    def latent(self, prior: Float32Array, mask: Float32Array) -> Float32Array:
        (latent,) = self.flow.run(
            [self.split.latent], {self.split.prior: prior, self.split.mask: mask}
        )
        return np.asarray(latent, dtype=np.float32)

    def decode(self, latent: Float32Array) -> Float32Array:
        (audio,) = self.decoder.run(None, {self.split.latent: latent})
        return np.asarray(audio, dtype=np.float32).reshape(-1)

    def windows(self, prior: Float32Array, mask: Float32Array) -> Iterator[Float32Array]:
        """The sentence's audio (float, as the graph makes it), a window at a time."""
        frames = int(prior.shape[2])
        plan = plan_windows(frames)
        if not plan:
            return
        first = plan[0]
        head = min(frames, first.context_end + FLOW_CONTEXT)
        latent = self.latent(prior[:, :, :head], mask[:, :, :head])
        yield keep_window(
            self.decode(latent[:, :, first.context_start : first.context_end]), first, self.hop
        )
        if head < frames:
            latent = self.latent(prior, mask)
        for window in plan[1:]:
            decoded = self.decode(latent[:, :, window.context_start : window.context_end])
            yield keep_window(decoded, window, self.hop)
