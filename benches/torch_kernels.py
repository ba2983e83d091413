"""Times PyTorch (CPU) on the kernel benchmark cases that benches/kernels.rs sends on stdin.

Input: a JSON list of cases, each {"name", "op": "matmul"|"conv2d"|"conv2d_backward", ...shapes}.
Output (stdout): a JSON object {name: median seconds per call}, plus "torch_version" and
"threads". Run by `cargo bench --bench kernels` with the repository's .venv Python.
"""
import json
import statistics
import sys
import time

import torch


def median_seconds(fn, min_time=1.0, min_runs=5):
    for _ in range(2):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def case_fn(case):
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.rand(*shape, generator=g) - 0.5
    if case["op"] == "matmul":
        a, b = rand(*case["a"]), rand(*case["b"])
        return lambda: torch.matmul(a, b)
    if case["op"] in ("conv2d", "conv2d_backward"):
        x, w = rand(*case["x"]), rand(*case["w"])
        stride, padding = case["stride"], case["padding"]
        if case["op"] == "conv2d":
            return lambda: torch.nn.functional.conv2d(x, w, stride=stride, padding=padding)
        x.requires_grad_(True)
        w.requires_grad_(True)
        y = torch.nn.functional.conv2d(x, w, stride=stride, padding=padding)
        dy = rand(*y.shape)

        def backward():
            torch.autograd.grad(y, (x, w), dy, retain_graph=True)

        return backward
    raise ValueError(f"unknown op {case['op']}")


def main():
    cases = json.load(sys.stdin)
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads()
    torch.set_num_threads(threads)
    result = {"torch_version": torch.__version__, "threads": threads}
    with torch.no_grad():
        pass
    for case in cases:
        result[case["name"]] = median_seconds(case_fn(case))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
