// Fused optimizer updates, in place, one thread per element in a grid-stride loop. The CPU
// references are AdamRule and SgdRule in src/optim.rs; the host computes the same f32
// constants for both.
#include "ember_cuda.h"

// Adam (decoupled = 0: L2 weight decay added to the gradient) or AdamW (decoupled = 1: the
// parameter shrunk by `decay` = 1 − lr·wd first):
//   m ← β1·m + (1 − β1)·g,  v ← β2·v + (1 − β2)·g²,  p ← p − step_size·m / (√v·inv_bc2 + eps)
// with step_size = lr / (1 − β1^t) and inv_bc2 = 1 / √(1 − β2^t).
extern "C" __global__ void adam_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                                    float* __restrict__ v, long long n, float beta1, float beta2, float eps,
                                    float weight_decay, float decay, float step_size, float inv_bc2, int decoupled) {
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float param = p[i], grad = g[i];
        if (decoupled) param *= decay;
        else grad += weight_decay * param;
        float mi = beta1 * m[i] + (1.0f - beta1) * grad;
        float vi = beta2 * v[i] + (1.0f - beta2) * grad * grad;
        m[i] = mi;
        v[i] = vi;
        p[i] = param - step_size * mi / (sqrtf(vi) * inv_bc2 + eps);
    }
}

// The exponential moving average of the weights: ema ← decay·ema + (1 − decay)·param, as the
// CPU computes it in f32: two rounded products, then their rounded sum (__fmul_rn and
// __fadd_rn keep the compiler from fusing them into an FMA, so both devices agree exactly).
extern "C" __global__ void ema_f32(float* __restrict__ ema, const float* __restrict__ param, float decay,
                                   float one_minus_decay, long long n) {
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
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
