"""Request and response bodies of the public API (docs/design.md, the API contract)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator


class QARequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    question: str = Field(description="The question, in natural language.", examples=["Who wrote Hamlet?"])
    context: str = Field(
        description="The passage that contains the answer.", examples=["Hamlet is a play by Shakespeare."]
    )

    @field_validator("question", "context")
    @classmethod
    def _not_blank(cls, value: str, info) -> str:  # type: ignore[no-untyped-def]
        if not value.strip():
            raise ValueError(f"{info.field_name} must contain text, not only white space")
        if "\x00" in value:
            raise ValueError(f"{info.field_name} must not contain NUL characters")
        return value


TopK = Annotated[int, Field(ge=1, le=20, description="How many distinct answers to return, best first.")]


class QABatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    questions: list[QARequest] = Field(min_length=1, description="Questions answered under one budget, in order.")
    top_k: TopK = 1


class HFParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: TopK = 1


class HFRequest(BaseModel):
    """The Hugging Face inference payload of the question-answering task."""

    model_config = ConfigDict(extra="forbid")

    inputs: QARequest | Annotated[list[QARequest], Field(min_length=1)] = Field(
        description="One {question, context}, or a non-empty list of them."
    )
    parameters: HFParameters = Field(default_factory=HFParameters)


class SingleRequest(QARequest):
    top_k: TopK = 1


def _shape(body: Any) -> str:
    if isinstance(body, dict) and "inputs" in body:
        return "hf"
    return "batch" if isinstance(body, dict) and "questions" in body else "single"


QABody = Annotated[
    Annotated[SingleRequest, Tag("single")] | Annotated[QABatchRequest, Tag("batch")] | Annotated[HFRequest, Tag("hf")],
    Discriminator(_shape),
]


class Span(BaseModel):
    """An answer in the Hugging Face pipeline's shape."""

    answer: str = Field(description="The answer: a slice of the context.")
    score: float = Field(description="Probability of the span (start x end), as the Hugging Face QA pipeline.")
    start: int = Field(description="Character offset of the answer in the context.")
    end: int = Field(description="Character offset just past the answer.")


class SubnetInfo(BaseModel):
    id: str
    width: float = Field(description="Width multiplier (the widest kept layer's, where layer_widths is set).")
    depth: float
    lengths: list[float] | None = Field(description="Keep ratio after each kept layer (null: every token).")
    layer_widths: list[float] | None = Field(
        default=None, description="Width of each kept layer where they differ (null: `width` throughout)."
    )


class QAResponse(Span):
    answers: list[Span] = Field(description="The `top_k` best distinct answers, best first (the first is the above).")
    subnet: SubnetInfo = Field(description="The sub-network that answered.")
    expected_f1: float | None = Field(description="F1 of that sub-network on the eval split (null if unmeasured).")
    latency_ms: float = Field(description="Time from arrival to response.")
    budget_ms: float = Field(description="The latency budget applied, after clamping.")
    budget_met: bool


class QABatchResponse(BaseModel):
    results: list[QAResponse] = Field(description="One per question, in the order asked.")
    latency_ms: float = Field(description="Time from arrival to the last answer.")
    budget_ms: float = Field(description="The latency budget applied to the whole batch, after clamping.")
    budget_met: bool = Field(description="Whether every answer was in time.")


class ServedSubnet(SubnetInfo):
    quantized: bool = Field(description="INT8 linear maps (the `-q8` ids).")
    expected_f1: float | None = Field(description="F1 on the eval split (null if unmeasured).")
    macs: int = Field(description="Multiply-accumulates of one 384-token window.")
    role: Literal["candidate", "reserve"] = Field(
        description="`reserve`: below the quality floor, chosen only when no candidate fits the budget."
    )


class ModelInfo(BaseModel):
    checkpoint: str = Field(description="The served checkpoint's directory name.")
    int8: bool = Field(
        description="Whether any served sub-network is INT8 (DYNAQA_INT8; in `auto`, this hardware's decision)."
    )
    front: str = Field(
        description="profile.json's front served; `width x depth grid` where none was searched; `pinned` "
        "under DYNAQA_PIN_SUBNET."
    )
    level: float = Field(description="The controller's degradation level now: 0 lets every candidate be chosen.")
    subnets: list[ServedSubnet] = Field(description="What the planner chooses from, most accurate first.")


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
