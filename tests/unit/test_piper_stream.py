"""Piper's audio below the sentence (server/engines/piper_stream.py): the window plan, the
stitching on a fake convolutional flow and decoder, and the real voice split and streamed."""

from __future__ import annotations

import itertools
import re
from typing import Any

import jiwer
import numpy as np
import numpy.typing as npt
import pytest
import soxr

from server.engines.faster_whisper import WhisperTranscriber
from server.engines.piper import PiperSynthesizer
from server.engines.piper_stream import (
    DECODER_CONTEXT,
    FIRST_WINDOW_FRAMES,
    FLOW_CONTEXT,
    WINDOW_FRAMES,
    StreamingVits,
    VitsSplit,
    Window,
    keep_window,
    plan_windows,
    split_vits,
)
from tests.model_paths import piper_voice, whisper_dir

HOP = 8
LONG = "It is twenty one degrees in the living room, and the heating is set to twenty."
SPOKEN = "Hello there. The quick brown fox jumps over the lazy dog, and the kitchen lights are on."


def words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def snr_db(reference: npt.NDArray[np.float32], other: npt.NDArray[np.float32]) -> float:
    error = float(np.sum((other - reference) ** 2))
    return float("inf") if error == 0 else 10 * np.log10(float(np.sum(reference**2)) / error)


# --- the window plan -------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 5, 23, 24, 30, 47, 48, 151, 152, 175, 176, 344, 1000])
def test_windows_cover_every_frame_once_in_order(frames: int) -> None:
    plan = plan_windows(frames)
    assert plan[0].start == 0 and plan[-1].end == frames
    for before, after in itertools.pairwise(plan):
        assert before.end == after.start
    for window in plan:
        assert window.start < window.end
        assert window.context_start == max(0, window.start - DECODER_CONTEXT)
        assert window.context_end == min(frames, window.end + DECODER_CONTEXT)


def test_windows_start_short_then_take_the_rest_in_long_windows() -> None:
    sizes = [w.end - w.start for w in plan_windows(1000)]
    first = FIRST_WINDOW_FRAMES
    assert sizes[0] == first
    assert all(s == WINDOW_FRAMES for s in sizes[1:-1])
    assert first <= sizes[-1] < WINDOW_FRAMES + first  # the remainder, merged if short


def test_a_short_remainder_joins_the_window_before() -> None:
    first = FIRST_WINDOW_FRAMES
    # 24 + 128 = 152 frames; 170 frames leave 18 < 24 after the second window.
    assert [(w.start, w.end) for w in plan_windows(170)] == [(0, first), (first, 170)]
    # A sentence shorter than two first windows is one window.
    assert [(w.start, w.end) for w in plan_windows(2 * first - 1)] == [(0, 2 * first - 1)]


def test_plan_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        plan_windows(10, first=0)
    with pytest.raises(ValueError):
        plan_windows(10, first=8, size=4)


def test_keep_window_takes_the_windows_own_samples() -> None:
    window = Window(start=10, end=14, context_start=6, context_end=18)
    decoded = np.arange(12 * HOP, dtype=np.float32)
    kept = keep_window(decoded, window, HOP)
    assert kept.tolist() == list(range(4 * HOP, 8 * HOP))
    with pytest.raises(ValueError):
        keep_window(decoded[:-1], window, HOP)


# --- stitching, on fake convolutional parts ------------------------------------------------------


def local_mix(x: npt.NDArray[np.float32], radius: int, seed: int) -> npt.NDArray[np.float32]:
    """A nonlinear convolution over frames (axis 2) reaching `radius` frames each side, with
    zeros beyond the edges, as the flow's and decoder's convolutions pad."""
    weights = np.random.default_rng(seed).standard_normal(2 * radius + 1).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (radius, radius)))
    frames = x.shape[2]
    out = sum(w * padded[:, :, k : k + frames] for k, w in enumerate(weights))
    return np.tanh(np.asarray(out, dtype=np.float32))


class FakeSession:
    def __init__(self, run: Any) -> None:
        self._run = run
        self.frames_run: list[int] = []

    def run(self, names: list[str] | None, feed: dict[str, Any]) -> list[Any]:
        result: list[Any] = self._run(feed)
        self.frames_run.append(int(next(iter(feed.values())).shape[-1]))
        return result


def fake_vits(flow_radius: int, decoder_radius: int) -> StreamingVits:
    split = VitsSplit(b"", b"", b"", prior="z_p", mask="y_mask", latent="z")

    def decode(feed: dict[str, Any]) -> list[Any]:
        mixed = local_mix(feed["z"], decoder_radius, seed=2).sum(axis=1)  # [1, T]
        ramp = np.linspace(0.5, 1.0, HOP, dtype=np.float32)
        return [(mixed[:, :, None] * ramp).reshape(1, 1, 1, -1)]  # [1, 1, 1, T * HOP]

    return StreamingVits(
        front=FakeSession(lambda feed: []),
        flow=FakeSession(lambda feed: [local_mix(feed["z_p"], flow_radius, 1) * feed["y_mask"]]),
        decoder=FakeSession(decode),
        split=split,
        hop=HOP,
    )


@pytest.mark.parametrize("frames", [1, 16, 40, 73, 200, 517])
def test_windows_stitch_to_the_whole_decode(frames: int) -> None:
    vits = fake_vits(FLOW_CONTEXT - 8, DECODER_CONTEXT - 4)
    rng = np.random.default_rng(frames)
    prior = rng.standard_normal((1, 6, frames)).astype(np.float32)
    mask = np.ones((1, 1, frames), dtype=np.float32)
    whole = vits.decode(vits.latent(prior, mask))
    chunks = list(vits.windows(prior, mask))
    assert len(chunks) == len(plan_windows(frames))
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-5)


def test_the_first_window_decodes_only_its_own_frames_and_context() -> None:
    vits = fake_vits(FLOW_CONTEXT, DECODER_CONTEXT)
    prior = np.ones((1, 4, 400), dtype=np.float32)
    stream = vits.windows(prior, np.ones((1, 1, 400), dtype=np.float32))
    first = next(stream)
    assert first.size == FIRST_WINDOW_FRAMES * HOP
    first_window = FIRST_WINDOW_FRAMES + DECODER_CONTEXT
    assert isinstance(vits.flow, FakeSession) and isinstance(vits.decoder, FakeSession)
    assert vits.flow.frames_run == [first_window + FLOW_CONTEXT]
    assert vits.decoder.frames_run == [first_window]
    list(stream)
    assert vits.flow.frames_run == [first_window + FLOW_CONTEXT, 400]  # then the whole flow


def test_no_frames_no_windows() -> None:
    vits = fake_vits(4, 4)
    empty = np.zeros((1, 6, 0), dtype=np.float32)
    assert plan_windows(0) == []
    assert list(vits.windows(empty, np.zeros((1, 1, 0), dtype=np.float32))) == []


def test_too_little_context_shows_in_the_stitched_audio() -> None:
    """The comparison above would see a decoder reaching beyond the context."""
    vits = fake_vits(4, DECODER_CONTEXT + 6)
    prior = np.random.default_rng(0).standard_normal((1, 6, 200)).astype(np.float32)
    mask = np.ones((1, 1, 200), dtype=np.float32)
    whole = vits.decode(vits.latent(prior, mask))
    assert not np.allclose(np.concatenate(list(vits.windows(prior, mask))), whole, atol=1e-5)


# --- the real voice ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def streaming_piper() -> PiperSynthesizer:
    return PiperSynthesizer(piper_voice(), stream_decoder=True)


@pytest.mark.models
def test_the_voice_splits_after_its_random_draws() -> None:
    import onnx

    split = split_vits(piper_voice())
    assert split is not None
    for part, random_ops in ((split.front, 2), (split.flow, 0), (split.decoder, 0)):
        graph = onnx.load_from_string(part).graph
        assert sum(n.op_type.startswith("Random") for n in graph.node) == random_ops
    assert [i.name for i in onnx.load_from_string(split.decoder).graph.input] == [split.latent]


@pytest.mark.models
def test_the_contexts_cover_how_far_a_latent_frame_reaches(
    streaming_piper: PiperSynthesizer,
) -> None:
    """Change one frame in the middle of a latent: the flow's and the decoder's outputs change
    only within FLOW_CONTEXT and DECODER_CONTEXT frames of it (what makes the windows exact)."""
    streaming = streaming_piper._streaming
    assert streaming is not None
    frames, middle = 160, 80
    rng = np.random.default_rng(0)
    prior = (rng.standard_normal((1, 192, frames)) * 0.5).astype(np.float32)
    mask = np.ones((1, 1, frames), dtype=np.float32)
    changed = prior.copy()
    changed[:, :, middle] += 1.0
    moved = np.abs(streaming.latent(changed, mask) - streaming.latent(prior, mask)).max(axis=(0, 1))
    reach = np.nonzero(moved > 1e-6)[0]
    assert reach.size and middle - reach.min() <= FLOW_CONTEXT - 2
    assert reach.max() - middle <= FLOW_CONTEXT - 2
    latent = streaming.latent(prior, mask)
    nudged = latent.copy()
    nudged[:, :, middle] += 1.0
    moved = np.abs(streaming.decode(nudged) - streaming.decode(latent))
    samples = np.nonzero(moved > 1e-7)[0]
    hop = streaming.hop
    assert samples.size
    assert middle * hop - samples.min() <= (DECODER_CONTEXT - 2) * hop
    assert samples.max() - (middle + 1) * hop < (DECODER_CONTEXT - 2) * hop


@pytest.mark.models
def test_streamed_audio_equals_the_whole_graphs(streaming_piper: PiperSynthesizer) -> None:
    """Without VITS's random draws the unsplit graph is deterministic: the windows, stitched,
    give its samples (float rounding apart)."""
    streamed = list(streaming_piper.stream_float(LONG, noise=False))
    (whole,) = streaming_piper.whole_float(LONG, noise=False)
    assert len(streamed) >= 3  # several windows for one sentence
    stitched = np.concatenate([audio for _, audio in streamed])
    assert stitched.size == whole.size
    assert snr_db(whole, stitched) > 60.0  # measured about 130 dB


@pytest.mark.models
def test_one_random_draw_per_sentence(streaming_piper: PiperSynthesizer) -> None:
    """With the voice's noise, every window of a sentence decodes the same sampled latent:
    the stitched windows equal that latent decoded whole."""
    streaming = streaming_piper._streaming
    assert streaming is not None
    voice = streaming_piper._voice
    ids = voice.phonemes_to_ids(voice.phonemize(LONG)[0])
    prior, mask = streaming.prior(ids, streaming_piper._scales(streaming_piper._config))
    whole = streaming.decode(streaming.latent(prior, mask))
    stitched = np.concatenate(list(streaming.windows(prior, mask)))
    assert snr_db(whole, stitched) > 60.0


@pytest.mark.models
def test_streamed_speech_transcribes_back(streaming_piper: PiperSynthesizer) -> None:
    whisper = WhisperTranscriber(whisper_dir())
    chunks = list(streaming_piper.synthesize(SPOKEN))
    assert len(chunks) >= 3 and all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    first_s = len(chunks[0]) / streaming_piper.sample_rate
    assert first_s < 0.3  # the first window, not the first sentence
    pcm = np.concatenate(chunks)
    assert 0.05 < np.abs(pcm).max() / 32767 <= 1.0
    audio = soxr.resample(pcm.astype(np.float32) / 32768, streaming_piper.sample_rate, 16000)
    heard = whisper.transcribe(audio.astype(np.float32)).text
    assert jiwer.wer(words(SPOKEN), words(heard)) <= 0.2, heard


@pytest.mark.models
def test_stream_decoder_off_keeps_piper_whole() -> None:
    voice = PiperSynthesizer(piper_voice())
    assert not voice.streams_decoder
    assert len(list(voice.synthesize("Sure!"))) == 1
    with pytest.raises(RuntimeError):
        next(voice.stream_float("Sure!"))
