// The binary ops with NumPy broadcasting: out = a op b over two strided views of the output's
// shape (broadcast axes have stride 0), contiguous out. The host side is
// crates/tensor/src/ops/binary/cuda.rs; the CPU reference is BinaryOp::apply (ops/binary/mod.rs).
//
// Tiling: none. One thread per output element, in a grid-stride loop.
#include "ember_cuda.h"

// The op numbers of BinaryOp (enum BinaryCode: B_ADD, B_SUB, …), generated from
// crates/tensor/src/ops/op_codes.rs.
#include "ember_op_codes.h"

// out[i] = a[view i] op b[view i]; both views have the output's sizes (broadcast axes have
// stride 0).
extern "C" __global__ void binary_f32(const float* __restrict__ a, EmberStrides a_view,
                                      const float* __restrict__ b, EmberStrides b_view,
                                      float* __restrict__ out, long long n, int op) {
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float u = a[ember_offset(a_view, i)], v = b[ember_offset(b_view, i)];
        float r;
        switch (op) {
            case B_ADD: r = u + v; break;
            case B_SUB: r = u - v; break;
            case B_MUL: r = u * v; break;
            case B_DIV: r = u / v; break;
            case B_EQUAL: r = u == v ? 1.0f : 0.0f; break;
            default: r = __int_as_float(0x7fc00000);
        }
        out[i] = r;
    }
}

