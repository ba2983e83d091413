#!/usr/bin/env python3
"""Makes tests/fixtures/diffusion/samplers.safetensors, the outside oracle for crates/diffusion
(checked by tests/diffusion.rs).

How to run it (from the repository root; it needs torch, diffusers, numpy and safetensors,
which `cargo xtask fixtures` installs into .venv, or by hand:
`python3 -m venv .venv && .venv/bin/pip install torch diffusers numpy safetensors`):

    .venv/bin/python scripts/make_sampler_fixtures.py --out tests/fixtures/diffusion

It is deterministic (fixed seeds; no GPU) and writes one small file (~220 KB). Every tensor is
float64 unless its name ends in `_f32`; timesteps are stored as float64 too (ember reads only
float tensors). Conventions (the same as crates/diffusion): timesteps are 0-based (index t is
the paper's t+1); T = 1000.

Contents (`{s}` is `linear` or `cosine`):

- `schedule.linear.betas` = torch.linspace(1e-4, 0.02, 1000, float64) (the DDPM schedule);
  `schedule.{s}.alphas_cumprod` = cumprod(1 - betas) in float64.
  `schedule.cosine.betas` = Nichol & Dhariwal's cosine schedule (s = 0.008, clip 0.999) in
  float64, by the same loop as diffusers' `betas_for_alpha_bar` (asserted here to agree with it
  to float32 rounding). `schedule.{s}.betas_diffusers_f32` = diffusers' own float32 betas for
  beta_schedule "linear" / "squaredcos_cap_v2".
- diffusers' schedulers compute their betas in float32; here, right after construction, every
  scheduler gets the float64 betas, alphas, alphas_cumprod (and `one` / `final_alpha_cumprod`),
  so that their step math runs in float64 on exactly the stored schedule.
- `q_sample.*`: DDPMScheduler.add_noise(x0, noise, t) with one t per batch element.
- `ddpm.{s}.t{t}.*`: one DDPMScheduler.step (prediction_type "epsilon", clip_sample=False,
  no set_timesteps: the full T-step chain, prev = t-1) with fixed model output `eps`, input
  `x_t`, and the noise it draws (`noise`, re-drawn from the same seeded generator and checked
  against a NumPy transcription of Algorithm 2): `prev_fixed_small` (variance_type
  "fixed_small": sigma^2 = beta-tilde_t) and `prev_fixed_large` ("fixed_large": beta_t).
  At t = 0 diffusers adds no noise, as Algorithm 2 (z = 0 at the paper's t = 1).
- `ddim.{s}.n{n}.t{t}.*`: one DDIMScheduler.step after set_timesteps(n) with
  timestep_spacing "leading", steps_offset 0 (the DDIM paper's "linear" subsequence, so prev =
  t - T//n), set_alpha_to_one=True (the paper's alpha_0 := 1: the step from the last timestep
  goes to the data), clip_sample=False, prediction_type "epsilon", given `variance_noise`
  (`noise`): `prev_eta0`, `prev_eta050`, `prev_eta100` for eta = 0, 0.5, 1.
- `ddim_timesteps.{leading,trailing}.n{n}`: DDIMScheduler.set_timesteps(n).timesteps.
- `chain.*`: a 10-step DDIM chain (linear schedule, leading spacing) with the deterministic
  "model" eps(x, t) = 0.1 x + sin(t / 100) c, from `chain.x_T`: `chain.eta0.trajectory`
  [10, ...] (x after each step; eta = 0) and `chain.eta100.trajectory` (eta = 1, with
  `chain.eta100.noise[i]` as step i's variance_noise).
- `guided.*`: classifier-free guidance as diffusers' pipelines compute it, through a 10-step
  DDIM chain (eta 0) from `guided.x_T`, with the toy conditional prediction
  0.1 x + sin(t / 100) `guided.c_text` and unconditional 0.05 x - cos(t / 100) `guided.c_uncond`:
  `guided.w{0,1,3,7_5}.x_0`, the final sample at guidance scale 0, 1, 3 and 7.5.
- `ddpm_chain.*`: a strided DDPM chain, DDPMScheduler.set_timesteps(10) (default spacing
  "leading", steps_offset 0: timesteps 900, 800, ..., 0; each step from t to the previous
  strided timestep with ᾱ_t, ᾱ_prev and beta'_t = 1 - ᾱ_t/ᾱ_prev), linear schedule, with the
  toy model of `chain.*` (eps(x, t) = 0.1 x + sin(t / 100) `ddpm_chain.c`) from
  `ddpm_chain.x_T`; step i's noise is `ddpm_chain.noise[i]` (drawn by diffusers from a
  generator seeded 2000 + i, re-drawn here to store it; no noise at t = 0):
  `ddpm_chain.{fixed_small,fixed_large}.{clip,noclip}.trajectory` [10, ...] (x after each
  step), with clip_sample True (x0 clipped to [-1, 1]) or False. `ddpm_chain.timesteps` is
  set_timesteps(10).timesteps. These tensors come from their own generator (seed 1), after
  everything else, so the entries above do not depend on them.
- `vlb.*`: the variational bound terms, by a float64 NumPy transcription of Ho et al.'s
  `GaussianDiffusion2._vb_terms_bpd` / `_prior_bpd` (diffusion_tf/diffusion_utils_2.py, with
  `normal_kl`, `approx_standard_normal_cdf`, `discretized_gaussian_log_likelihood` from
  diffusion_tf/utils.py), model_mean_type "eps", on the linear schedule: data `vlb.x0` (8-bit
  values scaled to [-1, 1], with both edge bins present), and for each t: `x_t`, the fixed
  model output `eps`, and `bpd_{fixedlarge,fixedsmall}_{clip,noclip}` [B] and
  `mse_{clip,noclip}` [B] (meanflat((x0_pred - x0)^2)); `vlb.prior_bpd` [B].
"""

import argparse
import json
import math
import os

import diffusers
import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from safetensors.torch import save_file

T = 1000
SHAPE = (2, 3, 4, 4)
F64 = torch.float64
SEED = 0
STEP_TIMESTEPS = (999, 500, 1, 0)


def linear_betas():
    return torch.linspace(1e-4, 0.02, T, dtype=F64)


def cosine_betas():
    """diffusers' betas_for_alpha_bar(T, alpha_transform_type="cosine"), without its float32 cast."""
    alpha_bar = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    return torch.tensor([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)], dtype=F64)


BETAS = {"linear": linear_betas(), "cosine": cosine_betas()}
DIFFUSERS_NAME = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def use_float64(scheduler, betas):
    """Replaces a scheduler's float32 schedule by the float64 one."""
    scheduler.betas = betas.clone()
    scheduler.alphas = 1.0 - betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    scheduler.one = torch.tensor(1.0, dtype=F64)
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=F64)
    return scheduler


def randn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=F64)


def schedules(out):
    for name, betas in BETAS.items():
        ref = DDPMScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name])
        assert ref.betas.dtype == torch.float32
        assert torch.allclose(ref.betas.double(), betas, rtol=1e-6, atol=0), name
        out[f"schedule.{name}.betas"] = betas
        out[f"schedule.{name}.alphas_cumprod"] = torch.cumprod(1.0 - betas, dim=0)
        out[f"schedule.{name}.betas_diffusers_f32"] = ref.betas.clone()


def q_sample(out, gen):
    scheduler = use_float64(DDPMScheduler(num_train_timesteps=T), BETAS["linear"])
    x0, noise = randn(gen, 4, 3, 2, 2), randn(gen, 4, 3, 2, 2)
    t = torch.tensor([0, 17, 500, 999])
    out["q_sample.x0"], out["q_sample.noise"], out["q_sample.t"] = x0, noise, t.double()
    out["q_sample.x_t"] = scheduler.add_noise(x0, noise, t)


def algorithm2(betas, x_t, t, eps, variance, z):
    """Ho et al.'s Algorithm 2, line 4, in NumPy (an independent check of the noise draw)."""
    b = betas.numpy()
    abar = np.cumprod(1 - b)
    mean = (x_t.numpy() - b[t] / np.sqrt(1 - abar[t]) * eps.numpy()) / np.sqrt(1 - b[t])
    if t == 0:
        return mean
    abar_prev = abar[t - 1]
    var = b[t] if variance == "fixed_large" else b[t] * (1 - abar_prev) / (1 - abar[t])
    return mean + np.sqrt(var) * z.numpy()


def ddpm_steps(out, gen):
    for name, betas in BETAS.items():
        for t in STEP_TIMESTEPS:
            key = f"ddpm.{name}.t{t}"
            x_t, eps = randn(gen, *SHAPE), randn(gen, *SHAPE)
            seed = 1000 + t
            noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=F64)
            out[f"{key}.x_t"], out[f"{key}.eps"], out[f"{key}.noise"] = x_t, eps, noise
            for variance in ("fixed_small", "fixed_large"):
                scheduler = DDPMScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name],
                                          variance_type=variance, clip_sample=False, prediction_type="epsilon")
                use_float64(scheduler, betas)
                prev = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(seed)).prev_sample
                assert prev.dtype == F64
                check = algorithm2(betas, x_t, t, eps, variance, noise)
                assert np.allclose(prev.numpy(), check, rtol=1e-12, atol=1e-12), (key, variance)
                out[f"{key}.prev_{variance}"] = prev


def ddim_scheduler(name, steps, spacing="leading"):
    scheduler = DDIMScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name], clip_sample=False,
                              set_alpha_to_one=True, steps_offset=0, timestep_spacing=spacing,
                              prediction_type="epsilon")
    use_float64(scheduler, BETAS[name])
    scheduler.set_timesteps(steps)
    return scheduler


ETAS = {"eta0": 0.0, "eta050": 0.5, "eta100": 1.0}


def ddim_steps(out, gen):
    cases = [("linear", 10, (900, 500, 0)), ("cosine", 10, (900, 100, 0)), ("linear", 7, (852, 142, 0))]
    for name, steps, timesteps in cases:
        scheduler = ddim_scheduler(name, steps)
        for t in timesteps:
            assert t in scheduler.timesteps.tolist()
            key = f"ddim.{name}.n{steps}.t{t}"
            x_t, eps, noise = randn(gen, *SHAPE), randn(gen, *SHAPE), randn(gen, *SHAPE)
            out[f"{key}.x_t"], out[f"{key}.eps"], out[f"{key}.noise"] = x_t, eps, noise
            for label, eta in ETAS.items():
                prev = scheduler.step(eps, t, x_t, eta=eta, variance_noise=noise).prev_sample
                assert prev.dtype == F64
                out[f"{key}.prev_{label}"] = prev


def ddim_timesteps(out):
    for spacing in ("leading", "trailing"):
        for steps in (1, 3, 10, 50, 1000):
            ts = ddim_scheduler("linear", steps, spacing).timesteps
            assert len(ts) == steps
            out[f"ddim_timesteps.{spacing}.n{steps}"] = ts.double()


def chain_model(c):
    return lambda x, t: 0.1 * x + math.sin(t / 100) * c


def ddim_chain(out, gen):
    c, x_T = randn(gen, *SHAPE), randn(gen, *SHAPE)
    noise = randn(gen, 10, *SHAPE)
    out["chain.c"], out["chain.x_T"], out["chain.eta100.noise"] = c, x_T, noise
    model = chain_model(c)
    for label in ("eta0", "eta100"):
        scheduler = ddim_scheduler("linear", 10)
        x, trajectory = x_T, []
        for i, t in enumerate(scheduler.timesteps.tolist()):
            eta = ETAS[label]
            x = scheduler.step(model(x, t), t, x, eta=eta, variance_noise=noise[i] if eta > 0 else None).prev_sample
            trajectory.append(x)
        out[f"chain.{label}.trajectory"] = torch.stack(trajectory)


def guided_chain(out, gen):
    """Classifier-free guidance the way diffusers' pipelines apply it (StableDiffusionPipeline:
    the latents doubled into one batch, the output chunked into the unconditional and the
    conditional halves, `noise_pred_uncond + guidance_scale * (noise_pred_text -
    noise_pred_uncond)`), through a 10-step DDIM chain (eta 0)."""
    c_text, c_uncond, x_T = randn(gen, *SHAPE), randn(gen, *SHAPE), randn(gen, *SHAPE)
    out["guided.c_text"], out["guided.c_uncond"], out["guided.x_T"] = c_text, c_uncond, x_T

    def unet(batch, t):
        # the batch is [unconditional; conditional], as the pipeline builds it
        x_uncond, x_text = batch.chunk(2)
        return torch.cat([0.05 * x_uncond - math.cos(t / 100) * c_uncond, 0.1 * x_text + math.sin(t / 100) * c_text])

    for label, guidance_scale in GUIDANCE_SCALES.items():
        scheduler = ddim_scheduler("linear", 10)
        x = x_T
        for t in scheduler.timesteps.tolist():
            noise_pred = unet(torch.cat([x] * 2), t)
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
            x = scheduler.step(noise_pred, t, x, eta=0.0).prev_sample
        out[f"guided.{label}.x_0"] = x


GUIDANCE_SCALES = {"w0": 0.0, "w1": 1.0, "w3": 3.0, "w7_5": 7.5}

DDPM_CHAIN_STEPS = 10


def strided_ddpm_step(t, prev, x_t, eps, variance, clip, z):
    """One step of DDPMScheduler.step after set_timesteps, in NumPy (an independent check of the
    strided step and of the noise draw): x0 from eps (clipped to [-1, 1] if `clip`), the
    posterior mean of q(x_prev | x_t, x0) for the process from prev to t, plus sigma z."""
    abar = np.cumprod(1 - BETAS["linear"].numpy())
    abar_prev = abar[prev] if prev >= 0 else 1.0
    beta = 1 - abar[t] / abar_prev
    x_t, eps = x_t.numpy(), eps.numpy()
    x0 = (x_t - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t])
    if clip:
        x0 = np.clip(x0, -1.0, 1.0)
    mean = np.sqrt(abar_prev) * beta / (1 - abar[t]) * x0 + np.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar[t]) * x_t
    if t == 0:
        return mean
    var = beta if variance == "fixed_large" else beta * (1 - abar_prev) / (1 - abar[t])
    return mean + np.sqrt(var) * z.numpy()


def ddpm_chain(out):
    """A strided DDPM chain (DDPMScheduler.set_timesteps(10)), both variances, clip on and off."""
    gen = torch.Generator().manual_seed(1)
    c, x_T = randn(gen, *SHAPE), randn(gen, *SHAPE)
    out["ddpm_chain.c"], out["ddpm_chain.x_T"] = c, x_T
    model = chain_model(c)
    seed = lambda i: 2000 + i
    noise = torch.stack([torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed(i)), dtype=F64)
                         for i in range(DDPM_CHAIN_STEPS)])
    out["ddpm_chain.noise"] = noise
    for variance in ("fixed_small", "fixed_large"):
        for clip in (True, False):
            scheduler = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", variance_type=variance,
                                      clip_sample=clip, prediction_type="epsilon")
            use_float64(scheduler, BETAS["linear"])
            scheduler.set_timesteps(DDPM_CHAIN_STEPS)
            timesteps = scheduler.timesteps.tolist()
            assert timesteps == list(range(900, -1, -100)), timesteps
            x, trajectory = x_T, []
            for i, t in enumerate(timesteps):
                eps = model(x, t)
                prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
                check = strided_ddpm_step(t, prev, x, eps, variance, clip, noise[i])
                x = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(seed(i))).prev_sample
                assert x.dtype == F64
                assert np.allclose(x.numpy(), check, rtol=1e-12, atol=1e-12), (variance, clip, t)
                trajectory.append(x)
            clip_name = "clip" if clip else "noclip"
            out[f"ddpm_chain.{variance}.{clip_name}.trajectory"] = torch.stack(trajectory)
    out["ddpm_chain.timesteps"] = scheduler.timesteps.double()


# --- Ho et al.'s variational bound, transcribed to NumPy float64 -------------------------------

def normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + np.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * np.exp(-logvar2))


def approx_standard_normal_cdf(x):
    return 0.5 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * np.power(x, 3))))


def discretized_gaussian_log_likelihood(x, *, means, log_scales):
    centered_x = x - means
    inv_stdv = np.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered_x + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered_x - 1.0 / 255.0))
    log_cdf_plus = np.log(np.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = np.log(np.maximum(1.0 - cdf_min, 1e-12))
    cdf_delta = cdf_plus - cdf_min
    return np.where(x < -0.999, log_cdf_plus,
                    np.where(x > 0.999, log_one_minus_cdf_min, np.log(np.maximum(cdf_delta, 1e-12))))


def meanflat(x):
    return x.reshape(x.shape[0], -1).mean(axis=1)


class GaussianDiffusion2:
    """The parts of diffusion_utils_2.GaussianDiffusion2 that the bound uses (eps model)."""

    def __init__(self, betas, model_var_type):
        self.betas = betas = betas.astype(np.float64)
        self.num_timesteps = len(betas)
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        self.model_log_variance = {
            "fixedlarge": np.log(np.append(self.posterior_variance[1], self.betas[1:])),
            "fixedsmall": self.posterior_log_variance_clipped,
        }[model_var_type]

    def q_posterior_mean(self, x_start, x_t, t):
        return self.posterior_mean_coef1[t] * x_start + self.posterior_mean_coef2[t] * x_t

    def vb_terms_bpd(self, eps, x_start, x_t, t, clip_denoised):
        true_mean = self.q_posterior_mean(x_start, x_t, t)
        true_log_variance_clipped = self.posterior_log_variance_clipped[t]
        pred_xstart = self.sqrt_recip_alphas_cumprod[t] * x_t - self.sqrt_recipm1_alphas_cumprod[t] * eps
        if clip_denoised:
            pred_xstart = np.clip(pred_xstart, -1.0, 1.0)
        model_mean = self.q_posterior_mean(pred_xstart, x_t, t)
        model_log_variance = self.model_log_variance[t] * np.ones_like(x_t)
        kl = meanflat(normal_kl(true_mean, true_log_variance_clipped, model_mean, model_log_variance)) / np.log(2.0)
        decoder_nll = meanflat(-discretized_gaussian_log_likelihood(
            x_start, means=model_mean, log_scales=0.5 * model_log_variance)) / np.log(2.0)
        output = decoder_nll if t == 0 else kl
        return output, meanflat((pred_xstart - x_start) ** 2)

    def prior_bpd(self, x_start):
        t = self.num_timesteps - 1
        mean = np.sqrt(self.alphas_cumprod[t]) * x_start
        log_variance = np.log(1.0 - self.alphas_cumprod[t])
        return meanflat(normal_kl(mean, log_variance, 0.0, 0.0)) / np.log(2.0)


def vlb(out, gen):
    betas = BETAS["linear"].numpy()
    pixels = torch.randint(0, 256, SHAPE, generator=gen)
    pixels.view(-1)[:4] = torch.tensor([0, 255, 0, 255])
    x0 = (pixels.double() / 127.5 - 1.0).numpy()
    out["vlb.x0"] = torch.from_numpy(x0)
    models = {v: GaussianDiffusion2(betas, v) for v in ("fixedlarge", "fixedsmall")}
    abar = models["fixedlarge"].alphas_cumprod
    for t in STEP_TIMESTEPS:
        noise = randn(gen, *SHAPE).numpy()
        x_t = np.sqrt(abar[t]) * x0 + np.sqrt(1 - abar[t]) * noise
        eps = noise + 0.3 * randn(gen, *SHAPE).numpy()  # an imperfect model
        out[f"vlb.t{t}.x_t"], out[f"vlb.t{t}.eps"] = torch.from_numpy(x_t), torch.from_numpy(eps)
        for clip in (True, False):
            clip_name = "clip" if clip else "noclip"
            for var, diffusion in models.items():
                bpd, mse = diffusion.vb_terms_bpd(eps, x0, x_t, t, clip)
                out[f"vlb.t{t}.bpd_{var}_{clip_name}"] = torch.from_numpy(bpd)
            out[f"vlb.t{t}.mse_{clip_name}"] = torch.from_numpy(mse)
    out["vlb.prior_bpd"] = torch.from_numpy(models["fixedlarge"].prior_bpd(x0))


def sort_metadata(path):
    """Rewrites the header with the metadata keys sorted (safetensors writes them in hash order),
    so that the file is byte-for-byte reproducible. The header keeps its length and padding."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n
    data[8:8 + n] = text + b" " * (n - len(text))
    with open(path, "wb") as f:
        f.write(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tests/fixtures/diffusion")
    args = parser.parse_args()
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    out = {}
    schedules(out)
    q_sample(out, gen)
    ddpm_steps(out, gen)
    ddim_steps(out, gen)
    ddim_timesteps(out)
    ddim_chain(out, gen)
    vlb(out, gen)
    guided_chain(out, gen)
    ddpm_chain(out)
    out = {k: v.contiguous() for k, v in out.items()}
    metadata = {
        "generator": "scripts/make_sampler_fixtures.py",
        "diffusers_version": diffusers.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "seed": str(SEED),
        "num_train_timesteps": str(T),
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "samplers.safetensors")
    save_file(out, path, metadata=metadata)
    sort_metadata(path)
    print(f"wrote {path}: {len(out)} tensors, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
