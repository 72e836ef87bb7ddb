"""Every knob of the service: `DYNAQA_*` environment variables or `dynaqa serve` flags.

Built explicitly and passed to `create_app(settings)`; nothing reads the environment at import.
Defaults work on a laptop: in-process state, the shipped checkpoint, loopback port 8000.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.data.squad import MAX_QUESTION_TOKENS
from models.infer.quantize import Int8Mode


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DYNAQA_", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    checkpoint: Path | None = Field(None, description="Checkpoint directory; default: the shipped one.")
    redis_url: str | None = Field(None, description="Redis for fleet state; unset keeps state in-process.")
    replica_id: str | None = Field(None, description="Name of this replica in fleet state (default: host:pid).")
    cache_dir: Path = Field(
        Path("/tmp/dynaqa"), description="Where calibrated latency profiles and the INT8 decision are cached."
    )

    default_budget_ms: float = Field(1000.0, gt=0, description="Budget when a request names none.")
    min_budget_ms: float = Field(1.0, gt=0, description="Budgets are clamped up to this.")
    max_budget_ms: float = Field(60_000.0, gt=0, description="Budgets are clamped down to this.")
    network_ms: float = Field(
        2.0,
        ge=0,
        description="Part of every budget left for what happens outside this process (the network, the "
        "caller's HTTP stack): plans end this much before the budget. A Python client on loopback "
        "measured 3 ms (p50) between its clock and the server's.",
    )
    lenient_grace_ms: float = Field(
        2000.0, ge=0, description="A lenient request still queued this long past its budget is dropped (504)."
    )

    max_queue: int = Field(64, ge=1, description="Requests waiting for the model; past it: 503 + Retry-After.")
    max_batch_windows: int = Field(8, ge=1, description="Windows in one micro-batch.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Request bodies larger than this get 413.")
    max_context_chars: int = Field(20_000, ge=100, description="Contexts longer than this get 413.")
    max_question_chars: int = Field(1_000, ge=10, description="Questions longer than this get 422.")
    max_batch_questions: int = Field(64, ge=1, description="A call with more questions than this gets 413.")
    max_batch_chars: int = Field(
        200_000, ge=100, description="A call whose questions and contexts add up to more characters gets 413."
    )
    max_length: int = Field(384, ge=128, le=512, description="Tokens per window.")
    stride: int = Field(128, ge=0, description="Tokens of overlap between windows of a long context.")
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 keeps torch's default (all cores).")
    compile: bool = Field(
        False,
        description="Compile the model's layer steps with TorchInductor during calibration (15-30 s once, on "
        "the model thread, before readiness). Off by default: the shipped profile's F1 and latencies were "
        "measured eagerly, and compiled INT8 scored up to 0.3 F1 lower (docs/results.md). Falls back to "
        "eager, with a warning, where no C++ compiler works.",
    )
    int8: Int8Mode = Field(
        "auto",
        description="Serve the profile's INT8 configurations: auto (only where this CPU's INT8 kernel is at "
        "least 1.1x the float matmul, probed by the first replica of this hardware and recorded in fleet "
        "state and DYNAQA_CACHE_DIR: oneDNN's where it pays, as on AVX-512 VNNI, else FBGEMM's, which the "
        "probe reads at 1.16-1.6x on AVX2), on, or off. "
        "A pinned sub-network is served as named.",
    )
    model_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness added to the model thread (which also loads and calibrates), so the event "
        "loop (admission, refusals, health checks) gets the CPU first when they share cores; 0 turns it off.",
    )
    gil_switch_ms: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Python's thread switch interval: how long the event loop may wait for the GIL "
        "while the model thread runs Python code (CPython's default is 5).",
    )

    safety_factor: float = Field(1.15, ge=1.0, description="Predicted tail latency is multiplied by this.")
    tail_sigmas: float = Field(3.0, ge=0.0, description="Tail = mean + this many standard deviations.")
    replan: bool = Field(
        True,
        description="Choose each request's sub-network again when it leaves the queue: planned at arrival "
        "against the queue's predicted tails, most requests start with more time left than planned.",
    )
    min_f1_share: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description="Candidates expected to score below this share of the best candidate's F1 are not "
        "chosen; the fastest of them answers only requests nothing else can answer in time (0 serves "
        "the whole front).",
    )
    downgrade_f1: float = Field(
        5.0,
        gt=0,
        description="A request counts in dynaqa_load_downgrades_total when an idle server would have "
        "served it a sub-network at least this much more accurate (expected F1).",
    )
    calibration_repeats: int = Field(3, ge=2, description="Timed runs per calibration point.")
    target_busy: float = Field(
        0.8,
        gt=0,
        le=1,
        description="The controller's floor: the most accurate level whose predicted model time per request "
        "times the arrival rate stays under this share of the model's time.",
    )
    controller_interval_s: float = Field(1.0, gt=0, description="Controller tick period.")
    slo_thresholds_ms: list[float] = Field(
        default_factory=lambda: [50.0, 100.0, 200.0, 300.0, 500.0, 1000.0],
        description="Latency histogram bucket edges placed exactly at these SLO thresholds.",
    )
    pin_subnet: str | None = Field(None, description="Serve only this sub-network id (for comparisons).")
    keep_alive_s: int = Field(75, ge=1, description="Idle keep-alive connections are closed after this.")
    drain_seconds: float = Field(10.0, ge=0, description="On shutdown, wait this long for queued work.")
    drain_linger_s: float = Field(
        0.0,
        ge=0,
        le=300,
        description="After a stop signal, keep serving this long with readiness false, so load balancers "
        "take the replica out before it stops listening (an in-process preStop pause; a second signal ends it).",
    )
    log_level: str = Field("INFO", description="Python log level.")
    api_keys: SecretStr | None = Field(
        None,
        description="API keys required as `Authorization: Bearer <key>` on every path but health, metrics "
        "and docs: a file of keys, one per line (# comments), re-read when it changes, or the keys "
        "inline, comma-separated. A value starting with /, ./, ../ or ~ is a file, and a missing or "
        "empty one stops start-up. Unset or empty: no authentication.",
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.min_budget_ms > self.max_budget_ms:
            raise ValueError(f"min_budget_ms {self.min_budget_ms} > max_budget_ms {self.max_budget_ms}")
        if not self.min_budget_ms <= self.default_budget_ms <= self.max_budget_ms:
            raise ValueError(
                f"default_budget_ms {self.default_budget_ms} is outside [{self.min_budget_ms}, {self.max_budget_ms}]"
            )
        if self.network_ms >= self.default_budget_ms:
            raise ValueError(
                f"network_ms {self.network_ms} leaves nothing of default_budget_ms {self.default_budget_ms}"
            )
        room = self.max_length - MAX_QUESTION_TOKENS - 3  # what a window leaves for context
        if self.stride >= room:
            raise ValueError(
                f"stride {self.stride} must be below {room}: max_length {self.max_length} minus "
                f"{MAX_QUESTION_TOKENS} question tokens and 3 special tokens"
            )
        return self
