// The Python module: what models/infer/native.py calls.
#include <torch/extension.h>

#include "kernels.h"

// Every kernel lets go of the GIL: the service's event loop runs while a forward computes.
using ReleaseGil = py::call_guard<py::gil_scoped_release>;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("scale_rows", &dynaqa::scale_rows, "rows / max|row| and the maxes (m, 1)", ReleaseGil());
  m.def("unscale_rows_", &dynaqa::unscale_rows_, "y * amax + bias, in place", ReleaseGil());
  m.def("quantize_rows", &dynaqa::quantize_rows, "round(rows * 127 / max|row|) as int8, and the maxes (m, 1)", ReleaseGil());
  m.def("dequantize_rows", &dynaqa::dequantize_rows, "acc * amax / 127 * scale + bias, as float32", ReleaseGil());
  m.def("fast_attention", &dynaqa::fast_attention, "whether `attend` runs here for this head size", ReleaseGil());
  m.def("attend", &dynaqa::attend, "softmax(q k^T * scale + bias) v as (batch, queries, heads, d), for all queries or those at slots", ReleaseGil());
  m.def("received", &dynaqa::received, "attention each key receives from the counted queries, summed over heads", ReleaseGil());
  m.def("gelu_quantize_rows", &dynaqa::gelu_quantize_rows, "GELU(acc * amax / 127 * scale + bias) quantised per row, and its maxes", ReleaseGil());
}
