"""Request and response bodies of the public API (docs/design.md, the API contract)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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


class SubnetInfo(BaseModel):
    id: str
    width: float = Field(description="Width multiplier (the widest kept layer's, where layer_widths is set).")
    depth: float
    lengths: list[float] | None = Field(description="Keep ratio after each kept layer (null: every token).")
    layer_widths: list[float] | None = Field(
        default=None, description="Width of each kept layer where they differ (null: `width` throughout)."
    )


class QAResponse(BaseModel):
    answer: str = Field(description="The answer: a slice of the context.")
    score: float = Field(description="Probability of the span (start x end), as the Hugging Face QA pipeline.")
    start: int = Field(description="Character offset of the answer in the context.")
    end: int = Field(description="Character offset just past the answer.")
    subnet: SubnetInfo = Field(description="The sub-network that answered.")
    expected_f1: float | None = Field(description="F1 of that sub-network on the eval split (null if unmeasured).")
    latency_ms: float = Field(description="Time from arrival to response.")
    budget_ms: float = Field(description="The latency budget applied, after clamping.")
    budget_met: bool


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
