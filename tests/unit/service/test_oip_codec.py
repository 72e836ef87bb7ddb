"""The Open Inference Protocol's wire format: JSON and binary tensors read as tritonclient writes
them, and written so tritonclient reads them back (its own serialisers are the reference)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError
from tritonclient.http import InferInput, InferRequestedOutput
from tritonclient.http import InferResult as TritonResult
from tritonclient.http._utils import _get_inference_request
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from service.api import oip_codec as codec
from service.api.oip_codec import InvalidTensor, Tensor

QUESTIONS = ["Who wrote it?", "When was it written? ünïcode"]
CONTEXTS = ["The book was written by Ada Lovelace in 1843.", "It was written in 1843."]


def triton_body(binary: bool, outputs: list[InferRequestedOutput] | None = None) -> tuple[bytes, str | None]:
    """What `InferenceServerClient.infer` sends for two questions."""
    inputs = []
    for name, texts in (("question", QUESTIONS), ("context", CONTEXTS)):
        tensor = InferInput(name, [len(texts)], "BYTES")
        tensor.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary)
        inputs.append(tensor)
    body, length = _get_inference_request(inputs, "req-1", outputs, 0, False, False, 0, None, None)
    return body, None if length is None else str(length)


@pytest.mark.parametrize("binary", [True, False])
def test_reads_what_tritonclient_sends(binary: bool) -> None:
    body, length = triton_body(binary)
    assert (length is not None) == binary
    request, rest = codec.parse(body, length)
    assert request.id == "req-1" and request.parameters.get("binary_data_output") is True
    assert codec.text_inputs(request, rest) == {"question": QUESTIONS, "context": CONTEXTS}


def test_bytes_serialisation_matches_tritonclient_both_ways() -> None:
    items = [b"", b"abc", "ünï".encode()]
    ours = codec.serialize_bytes(items)
    assert ours == serialize_byte_tensor(np.array(items, dtype=object)).item()
    assert codec.deserialize_bytes(ours) == items
    assert list(deserialize_bytes_tensor(ours)) == items


@pytest.mark.parametrize("raw", [b"\x05\x00", b"\x05\x00\x00\x00abc"])
def test_truncated_bytes_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidTensor):
        codec.deserialize_bytes(raw)


def test_nested_data_is_read_row_major_and_must_match_the_shape() -> None:
    assert codec.flatten([["a"], ["b"]], [2, 1]) == ["a", "b"]
    assert codec.flatten(["a", "b"], [2, 1]) == ["a", "b"]
    for data, shape in ((["a", "b"], [3]), ([["a", "b"]], [2, 1]), ([[["a"]], [["b"]]], [2, 1])):
        with pytest.raises(InvalidTensor):
            codec.flatten(data, shape)


def request_of(inputs: list[dict], **extra: object) -> codec.InferRequest:
    return codec.InferRequest.model_validate({"inputs": inputs, **extra})


@pytest.mark.parametrize(
    ("tensor", "binary", "says"),
    [
        ({"name": "q", "shape": [1], "datatype": "FP32", "data": [1.0]}, b"", "BYTES"),
        ({"name": "q", "shape": [1], "datatype": "BYTES", "data": [3]}, b"", "strings"),
        ({"name": "q", "shape": [2], "datatype": "BYTES", "data": ["a"]}, b"", "elements"),
        ({"name": "q", "shape": [1], "datatype": "BYTES"}, b"", "neither"),
        ({"name": "q", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}, b"\0" * 4, "fit"),
        ({"name": "q", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": True}}, b"\0", "fit"),
        ({"name": "q", "shape": [1], "datatype": "BYTES", "data": ["a"]}, b"\0", "belong to no input"),
    ],
)
def test_bad_tensors_are_refused_with_a_reason(tensor: dict, binary: bytes, says: str) -> None:
    with pytest.raises(InvalidTensor, match=says):
        codec.text_inputs(request_of([tensor]), binary)


def test_invalid_utf8_in_binary_bytes_is_refused() -> None:
    raw = codec.serialize_bytes([b"\xff\xfe"])
    tensor = {"name": "q", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
    with pytest.raises(InvalidTensor, match="UTF-8"):
        codec.text_inputs(request_of([tensor]), raw)


def test_framing_errors() -> None:
    with pytest.raises(InvalidTensor):
        codec.split(b"{}", "10")
    for length in ("-1", "\u00b2", "1" * 5000, ""):  # "²" passes str.isdigit(), not int()
        with pytest.raises(InvalidTensor):
            codec.split(b"{}", length)
    with pytest.raises(ValidationError):
        codec.parse(b'{"inputs": ', None)
    with pytest.raises(ValidationError):
        codec.parse(b'{"inputs": []}', None)


TENSORS = [
    Tensor("answer", "BYTES", ["Ada Lovelace", "1843"]),
    Tensor("score", "FP32", [0.5, 0.25]),
    Tensor("start", "INT64", [23, 17]),
]


def test_binary_outputs_read_back_by_tritonclient() -> None:
    body, length = codec.response_body({"model_name": "m", "model_version": "1"}, TENSORS, [True, False, True])
    assert length is not None
    header = json.loads(body[:length])
    assert [o["name"] for o in header["outputs"]] == ["answer", "score", "start"]
    assert header["outputs"][1]["data"] == [0.5, 0.25] and "parameters" not in header["outputs"][1]
    result = TritonResult.from_response_body(body, header_length=length)
    assert [a.decode() for a in result.as_numpy("answer")] == ["Ada Lovelace", "1843"]
    assert result.as_numpy("score").tolist() == [0.5, 0.25]
    start = result.as_numpy("start")
    assert start.dtype == np.int64 and start.tolist() == [23, 17]


def test_json_only_outputs_need_no_header_length() -> None:
    body, length = codec.response_body({"id": "x"}, TENSORS[:1], [False])
    assert length is None
    assert json.loads(body) == {
        "id": "x",
        "outputs": [{"name": "answer", "datatype": "BYTES", "shape": [2], "data": ["Ada Lovelace", "1843"]}],
    }


def test_requested_binary_outputs_are_parsed() -> None:
    outputs = [InferRequestedOutput("score", binary_data=True), InferRequestedOutput("answer", binary_data=False)]
    request, _ = codec.parse(*triton_body(False, outputs))
    assert [(o.name, o.parameters.get("binary_data")) for o in request.outputs or []] == [
        ("score", True),
        ("answer", False),
    ]
