"""Times PyTorch on the GPU on the cases that benches/cuda_kernels.rs sends on stdin: cuBLAS
(torch.matmul, F.linear), cuDNN (F.conv2d, torch.nn.grad.conv2d_input / conv2d_weight), SDPA
(F.scaled_dot_product_attention, forward and backward through autograd) and F.group_norm.

Input (stdin): {"runs": N, "sample_seconds": S, "precision": "f32"|"tf32"|"bf16", "cases":
[{"name", "op", ...shapes}, ...]}. Output (stdout), one JSON object per line as soon as it is known: first the header
{"torch", "cuda", "cudnn", "device", "tf32"}, then per case {"name", "seconds"} (median seconds
per call) or {"name", "error"}.

Timing, as on ember's side: a warm-up call (cuDNN's autotuning happens there), then `runs`
samples, each a batch of calls lasting about S seconds between two CUDA events; the median.
TF32 (cuBLAS's and cuDNN's allow_tf32) is on when the request's precision is "tf32" (absent:
f32, off), as ember's `--precision tf32` puts its products on tensor cores, so both sides
compute alike; the header's "tf32" is true when both flags read back on. With "bf16" the
inputs of the products (matmul, linear, convolutions, attention) are bf16 tensors, as autocast
makes them; group norm stays f32, as under autocast.
"""
import json
import math
import statistics
import sys

import torch
import torch.nn.functional as F


def median_seconds(fn, runs, sample_seconds):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def sample(calls):
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / calls

    sample(1)
    once = sample(1)
    calls = max(1, min(1000, math.ceil(sample_seconds / max(once, 1e-7))))
    sample(calls)
    return statistics.median(sample(calls) for _ in range(max(runs, 1)))


def case_fn(case, bf16):
    """The call to time for one case, its inputs made once (uniform in [-0.5, 0.5)); with bf16,
    the products' inputs are bf16."""
    g = torch.Generator(device="cuda").manual_seed(0)
    products = not case["op"].startswith("group_norm")

    def rand(*shape, grad=False):
        t = torch.rand(*shape, device="cuda", generator=g) - 0.5
        if bf16 and products:
            t = t.to(torch.bfloat16)
        return t.requires_grad_(grad)

    op = case["op"]
    if op == "matmul":
        a, b = rand(*case["a"]), rand(*case["b"])
        return lambda: torch.matmul(a, b)
    if op == "linear":
        x, w = rand(*case["x"]), rand(*case["w"])
        return lambda: F.linear(x, w)
    if op.startswith("conv2d"):
        n, c, h, w_ = case["x"]
        o, _, kh, kw = case["w"]
        stride, padding = case["stride"], case["padding"]
        ho, wo = (h + 2 * padding - kh) // stride + 1, (w_ + 2 * padding - kw) // stride + 1
        x, w = rand(*case["x"]), rand(*case["w"])
        if op == "conv2d_forward":
            return lambda: F.conv2d(x, w, stride=stride, padding=padding)
        dy = rand(n, o, ho, wo)
        if op == "conv2d_backward_input":
            return lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, stride=stride, padding=padding)
        if op == "conv2d_backward_weight":
            return lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=stride, padding=padding)
    if op.startswith("attention"):
        # [batch, heads = 1, tokens, head dim], as the UNet's attention (1 head of all channels)
        bh, sq, sk, d, dv = case["bh"], case["sq"], case["sk"], case["d"], case["dv"]
        backward = op == "attention_backward"
        q, k, v = rand(bh, 1, sq, d, grad=backward), rand(bh, 1, sk, d, grad=backward), rand(bh, 1, sk, dv, grad=backward)
        if not backward:
            return lambda: F.scaled_dot_product_attention(q, k, v)
        out = F.scaled_dot_product_attention(q, k, v)
        d_out = rand(*out.shape)
        return lambda: torch.autograd.grad(out, (q, k, v), d_out, retain_graph=True)
    if op.startswith("group_norm"):
        backward = op == "group_norm_backward"
        channels = case["x"][1]
        x, w, b = rand(*case["x"], grad=backward), rand(channels, grad=backward), rand(channels, grad=backward)
        groups, eps = case["groups"], case["eps"]
        if not backward:
            return lambda: F.group_norm(x, groups, w, b, eps)
        y = F.group_norm(x, groups, w, b, eps)
        dy = rand(*y.shape)
        return lambda: torch.autograd.grad(y, (x, w, b), dy, retain_graph=True)
    raise ValueError(f"unknown op {op}")


def emit(value):
    print(json.dumps(value), flush=True)


def main():
    request = json.load(sys.stdin)
    precision = request.get("precision", "f32")
    if precision not in ("f32", "tf32", "bf16"):
        raise SystemExit(f"unknown precision {precision!r}: f32, tf32 or bf16")
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    emit({
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "device": torch.cuda.get_device_name(0),
        "tf32": torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32,
    })
    for case in request["cases"]:
        try:
            fn = case_fn(case, precision == "bf16")
            emit({"name": case["name"], "seconds": median_seconds(fn, request["runs"], request["sample_seconds"])})
        except Exception as e:  # one failing case (out of memory, unsupported shape) is reported, not fatal
            emit({"name": case["name"], "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
        fn = None
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
