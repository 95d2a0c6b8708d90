"""Prometheus metrics, on a registry of the app's own (tests may start several servers)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("chinwag_sessions_active", "Sessions connected now", registry=r)
        self.sessions_total = Counter(
            "chinwag_sessions_opened", "Sessions opened", ["transport"], registry=r
        )
        self.turns = Counter(
            "chinwag_turns_total", "Replies by how they ended", ["status"], registry=r
        )
        self.errors = Counter(
            "chinwag_errors_total", "Error events sent to clients", ["code"], registry=r
        )
        self.time_to_first_token = Histogram(
            "chinwag_time_to_first_token_seconds",
            "From the user's message to the first reply token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "chinwag_llm_queue_wait_seconds",
            "Time a reply waited for the model (other sessions' replies)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "chinwag_tokens_per_second",
            "Generation speed per reply",
            buckets=(5, 10, 20, 40, 60, 80, 100, 150, 200, 300, 500),
            registry=r,
        )
        self.completion_tokens = Counter(
            "chinwag_completion_tokens_total", "Tokens generated", registry=r
        )
        self.prompt_tokens = Counter(
            "chinwag_prompt_tokens_total",
            "Prompt tokens, and how many came from the KV cache",
            ["source"],
            registry=r,
        )

        self.speech_queue_wait = Histogram(
            "chinwag_speech_queue_wait_seconds",
            "Time a speech job waited for its worker (asr_turn, asr_partial, tts_first, ...)",
            ["job"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.speech_run = Histogram(
            "chinwag_speech_run_seconds",
            "Time a speech job ran on its worker",
            ["job"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.speech_late_phrases = Counter(
            "chinwag_speech_late_phrases_total",
            "Later phrases of a reply ready only after playback had reached them (a gap)",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
