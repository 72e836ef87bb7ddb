"""The Open Inference Protocol's wire format (KServe v2 / Triton REST): the JSON request and response
bodies, and Triton's binary tensor data extension.

With the extension (what `tritonclient.http` sends by default) a body is the JSON header, whose
length is the `Inference-Header-Content-Length` header, then the raw tensors in input order; a
BYTES element is a 4-byte little-endian length and its bytes. Pure functions over bytes and
pydantic models: nothing here knows the model, the engine or the HTTP framework.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from service.errors import ServiceError

HEADER_LENGTH = "Inference-Header-Content-Length"
NUMPY = {"FP32": "<f4", "INT64": "<i8"}  # little-endian, as the extension requires
_LENGTH = struct.Struct("<I")


class InvalidTensor(ServiceError):
    """A request the protocol cannot read: bad framing, shapes, datatypes or tensor data."""

    status = 400
    outcome = "rejected"


class InputTensor(BaseModel):
    name: str
    shape: list[int] = Field(description="Dimensions; their product is the number of elements.")
    datatype: str = Field(description="The protocol's datatype name (`BYTES` for text).")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="`binary_data_size`: the tensor's bytes follow the JSON header."
    )
    data: list[Any] | None = Field(None, description="Row-major elements, flat or nested by shape.")


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="`binary_data: true` sends the tensor after the JSON header."
    )


class InferRequest(BaseModel):
    id: str | None = Field(None, description="Echoed in the response.")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="`binary_data_output: true`: every output in binary unless it says not."
    )
    inputs: list[InputTensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = Field(None, description="Which outputs, in order; default: all.")


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = Field(None, description="`binary_data_size` where the data is binary.")
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any]
    outputs: list[OutputTensor]


@dataclass(frozen=True)
class Tensor:
    """One output: its name, datatype and flat values (str for BYTES, numbers otherwise)."""

    name: str
    datatype: str
    values: Sequence[Any]


def split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary part after it (empty without the extension's header)."""
    if header_length is None:
        return body, b""
    digits = header_length.strip()
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses
    if re.fullmatch(r"[0-9]{1,12}", digits) is None or int(digits) > len(body):
        raise InvalidTensor(f"{HEADER_LENGTH} {header_length[:40]!r} is not a length within the {len(body)}-byte body")
    length = int(digits)
    return body[:length], body[length:]


def parse(body: bytes, header_length: str | None) -> tuple[InferRequest, bytes]:
    """The request and its binary part; pydantic's ValidationError for a JSON header that does not fit."""
    header, binary = split(body, header_length)
    return InferRequest.model_validate_json(header), binary


def serialize_bytes(items: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def deserialize_bytes(raw: bytes) -> list[bytes]:
    """BYTES elements from their length-prefixed form; InvalidTensor if a length runs past the end."""
    items, at = [], 0
    while at < len(raw):
        if at + _LENGTH.size > len(raw):
            raise InvalidTensor("binary BYTES data ends inside an element's 4-byte length")
        (length,) = _LENGTH.unpack_from(raw, at)
        at += _LENGTH.size
        if at + length > len(raw):
            raise InvalidTensor(f"binary BYTES element of {length} bytes runs past the end of its tensor")
        items.append(raw[at : at + length])
        at += length
    return items


def flatten(data: list[Any], shape: Sequence[int]) -> list[Any]:
    """Row-major elements of `data`: a flat list of prod(shape) elements, or lists nested as `shape`."""
    if not any(isinstance(item, list) for item in data):
        if len(data) != math.prod(shape):
            raise InvalidTensor(f"shape {list(shape)} holds {math.prod(shape)} elements; data has {len(data)}")
        return data

    def walk(node: Any, dims: Sequence[int]) -> list[Any]:
        if not dims:
            if isinstance(node, list):
                raise InvalidTensor(f"data is nested deeper than shape {list(shape)}")
            return [node]
        if not isinstance(node, list) or len(node) != dims[0]:
            raise InvalidTensor(f"nested data does not match shape {list(shape)}")
        return [leaf for child in node for leaf in walk(child, dims[1:])]

    return walk(data, shape)


def text_inputs(request: InferRequest, binary: bytes) -> dict[str, list[str]]:
    """Each input's elements as text: BYTES only (this model reads text), from `data` or, with
    `binary_data_size`, from the binary part in input order; every binary byte must be claimed."""
    found: dict[str, list[str]] = {}
    at = 0
    for tensor in request.inputs:
        if tensor.name in found:
            raise InvalidTensor(f"input {tensor.name!r} is given twice")
        if tensor.datatype != "BYTES":
            raise InvalidTensor(f"input {tensor.name!r} has datatype {tensor.datatype}; expected BYTES")
        if any(d < 0 for d in tensor.shape):
            raise InvalidTensor(f"input {tensor.name!r} has a negative dimension in shape {tensor.shape}")
        size = tensor.parameters.get("binary_data_size")
        if size is not None:
            if tensor.data is not None or type(size) is not int or size < 0 or at + size > len(binary):
                raise InvalidTensor(f"input {tensor.name!r}: binary_data_size {size!r} does not fit the binary part")
            raw, at = deserialize_bytes(binary[at : at + size]), at + size
            elements = flatten(_decoded(tensor.name, raw), tensor.shape)
        elif tensor.data is None:
            raise InvalidTensor(f"input {tensor.name!r} has neither data nor binary_data_size")
        else:
            elements = flatten(tensor.data, tensor.shape)
        if not all(isinstance(e, str) for e in elements):
            raise InvalidTensor(f"input {tensor.name!r}: BYTES data in JSON must be strings")
        found[tensor.name] = elements
    if at != len(binary):
        raise InvalidTensor(f"{len(binary) - at} bytes after the JSON header belong to no input")
    return found


def _decoded(name: str, raw: list[bytes]) -> list[str]:
    try:
        return [item.decode("utf-8") for item in raw]
    except UnicodeDecodeError:
        raise InvalidTensor(f"input {name!r}: BYTES elements must be UTF-8 text") from None


def encode(tensor: Tensor) -> bytes:
    """The tensor's raw form: BYTES length-prefixed UTF-8, numbers little-endian."""
    if tensor.datatype == "BYTES":
        return serialize_bytes([str(v).encode("utf-8") for v in tensor.values])
    return np.asarray(tensor.values, dtype=NUMPY[tensor.datatype]).tobytes()


def response_body(
    header: dict[str, Any], tensors: Sequence[Tensor], binary: Sequence[bool]
) -> tuple[bytes, int | None]:
    """The response bytes and, where some output is binary, the JSON header's length: each output
    goes in `header["outputs"]`, with its data inline or its size and its bytes after the header."""
    outputs, raw = [], []
    for tensor, as_binary in zip(tensors, binary, strict=True):
        output: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": [len(tensor.values)]}
        if as_binary:
            raw.append(encode(tensor))
            output["parameters"] = {"binary_data_size": len(raw[-1])}
        else:
            output["data"] = list(tensor.values)
        outputs.append(output)
    text = json.dumps({**header, "outputs": outputs}, separators=(",", ":")).encode()
    return (text + b"".join(raw), len(text)) if raw else (text, None)


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size.")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelReady(BaseModel):
    name: str
    ready: bool


class OIPError(BaseModel):
    error: str = Field(description="What went wrong, in words.")
