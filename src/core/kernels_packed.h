// Quantized weight matrices repacked for int8 dot products: eight rows
// interleaved per block, so that one vector instruction advances eight
// rows (layout in kernels_packed.cpp). Used by matmul (core/kernels.h) for
// every batch size when a MatRef carries a packed copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/kernels.h"

namespace rwkv {

// Activations rounded to int8 per 32-block (as for QuantDot::Q8Activations):
// xq[n, cols]; per token and block the step dx, the integer sum of the
// block's q (isum) and dx * isum (xsum).
struct PackedActivations {
  const int8_t* xq = nullptr;
  const float* dx = nullptr;
  const int32_t* isum = nullptr;
  const float* xsum = nullptr;
  int64_t cols = 0;
};

// Y[n, rows] = X . W^T from W.packed.
void packed_matmul(const MatRef& w, const PackedActivations& a, int64_t n, float* y);

}  // namespace rwkv
