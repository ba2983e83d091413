// Fused optimizer updates, in place: Adam, the weights' EMA and the gradients' global norm on
// lists of tensors (one launch each per step), SGD one tensor at a time in a grid-stride loop.
// The CPU references are AdamRule and SgdRule in src/optim.rs; the host computes the same f32
// constants for both.
#include "ember_cuda.h"

// ---- Lists of tensors in one launch ----
//
// The optimizer's kernels work on a whole list of tensors at once, so that a step costs a
// few launches instead of a few per parameter. The host (`TensorList` in
// crates/tensor/src/cuda/kernels.rs) uploads one table per launch: the list cut into chunks
// of at most 8192 elements, chunk c at chunks[3c..3c + 3] as (tensor, first element,
// elements), then each tensor's buffers, one device address per role (Adam: parameter,
// gradient, m, v) at addresses[roles·tensor + role]. Block c does chunk c.

// The f32 buffer of `role` of the tensor that `chunk` is in, from the chunk's first element.
__device__ __forceinline__ float* ember_chunk_f32(const long long* chunk, const unsigned long long* addresses, int roles,
                                                  int role) {
    return reinterpret_cast<float*>(addresses[roles * chunk[0] + role]) + chunk[1];
}

// The sum of squares of each chunk of a list (one role): partials[c] = Σ x² over chunk c.
extern "C" __global__ void sum_squares_list_f32(const long long* chunks, const unsigned long long* addresses,
                                                float* __restrict__ partials) {
    EMBER_SHARED(float[32], scratch);
    const long long* chunk = chunks + 3 * blockIdx.x;
    const float* x = ember_chunk_f32(chunk, addresses, 1, 0);
    float sum = 0.0f;
    for (long long i = threadIdx.x; i < chunk[2]; i += blockDim.x) sum += x[i] * x[i];
    sum = ember_block_sum(sum, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// norm[0] = √(Σ partials), summed in f64 by one block of 256 threads in a fixed order (each
// thread a strided share, then a tree), so the norm repeats bit for bit.
extern "C" __global__ void norm_of_partials_f64(const float* __restrict__ partials, int count, double* __restrict__ norm) {
    EMBER_SHARED(double[256], sums);
    double sum = 0.0;
    for (int i = static_cast<int>(threadIdx.x); i < count; i += static_cast<int>(blockDim.x)) sum += partials[i];
    sums[threadIdx.x] = sum;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) sums[threadIdx.x] += sums[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) norm[0] = sqrt(sums[0]);
}

// Adam (decoupled = 0: L2 weight decay added to the gradient) or AdamW (decoupled = 1: the
// parameter shrunk by `decay` = 1 − lr·wd first), on a list of (parameter, gradient, m, v),
// the gradient first multiplied by `grad_scale` (gradient clipping's factor; 1 without):
//   g = grad_scale·grad,  m ← β1·m + (1 − β1)·g,  v ← β2·v + (1 − β2)·g²,
//   p ← p − step_size·m / (√v·inv_bc2 + eps)
// with step_size = lr / (1 − β1^t) and inv_bc2 = 1 / √(1 − β2^t) (t: the step count, the same
// for every tensor of the list). The CPU reference is AdamRule (src/optim.rs).
extern "C" __global__ void adam_list_f32(const long long* chunks, const unsigned long long* addresses, float grad_scale,
                                         float beta1, float beta2, float eps, float weight_decay, float decay,
                                         float step_size, float inv_bc2, int decoupled) {
    const long long* chunk = chunks + 3 * blockIdx.x;
    float* p = ember_chunk_f32(chunk, addresses, 4, 0);
    const float* g = ember_chunk_f32(chunk, addresses, 4, 1);
    float* m = ember_chunk_f32(chunk, addresses, 4, 2);
    float* v = ember_chunk_f32(chunk, addresses, 4, 3);
    for (long long i = threadIdx.x; i < chunk[2]; i += blockDim.x) {
        float param = p[i], grad = __fmul_rn(g[i], grad_scale);
        if (decoupled) param *= decay;
        else grad += weight_decay * param;
        float mi = beta1 * m[i] + (1.0f - beta1) * grad;
        float vi = beta2 * v[i] + (1.0f - beta2) * grad * grad;
        m[i] = mi;
        v[i] = vi;
        p[i] = param - step_size * mi / (sqrtf(vi) * inv_bc2 + eps);
    }
}

// The exponential moving average of the weights, on a list of (ema, parameter):
// ema ← decay·ema + (1 − decay)·param, as the CPU computes it in f32: two rounded products,
// then their rounded sum (__fmul_rn and __fadd_rn keep the compiler from fusing them into an
// FMA, so both devices agree exactly).
extern "C" __global__ void ema_list_f32(const long long* chunks, const unsigned long long* addresses, float decay,
                                        float one_minus_decay) {
    const long long* chunk = chunks + 3 * blockIdx.x;
    float* ema = ember_chunk_f32(chunk, addresses, 2, 0);
    const float* param = ember_chunk_f32(chunk, addresses, 2, 1);
    for (long long i = threadIdx.x; i < chunk[2]; i += blockDim.x)
        ema[i] = __fadd_rn(__fmul_rn(ema[i], decay), __fmul_rn(param[i], one_minus_decay));
}

// SGD with momentum (PyTorch's rule): d = g + wd·p; with a momentum buffer (buffer not null)
// b ← d on the first step, else b ← μ·b + (1 − dampening)·d, and d = d + μ·b (nesterov) or b;
// then p ← p − lr·d.
extern "C" __global__ void sgd_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ buffer,
                                   long long n, float lr, float momentum, float dampening, float weight_decay,
                                   int nesterov, int first_step) {
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float d = g[i] + weight_decay * p[i];
        if (buffer) {
            float b = first_step ? d : momentum * buffer[i] + (1.0f - dampening) * d;
            buffer[i] = b;
            d = nesterov ? d + momentum * b : b;
        }
        p[i] -= lr * d;
    }
}
