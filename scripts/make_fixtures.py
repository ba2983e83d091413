#!/usr/bin/env python3
"""Generate the PyTorch oracle fixtures in tests/fixtures/*.safetensors.

Run it through `cargo xtask fixtures` (which sets up .venv with torch + safetensors).

Conventions, shared by every file:
  * Every fixture reseeds with torch.manual_seed(SEED), so files do not depend
    on the order in which they are generated.
  * Inputs are drawn as float64 standard normals and then rounded to float32
    values (still held in float64). All math (outputs, gradients, optimizer
    steps) is done in float64 on exactly the values that are stored, so the
    stored outputs are the correctly rounded float32 images of the exact
    float64 results for the stored float32 inputs.
  * Every tensor is saved as float32 (`.float()`).
  * Gradients: a random upstream gradient `grad_out` (same shape as the output)
    is drawn and the stored `grad_<input>` are d/d<input> of sum(out * grad_out).
  * Metadata (all strings): the op's configuration, plus "generator",
    "torch_version" and "seed".
"""

import argparse
import copy
import json
import math
import os
import struct
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

SEED = 0
GENERATOR = "scripts/make_fixtures.py"
F64 = torch.float64

FIXTURES = {}  # file stem -> function returning (tensors, metadata)


def fixture(name):
    def register(fn):
        FIXTURES[name] = fn
        return fn

    return register


def f32_exact(t):
    """Round a float64 tensor to float32-representable values, kept in float64."""
    return t.detach().to(torch.float32).to(F64)


def randn(*shape, grad=False):
    """A float64 standard-normal tensor whose values are exactly representable in float32."""
    t = f32_exact(torch.randn(*shape, dtype=F64))
    return t.requires_grad_(grad)


def fmt(value):
    """Metadata value as a string; floats with full (round-trip) precision."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return ",".join(fmt(v) for v in value)
    return str(value)


def upstream(out, inputs):
    """Draw grad_out like `out`; return (grad_out, [d sum(out*grad_out) / d input])."""
    grad_out = randn(*out.shape)
    loss = (out * grad_out).sum()
    grads = torch.autograd.grad(loss, inputs)
    return grad_out, grads


def with_grads(tensors, out, inputs):
    """Add "out", "grad_out" and "grad_<name>" for each (name, tensor) in `inputs`."""
    names = list(inputs)
    grad_out, grads = upstream(out, [inputs[n] for n in names])
    tensors["out"] = out
    tensors["grad_out"] = grad_out
    for n, g in zip(names, grads):
        tensors[f"grad_{n}"] = g
    return tensors


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


@fixture("matmul")
def matmul():
    a = randn(2, 3, 5, 7, grad=True)
    b = randn(3, 7, 4, grad=True)
    out = a @ b
    t = with_grads({"a": a, "b": b}, out, {"a": a, "b": b})
    return t, {"op": "matmul", "broadcast": "batch"}


def conv2d_fixture(x_shape, w_shape, stride, padding, dilation):
    x = randn(*x_shape, grad=True)
    w = randn(*w_shape, grad=True)
    b = randn(w_shape[0], grad=True)
    out = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation)
    t = with_grads({"x": x, "weight": w, "bias": b}, out, {"x": x, "weight": w, "bias": b})
    meta = {
        "op": "conv2d",
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "groups": 1,
    }
    return t, meta


@fixture("conv2d_stride2_pad1")
def conv2d_stride2_pad1():
    return conv2d_fixture((2, 3, 9, 8), (4, 3, 3, 3), stride=2, padding=1, dilation=1)


@fixture("conv2d_dilation2_pad2")
def conv2d_dilation2_pad2():
    return conv2d_fixture((1, 2, 7, 7), (3, 2, 3, 3), stride=1, padding=2, dilation=2)


def conv_transpose2d_fixture(x_shape, w_shape, stride, padding, output_padding):
    x = randn(*x_shape, grad=True)
    w = randn(*w_shape, grad=True)  # PyTorch layout [in, out, kh, kw]
    b = randn(w_shape[1], grad=True)
    out = F.conv_transpose2d(
        x, w, b, stride=stride, padding=padding, output_padding=output_padding, dilation=1
    )
    t = with_grads({"x": x, "weight": w, "bias": b}, out, {"x": x, "weight": w, "bias": b})
    meta = {
        "op": "conv_transpose2d",
        "stride": stride,
        "padding": padding,
        "output_padding": output_padding,
        "dilation": 1,
        "groups": 1,
        "weight_layout": "in,out,kh,kw",
    }
    return t, meta


@fixture("conv_transpose2d_k4s2p1")
def conv_transpose2d_k4s2p1():
    return conv_transpose2d_fixture((2, 4, 5, 6), (4, 3, 4, 4), stride=2, padding=1, output_padding=0)


@fixture("conv_transpose2d_k3s2p1op1")
def conv_transpose2d_k3s2p1op1():
    return conv_transpose2d_fixture((1, 3, 4, 5), (3, 2, 3, 3), stride=2, padding=1, output_padding=1)


@fixture("group_norm")
def group_norm():
    groups, eps = 3, 1e-5
    x = randn(2, 6, 5, 4, grad=True)
    w = randn(6, grad=True)
    b = randn(6, grad=True)
    out = F.group_norm(x, groups, w, b, eps=eps)
    t = with_grads({"x": x, "weight": w, "bias": b}, out, {"x": x, "weight": w, "bias": b})
    return t, {"op": "group_norm", "num_groups": groups, "eps": eps}


@fixture("layer_norm")
def layer_norm():
    shape, eps = (10,), 1e-5
    x = randn(3, 4, 10, grad=True)
    w = randn(10, grad=True)
    b = randn(10, grad=True)
    out = F.layer_norm(x, shape, w, b, eps=eps)
    t = with_grads({"x": x, "weight": w, "bias": b}, out, {"x": x, "weight": w, "bias": b})
    return t, {"op": "layer_norm", "normalized_shape": shape, "eps": eps}


@fixture("geglu")
def geglu():
    # diffusers' GEGLU after its projection: hidden_states, gate = proj(x).chunk(2, dim=-1)
    x = randn(3, 4, 12, grad=True)
    hidden_states, gate = x.chunk(2, dim=-1)
    out = hidden_states * F.gelu(gate)
    t = with_grads({"x": x}, out, {"x": x})
    return t, {"op": "geglu", "gelu": "exact (erf)"}


@fixture("cross_entropy")
def cross_entropy():
    targets = [3, 0, 9, 9, 5, 1, 7]
    logits = randn(len(targets), 10, grad=True)
    # a scalar, stored with shape [1] (the upstream gradient needs a shape)
    out = F.cross_entropy(logits, torch.tensor(targets), reduction="mean").reshape(1)
    t = with_grads({"logits": logits}, out, {"logits": logits})
    return t, {"op": "cross_entropy", "targets": ",".join(map(str, targets)), "reduction": "mean"}


@fixture("softmax")
def softmax():
    x = randn(4, 7, 9, grad=True)
    t = {"x": x}
    outputs = {
        "softmax_dim2": F.softmax(x, dim=-1),
        "softmax_dim1": F.softmax(x, dim=1),
        "log_softmax_dim2": F.log_softmax(x, dim=-1),
    }
    for name, out in outputs.items():
        grad_out, (gx,) = upstream(out, [x])
        t[name] = out
        t[f"grad_out_{name}"] = grad_out
        t[f"grad_x_{name}"] = gx
    return t, {"op": "softmax", "softmax_dim2": "dim=2 (-1)", "softmax_dim1": "dim=1", "log_softmax_dim2": "dim=2 (-1)"}


@fixture("attention")
def attention():
    q = randn(2, 3, 5, 8, grad=True)
    k = randn(2, 3, 6, 8, grad=True)
    v = randn(2, 3, 6, 4, grad=True)
    scale = 1.0 / math.sqrt(q.shape[-1])
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False)
    # Cross-check against the explicit formula.
    ref = torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1) @ v
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    t = with_grads({"q": q, "k": k, "v": v}, out, {"q": q, "k": k, "v": v})
    # The masked case, drawn after the unmasked one (whose tensors stay as they were): a
    # key-padding mask [B, Sk] (1 attend, 0 ignore), given to PyTorch as a boolean attn_mask
    # broadcast from [B, 1, 1, Sk]. Every batch row ignores at least one key and keeps at least
    # one (a fully masked row is NaN in PyTorch; ember gives 0 there).
    mq = randn(3, 2, 5, 8, grad=True)
    mk = randn(3, 2, 7, 8, grad=True)
    mv = randn(3, 2, 7, 4, grad=True)
    key_mask = torch.ones(3, 7, dtype=F64)
    key_mask[0, [1, 5]] = 0.0
    key_mask[1, 4:] = 0.0  # padding at the end, as for a padded context
    key_mask[2, 0] = 0.0
    attend = key_mask[:, None, None, :] != 0
    masked_out = F.scaled_dot_product_attention(mq, mk, mv, attn_mask=attend, dropout_p=0.0, is_causal=False)
    scores = ((mq @ mk.transpose(-2, -1)) * scale).masked_fill(~attend, float("-inf"))
    assert torch.allclose(masked_out, torch.softmax(scores, dim=-1) @ mv, rtol=1e-12, atol=1e-12)
    masked = with_grads({"q": mq, "k": mk, "v": mv}, masked_out, {"q": mq, "k": mk, "v": mv})
    t.update({f"masked_{name}": tensor for name, tensor in masked.items()})
    t["masked_key_mask"] = key_mask
    meta = {"op": "scaled_dot_product_attention", "scale": scale, "mask": "none", "is_causal": "false", "dropout_p": 0.0}
    meta["masked_mask"] = "masked_key_mask [B, Sk] as a boolean attn_mask [B, 1, 1, Sk] (nonzero: attend)"
    # The causal cases, drawn after the masked one: is_causal=True, query i attends to keys
    # j <= i (top-left aligned); Sq = Sk, Sq < Sk (the last keys seen by no query) and Sq > Sk
    # (the last queries see every key). Key 0 is seen by every query, so no row is fully masked.
    for case, (sq, sk) in {"causal": (6, 6), "causal_wide": (4, 7), "causal_tall": (7, 4)}.items():
        cq = randn(2, 3, sq, 8, grad=True)
        ck = randn(2, 3, sk, 8, grad=True)
        cv = randn(2, 3, sk, 4, grad=True)
        causal_out = F.scaled_dot_product_attention(cq, ck, cv, attn_mask=None, dropout_p=0.0, is_causal=True)
        allowed = torch.ones(sq, sk, dtype=torch.bool).tril()
        scores = ((cq @ ck.transpose(-2, -1)) * scale).masked_fill(~allowed, float("-inf"))
        assert torch.allclose(causal_out, torch.softmax(scores, dim=-1) @ cv, rtol=1e-12, atol=1e-12)
        causal = with_grads({"q": cq, "k": ck, "v": cv}, causal_out, {"q": cq, "k": ck, "v": cv})
        t.update({f"{case}_{name}": tensor for name, tensor in causal.items()})
        meta[f"{case}_is_causal"] = "true"
        meta[f"{case}_alignment"] = "top-left: query i attends to keys j <= i (torch.ones(Sq, Sk).tril())"
    return t, meta


@fixture("elementwise")
def elementwise():
    x = randn(3, 5, grad=True)
    xp = f32_exact(x.abs() + 0.5).requires_grad_(True)  # positive, for log/sqrt/pow
    power = 2.5
    outputs = {
        "gelu": (F.gelu(x, approximate="none"), x),
        "silu": (F.silu(x), x),
        "sigmoid": (torch.sigmoid(x), x),
        "tanh": (torch.tanh(x), x),
        "exp": (torch.exp(x), x),
        "log": (torch.log(xp), xp),
        "sqrt": (torch.sqrt(xp), xp),
        "pow": (xp**power, xp),
        "sin": (torch.sin(x), x),
        "cos": (torch.cos(x), x),
    }
    grad_out = randn(3, 5)
    t = {"x": x, "xp": xp, "grad_out": grad_out}
    for name, (out, inp) in outputs.items():
        (g,) = torch.autograd.grad((out * grad_out).sum(), [inp])
        t[name] = out
        t[f"grad_{name}"] = g
    meta = {
        "op": "elementwise",
        "xp": "x.abs() + 0.5",
        "gelu_approximate": "none",
        "pow_exponent": power,
        "inputs": "x: gelu,silu,sigmoid,tanh,exp,sin,cos; xp: log,sqrt,pow",
    }
    return t, meta


@fixture("reductions")
def reductions():
    x = randn(3, 4, 5)
    t = {
        "x": x,
        "var_dim1_unbiased": x.var(dim=1, correction=1, keepdim=True),
        "var_dims02_biased": x.var(dim=(0, 2), correction=0),
        "mean_dim2": x.mean(2),
        "amax_dim1": x.amax(1),
        "sum_all": x.sum().reshape(1),
    }
    meta = {
        "op": "reductions",
        "var_dim1_unbiased": "x.var(dim=1, unbiased=True, keepdim=True)",
        "var_dims02_biased": "x.var(dim=(0,2), unbiased=False, keepdim=False)",
        "mean_dim2": "x.mean(2)",
        "amax_dim1": "x.amax(1)",
        "sum_all": "x.sum().reshape(1)",
    }
    return t, meta


@fixture("upsample_nearest2d")
def upsample_nearest2d():
    x = randn(2, 3, 4, 5, grad=True)
    out = F.interpolate(x, scale_factor=2, mode="nearest")
    t = with_grads({"x": x}, out, {"x": x})
    return t, {"op": "upsample_nearest2d", "scale_factor": 2, "mode": "nearest"}


@fixture("mlp_adam")
def mlp_adam():
    mlp = nn.Sequential(
        OrderedDict(fc1=nn.Linear(6, 16), act=nn.SiLU(), fc2=nn.Linear(16, 3))
    ).to(F64)
    with torch.no_grad():
        for p in mlp.parameters():
            p.copy_(f32_exact(p))
    x = randn(5, 6)
    target = randn(5, 3)

    def loss_of(model):
        return F.mse_loss(model(x), target, reduction="mean")

    def params(model, prefix):
        return {f"{prefix}.{n}": p.detach().clone() for n, p in model.named_parameters()}

    def train(model, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            loss_of(model).backward()
            opt.step()

    t = {"x": x, "target": target}
    t.update(params(mlp, "param"))
    loss = loss_of(mlp)
    names = [n for n, _ in mlp.named_parameters()]
    grads = torch.autograd.grad(loss, list(mlp.parameters()))
    t["loss"] = loss.detach().reshape(1)
    t.update({f"grad.{n}": g for n, g in zip(names, grads)})

    lr, betas, eps = 1e-2, (0.9, 0.999), 1e-8
    adam_model = copy.deepcopy(mlp)
    adam = torch.optim.Adam(adam_model.parameters(), lr=lr, betas=betas, eps=eps, weight_decay=0.0)
    train(adam_model, adam, 1)
    t.update(params(adam_model, "adam_step1"))
    train(adam_model, adam, 2)
    t.update(params(adam_model, "adam_step3"))

    adamw_wd = 0.1
    adamw_model = copy.deepcopy(mlp)
    adamw = torch.optim.AdamW(adamw_model.parameters(), lr=lr, betas=betas, eps=eps, weight_decay=adamw_wd)
    train(adamw_model, adamw, 1)
    t.update(params(adamw_model, "adamw_step1"))

    sgd_lr, sgd_momentum = 0.1, 0.9
    sgd_model = copy.deepcopy(mlp)
    sgd = torch.optim.SGD(sgd_model.parameters(), lr=sgd_lr, momentum=sgd_momentum, dampening=0.0, nesterov=False, weight_decay=0.0)
    train(sgd_model, sgd, 1)
    t.update(params(sgd_model, "sgd_step1"))
    train(sgd_model, sgd, 1)
    t.update(params(sgd_model, "sgd_step2"))

    meta = {
        "op": "mlp_optimizers",
        "model": "fc1=Linear(6,16) -> SiLU -> fc2=Linear(16,3)",
        "loss": "mse_loss(mlp(x), target, reduction=mean)",
        "param_names": names,
        "adam_lr": lr,
        "adam_beta1": betas[0],
        "adam_beta2": betas[1],
        "adam_eps": eps,
        "adam_weight_decay": 0.0,
        "adam_amsgrad": "false",
        "adamw_lr": lr,
        "adamw_beta1": betas[0],
        "adamw_beta2": betas[1],
        "adamw_eps": eps,
        "adamw_weight_decay": adamw_wd,
        "sgd_lr": sgd_lr,
        "sgd_momentum": sgd_momentum,
        "sgd_dampening": 0.0,
        "sgd_nesterov": "false",
        "sgd_weight_decay": 0.0,
        "steps": "adam_step1: 1 Adam step; adam_step3: 2 more steps with the same optimizer; "
        "adamw_step1: 1 AdamW step; sgd_step1/sgd_step2: 1 and 2 SGD steps; "
        "all from param.* with grads recomputed before every step",
    }
    return t, meta


# ---------------------------------------------------------------------------


def canonical_safetensors(tensors, meta):
    """safetensors.torch.save, with the metadata keys sorted so the bytes are reproducible.

    (safetensors serializes `__metadata__` from a hash map, whose order changes
    from run to run; the tensor entries are already sorted.)
    """
    data = save_safetensors(tensors, metadata=meta)
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(text) == len(data[8 : 8 + n].rstrip(b" ")), "unexpected safetensors header layout"
    out = data[:8] + text.ljust(n, b" ") + data[8 + n :]
    loaded = load_safetensors(out)
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/fixtures", help="output directory")
    parser.add_argument("only", nargs="*", help="generate only these fixtures (default: all)")
    args = parser.parse_args()

    unknown = [n for n in args.only if n not in FIXTURES]
    if unknown:
        parser.error(f"unknown fixture(s) {unknown}; known: {sorted(FIXTURES)}")
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)  # deterministic reductions, and kind to shared machines

    for name in args.only or FIXTURES:
        torch.manual_seed(SEED)
        tensors, meta = FIXTURES[name]()
        meta = {k: fmt(v) for k, v in meta.items()}
        meta.update(generator=GENERATOR, torch_version=torch.__version__, seed=str(SEED))
        tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
        path = os.path.join(args.out, f"{name}.safetensors")
        data = canonical_safetensors(tensors, meta)
        with open(path, "wb") as f:
            f.write(data)
        print(f"wrote {path} ({len(tensors)} tensors, {os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
