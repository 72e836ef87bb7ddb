"""The full model as an ONNX Runtime user would serve it: the checkpoint's full-width BERT exported
to ONNX, fused by ORT's transformer optimizer (attention, LayerNorm, GELU) and, for INT8, dynamically
quantised by ORT (INT8 weights per channel, activations quantised per call): the recipe of the
Optimum and ONNX Runtime guides. The strongest static peer a CPU user would build, so the load test
and `make bench` compare dynaqa with it, not only with transformers eager.

Built once per checkpoint (keyed by its weights' sha256) into a cache directory: the export and
the quantisation take about ten seconds.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.infer import checkpoint as ckpt

Precision = Literal["fp32", "int8"]
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = ("start_logits", "end_logits")
CACHE = Path(tempfile.gettempdir()) / "dynaqa-onnx"
GRAPH_VERSION = 1  # part of the cache key: raise it when `fused_graph` or `_quantize` changes
log = logging.getLogger(__name__)


def build(checkpoint_dir: Path, cache: Path = CACHE) -> dict[Precision, Path]:
    """The fp32 (fused) and INT8 ONNX files of the checkpoint's full model, built when missing."""
    out = cache / f"{ckpt.file_sha256(checkpoint_dir / ckpt.WEIGHTS)[:16]}-v{GRAPH_VERSION}"
    paths: dict[Precision, Path] = {"fp32": out / "bert-fp32.onnx", "int8": out / "bert-int8.onnx"}
    if all(p.exists() for p in paths.values()):
        return paths
    out.mkdir(parents=True, exist_ok=True)
    import onnx

    with tempfile.TemporaryDirectory(dir=out) as scratch:  # written whole, then moved: never half a file
        fp32, int8 = Path(scratch) / paths["fp32"].name, Path(scratch) / paths["int8"].name
        onnx.save(fused_graph(checkpoint_dir), str(fp32))
        _quantize(fp32, int8)
        for built, path in ((fp32, paths["fp32"]), (int8, paths["int8"])):
            os.replace(built, path)
    return paths


def fused_graph(checkpoint_dir: Path) -> Any:
    """The BERT graph ORT's transformer optimizer makes of a classic BERT export: EmbedLayerNormalization,
    then per layer Attention (fused QKV), SkipLayerNormalization and BiasGelu. Written directly from
    the weights because transformers 5 exports (TorchScript or dynamo, eager or SDPA attention) no
    longer match the optimizer's attention pattern: they came out with attention unfused."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    state, config = _bert_weights(checkpoint_dir)
    inits: list[Any] = []

    def weight(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    eps = config["layer_norm_eps"]
    ms = "com.microsoft"
    nodes = [helper.make_node("Cast", [n], [f"{n}_32"], to=TensorProto.INT32) for n in INPUTS]
    nodes.append(
        helper.make_node(
            "EmbedLayerNormalization",
            ["input_ids_32", "token_type_ids_32"]
            + [weight(f"emb.{k}", state[f"bert.embeddings.{k}_embeddings.weight"]) for k in ("word", "position")]
            + [weight("emb.segment", state["bert.embeddings.token_type_embeddings.weight"])]
            + [weight(f"emb.ln.{k}", state[f"bert.embeddings.LayerNorm.{k}"]) for k in ("weight", "bias")]
            + ["attention_mask_32"],
            ["x0", "mask_index"],
            domain=ms,
            epsilon=eps,
        )
    )
    x = "x0"
    for i in range(config["num_hidden_layers"]):
        nodes += _layer(i, x, state, weight, config["num_attention_heads"], eps)
        x = f"x{i + 1}"
    nodes.append(helper.make_node("MatMul", [x, weight("qa.w", state["qa_outputs.weight"].T)], ["qa_mm"]))
    nodes.append(helper.make_node("Add", ["qa_mm", weight("qa.b", state["qa_outputs.bias"])], ["qa"]))
    nodes.append(helper.make_node("Split", ["qa"], ["start3", "end3"], axis=2, num_outputs=2))
    inits.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "axis"))
    nodes.append(helper.make_node("Squeeze", ["start3", "axis"], [OUTPUTS[0]]))
    nodes.append(helper.make_node("Squeeze", ["end3", "axis"], [OUTPUTS[1]]))
    graph = helper.make_graph(
        nodes,
        "dynaqa-bert-qa",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"]) for n in INPUTS],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "tokens"]) for n in OUTPUTS],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(ms, 1)])
    onnx.checker.check_model(model)
    return model


def _quantize(source: Path, path: Path) -> None:
    """ORT's dynamic quantisation: MatMul and Attention weights INT8 per channel; activations per call."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(path),
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # fused ops have no inferred type
    )


def _layer(i: int, x: str, state: dict[str, np.ndarray], weight: Any, heads: int, eps: float) -> list[Any]:
    """One encoder layer, x{i} -> x{i+1}, in ORT's fused operators."""
    from onnx import helper

    p = f"bert.encoder.layer.{i}."
    qkv = [p + f"attention.self.{k}" for k in ("query", "key", "value")]
    w = weight(f"l{i}.qkv.w", np.concatenate([state[k + ".weight"] for k in qkv]).T)
    b = weight(f"l{i}.qkv.b", np.concatenate([state[k + ".bias"] for k in qkv]))
    ms = "com.microsoft"
    out, ffn = p + "attention.output.", p + "output."
    return [
        helper.make_node("Attention", [x, w, b, "mask_index"], [f"l{i}.att"], domain=ms, num_heads=heads),
        helper.make_node("MatMul", [f"l{i}.att", weight(f"l{i}.o.w", state[out + "dense.weight"].T)], [f"l{i}.o"]),
        helper.make_node(
            "SkipLayerNormalization",
            [f"l{i}.o", x]
            + [weight(f"l{i}.ln1.{k}", state[out + f"LayerNorm.{k}"]) for k in ("weight", "bias")]
            + [weight(f"l{i}.o.b", state[out + "dense.bias"])],
            [f"l{i}.h"],
            domain=ms,
            epsilon=eps,
        ),
        helper.make_node(
            "MatMul", [f"l{i}.h", weight(f"l{i}.ff1.w", state[p + "intermediate.dense.weight"].T)], [f"l{i}.ff1"]
        ),
        helper.make_node(
            "BiasGelu",
            [f"l{i}.ff1", weight(f"l{i}.ff1.b", state[p + "intermediate.dense.bias"])],
            [f"l{i}.g"],
            domain=ms,
        ),
        helper.make_node("MatMul", [f"l{i}.g", weight(f"l{i}.ff2.w", state[ffn + "dense.weight"].T)], [f"l{i}.ff2"]),
        helper.make_node(
            "SkipLayerNormalization",
            [f"l{i}.ff2", f"l{i}.h"]
            + [weight(f"l{i}.ln2.{k}", state[ffn + f"LayerNorm.{k}"]) for k in ("weight", "bias")]
            + [weight(f"l{i}.ff2.b", state[ffn + "dense.bias"])],
            [f"x{i + 1}"],
            domain=ms,
            epsilon=eps,
        ),
    ]


def _bert_weights(checkpoint_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """transformers' BertForQuestionAnswering names -> float32 arrays, and the architecture."""
    from models.nn.bert_weights import to_bert_name

    loaded = ckpt.load(checkpoint_dir, int8=False)
    state = {to_bert_name(k): v.detach().float().numpy() for k, v in loaded.model.state_dict().items()}
    return state, loaded.config.to_dict()


@functools.cache
def session(path: Path, threads: int) -> Any:
    """An ORT CPU session at `threads` intra-op threads (one inter-op thread, as one model runs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def logits(
    sess: Any, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) logits, each (batch, tokens) float32."""
    feed = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    start, end = sess.run(list(OUTPUTS), {k: v.astype(np.int64) for k, v in feed.items()})
    return start, end
