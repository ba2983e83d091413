"""Makes the UNet parity fixtures with diffusers' UNet2DModel (the outside oracle for
crates/unet). Run by `cargo xtask fixtures` (after make_fixtures.py) as
`.venv/bin/python scripts/make_unet_fixtures.py --out tests/fixtures/unet`.

Files:
- unet_tiny_weights.safetensors: diffusers' random init of the `tiny` preset (1 channel),
  rounded to float16 so the file is small; both sides load these exact values.
- unet_tiny_io.safetensors: input `x0`, `noise`, `timesteps`, the noised input `x_t`, the
  model output on `x_t` (`eps_pred`), the loss mse(eps_pred, noise), every parameter's gradient
  (`grad.<name>`), and the change one Adam step (lr 2e-4) makes (`adam_update.<name>`).
- unet_ddpm_cifar10_io.safetensors: the paper's CIFAR-10 model with *procedural* weights (the
  35.7M float32 weights would not belong in git): parameter `name` of shape s gets
      u_i = sin(0.61803 * i + phase(name)),  phase = (sum of name's UTF-8 bytes mod 997) * 0.01
      norm weights: 1 + 0.1 u;  biases: 0.1 u;  other weights: u * sqrt(3 / fan_in), fan_in = numel / s[0]
  rounded to float32; the same formula is in crates/unet/src/testing.rs. Stores `x`,
  `timesteps`, `out`.
- unet_class_cond_<kind>_io.safetensors (`--only class_cond`): a small class-conditional
  UNet2DModel (two levels, attention at the second) with diffusers' random init, `kind`
  `table` (class_embed_type None, num_class_embeds 10: nn.Embedding) or `timestep`
  (class_embed_type "timestep": the labels' sinusoidal embedding through a TimestepEmbedding).
  Stores the weights (`weight.<name>`), `x_t`, `timesteps`, `class_labels`, the output
  (`eps_pred`), `noise`, the loss mse(eps_pred, noise) and every gradient (`grad.<name>`).
- unet_cross_attn_<kind>_io.safetensors (`--only cross_attn`): a small UNet2DConditionModel
  (Stable Diffusion's UNet: two levels, cross-attention transformers at both and in the
  middle, 2 heads, a context of 7 tokens x 32 dims with a padding mask) with diffusers' random
  init, `kind` `conv` (proj_in/proj_out 1x1 convs, one transformer block) or `linear`
  (use_linear_projection, two transformer blocks). The metadata's `config` is the config.json
  diffusers writes for it (every key). Stores the weights (`weight.<name>`), `x_t`,
  `timesteps`, `encoder_hidden_states`, `encoder_attention_mask` (1 attend, 0 padding), the
  output (`eps_pred`), `noise`, the loss mse(eps_pred, noise), every parameter's gradient
  (`grad.<name>`) and the context's (`grad_encoder_hidden_states`); for `conv` also a guided
  4-step DDIM chain from `x_t` as StableDiffusionPipeline samples (see guided_ddim_chain).
- vae_io.safetensors (`--only vae`): a small AutoencoderKL (three levels 8, 16, 16, one
  channel in and out, 4 latent channels, 4 groups; diffusers' random init) on a 16x8 batch of 2:
  `x`, the posterior's `mean` and (clamped) `logvar`, fixed `eps` with z = mean + std * eps,
  `decoded` = decode(z), `kl` per image, `loss` = mse(decoded, x) + 1e-3 * mean(kl), every
  parameter's gradient (`grad.<name>`) and the weights (`weight.<name>`); the metadata's
  `config` is the config.json diffusers writes.
- diffusers_defaults.json (`--only defaults`): the keyword defaults of the three model classes.
All math runs in float64 (model.double()); tensors are stored as float32 unless noted.
"""
import argparse
import json
import math
import os

import numpy as np
import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from safetensors.torch import save_file

LINEAR_SCHEDULE = dict(beta_start=1e-4, beta_end=0.02, steps=1000)

TINY = dict(
    sample_size=32, in_channels=1, out_channels=1,
    block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    layers_per_block=2, attention_head_dim=None, norm_num_groups=8, norm_eps=1e-6,
    dropout=0.1, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0,
    act_fn="silu", time_embedding_type="positional",
)
DDPM_CIFAR10 = dict(
    sample_size=32, in_channels=3, out_channels=3,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2, attention_head_dim=None, norm_num_groups=32, norm_eps=1e-6,
    dropout=0.1, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0,
    act_fn="silu", time_embedding_type="positional",
)


def procedural(name, shape):
    numel = int(np.prod(shape))
    phase = (sum(name.encode()) % 997) * 0.01
    u = np.sin(0.61803 * np.arange(numel, dtype=np.float64) + phase)
    last = name.rsplit(".", 1)
    if "norm" in last[0].rsplit(".", 1)[-1] and last[-1] == "weight":
        w = 1.0 + 0.1 * u
    elif last[-1] == "bias":
        w = 0.1 * u
    else:
        w = u * math.sqrt(3.0 / (numel / shape[0]))
    return torch.from_numpy(w.astype(np.float32).astype(np.float64).reshape(shape))


def alphas_cumprod():
    s = LINEAR_SCHEDULE
    betas = torch.linspace(s["beta_start"], s["beta_end"], s["steps"], dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def metadata(config, **extra):
    meta = {"generator": "scripts/make_unet_fixtures.py", "torch_version": torch.__version__,
            "config": json.dumps(config)}
    import diffusers
    meta["diffusers_version"] = diffusers.__version__
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def make_tiny(out):
    torch.manual_seed(0)
    model = UNet2DModel(**TINY).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().double())
    weights = {n: p.detach().half().contiguous() for n, p in model.named_parameters()}
    save_file(weights, os.path.join(out, "unet_tiny_weights.safetensors"), metadata(TINY))

    model.eval()  # dropout off, so the step is deterministic on both sides
    g = torch.Generator().manual_seed(1)
    x0 = (torch.rand(2, 1, 32, 32, generator=g, dtype=torch.float64) * 2 - 1).float().double()
    noise = torch.randn(2, 1, 32, 32, generator=g, dtype=torch.float64).float().double()
    timesteps = torch.tensor([17.0, 802.0], dtype=torch.float64)
    ab = alphas_cumprod()[timesteps.long()].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    eps_pred = model(x_t, timesteps).sample
    loss = torch.nn.functional.mse_loss(eps_pred, noise)
    model.zero_grad()
    loss.backward()
    tensors = {"x0": x0, "noise": noise, "timesteps": timesteps, "x_t": x_t, "eps_pred": eps_pred,
               "loss": loss.reshape(1)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        tensors["grad." + n] = p.grad
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    optimizer.step()
    for n, p in model.named_parameters():
        tensors["adam_update." + n] = p.detach() - before[n]
    tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
    save_file(tensors, os.path.join(out, "unet_tiny_io.safetensors"),
              metadata(TINY, adam_lr=2e-4, schedule="linear 1e-4..0.02, T=1000", mode="eval (dropout off)"))


def make_ddpm_cifar10(out):
    model = UNet2DModel(**DDPM_CIFAR10).double().eval()
    count = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(procedural(n, tuple(p.shape)))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64).float().double()
    timesteps = torch.tensor([3.0, 640.0], dtype=torch.float64)
    with torch.no_grad():
        y = model(x, timesteps).sample
    tensors = {"x": x.float(), "timesteps": timesteps.float(), "out": y.float()}
    save_file(tensors, os.path.join(out, "unet_ddpm_cifar10_io.safetensors"),
              metadata(DDPM_CIFAR10, parameter_count=count, weights="procedural (see script)"))
    print(f"ddpm-cifar10: {count} parameters")


CLASS_COND = dict(
    sample_size=16, in_channels=1, out_channels=1,
    block_out_channels=(16, 32),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1, attention_head_dim=None, norm_num_groups=4, norm_eps=1e-6,
    dropout=0.0, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0,
    act_fn="silu", time_embedding_type="positional",
)


def make_class_cond(out):
    for kind, extra in [("table", dict(num_class_embeds=10)), ("timestep", dict(class_embed_type="timestep"))]:
        config = dict(CLASS_COND, **extra)
        torch.manual_seed(3)
        model = UNet2DModel(**config).double()
        with torch.no_grad():  # weights representable in float32, as the file stores them
            for p in model.parameters():
                p.copy_(p.float().double())
        model.eval()
        if kind == "timestep":
            # diffusers casts the timesteps' float32 sinusoid to the model's dtype but not the
            # labels' (its float64 models fail there): cast it the same way
            model.class_embedding.register_forward_pre_hook(lambda module, args: (args[0].to(torch.float64),))
        g = torch.Generator().manual_seed(4)
        x_t = torch.randn(3, 1, 16, 16, generator=g, dtype=torch.float64).float().double()
        noise = torch.randn(3, 1, 16, 16, generator=g, dtype=torch.float64).float().double()
        timesteps = torch.tensor([5.0, 300.0, 999.0], dtype=torch.float64)
        class_labels = torch.tensor([7, 0, 3])
        eps_pred = model(x_t, timesteps, class_labels=class_labels).sample
        loss = torch.nn.functional.mse_loss(eps_pred, noise)
        model.zero_grad()
        loss.backward()
        tensors = {"x_t": x_t, "noise": noise, "timesteps": timesteps, "class_labels": class_labels.double(),
                   "eps_pred": eps_pred, "loss": loss.reshape(1)}
        for n, p in model.named_parameters():
            tensors["weight." + n] = p.detach()
            tensors["grad." + n] = p.grad
        tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
        save_file(tensors, os.path.join(out, f"unet_class_cond_{kind}_io.safetensors"), metadata(config, mode="eval"))


CROSS_ATTN = dict(
    sample_size=8, in_channels=2, out_channels=2,
    block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    layers_per_block=1, attention_head_dim=2, norm_num_groups=4, cross_attention_dim=32,
)


def guided_ddim_chain(model, x_T, context, mask, steps=4, guidance_scale=3.0):
    """Sampling as StableDiffusionPipeline does it, in float64: DDIM (linear betas 1e-4..0.02,
    T = 1000, `steps` leading-spaced timesteps, eta 0, no clipping, final alpha 1) from `x_T`,
    each step one batched forward of [unconditional; conditional] (the unconditional context
    all zeros, unmasked), then noise_pred_uncond + guidance_scale * (noise_pred_text -
    noise_pred_uncond). Stores `ddim.uncond_hidden_states`, `ddim.timesteps` and `ddim.x_0`."""
    from diffusers import DDIMScheduler
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                              set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    scheduler.betas, scheduler.alphas = betas, 1.0 - betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    scheduler.set_timesteps(steps)
    uncond = torch.zeros_like(context)
    both_context = torch.cat([uncond, context])
    both_mask = torch.cat([torch.ones_like(mask), mask])
    x = x_T
    with torch.no_grad():
        for t in scheduler.timesteps.tolist():
            both = model(torch.cat([x] * 2), torch.full((2 * x.shape[0],), float(t), dtype=torch.float64),
                         encoder_hidden_states=both_context, encoder_attention_mask=both_mask).sample
            noise_pred_uncond, noise_pred_text = both.chunk(2)
            noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
            x = scheduler.step(noise_pred, t, x, eta=0.0).prev_sample
    return {"ddim.uncond_hidden_states": uncond, "ddim.timesteps": scheduler.timesteps.double(), "ddim.x_0": x}


def make_cross_attn(out):
    import tempfile
    for kind, extra in [("conv", {}), ("linear", dict(use_linear_projection=True, transformer_layers_per_block=2))]:
        torch.manual_seed(5)
        model = UNet2DConditionModel(**CROSS_ATTN, **extra).double()
        with torch.no_grad():  # weights representable in float32, as the file stores them
            for p in model.parameters():
                p.copy_(p.float().double())
        model.eval()
        with tempfile.TemporaryDirectory() as folder:
            model.save_config(folder)
            with open(os.path.join(folder, "config.json")) as f:
                config_json = f.read()
        g = torch.Generator().manual_seed(6)
        x_t = torch.randn(2, 2, 8, 8, generator=g, dtype=torch.float64).float().double()
        noise = torch.randn(2, 2, 8, 8, generator=g, dtype=torch.float64).float().double()
        timesteps = torch.tensor([42.0, 901.0], dtype=torch.float64)
        context = torch.randn(2, 7, 32, generator=g, dtype=torch.float64).float().double().requires_grad_()
        mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.float64)
        eps_pred = model(x_t, timesteps, encoder_hidden_states=context, encoder_attention_mask=mask).sample
        loss = torch.nn.functional.mse_loss(eps_pred, noise)
        model.zero_grad()
        loss.backward()
        tensors = {"x_t": x_t, "noise": noise, "timesteps": timesteps, "encoder_hidden_states": context,
                   "encoder_attention_mask": mask, "eps_pred": eps_pred, "loss": loss.reshape(1),
                   "grad_encoder_hidden_states": context.grad}
        for n, p in model.named_parameters():
            tensors["weight." + n] = p.detach()
            tensors["grad." + n] = p.grad
        if kind == "conv":
            tensors.update(guided_ddim_chain(model, x_t, context.detach(), mask))
        tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
        meta = metadata(dict(CROSS_ATTN, **extra), mode="eval")
        meta["config"] = config_json
        save_file(tensors, os.path.join(out, f"unet_cross_attn_{kind}_io.safetensors"), meta)
        print(f"cross_attn {kind}: {sum(p.numel() for p in model.parameters())} parameters")


VAE = dict(
    in_channels=1, out_channels=1,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(8, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
    sample_size=16,
)


def make_vae(out):
    import tempfile
    from diffusers import AutoencoderKL
    torch.manual_seed(7)
    model = AutoencoderKL(**VAE).double()
    with torch.no_grad():  # weights representable in float32, as the file stores them
        for p in model.parameters():
            p.copy_(p.float().double())
    with tempfile.TemporaryDirectory() as folder:
        model.save_config(folder)
        with open(os.path.join(folder, "config.json")) as f:
            config_json = f.read()
    g = torch.Generator().manual_seed(8)
    x = (torch.rand(2, 1, 16, 8, generator=g, dtype=torch.float64) * 2 - 1).float().double()
    posterior = model.encode(x).latent_dist
    eps = torch.randn(posterior.mean.shape, generator=g, dtype=torch.float64).float().double()
    z = posterior.mean + posterior.std * eps
    decoded = model.decode(z).sample
    kl = posterior.kl()
    loss = torch.nn.functional.mse_loss(decoded, x) + 1e-3 * kl.mean()
    model.zero_grad()
    loss.backward()
    tensors = {"x": x, "mean": posterior.mean, "logvar": posterior.logvar, "eps": eps, "decoded": decoded,
               "kl": kl, "loss": loss.reshape(1)}
    for n, p in model.named_parameters():
        tensors["weight." + n] = p.detach()
        tensors["grad." + n] = p.grad
    tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
    meta = metadata(VAE, loss="mse(decoded, x) + 1e-3 * mean(kl)")
    meta["config"] = config_json
    save_file(tensors, os.path.join(out, "vae_io.safetensors"), meta)
    print(f"vae: {sum(p.numel() for p in model.parameters())} parameters")


def make_defaults(out):
    """diffusers_defaults.json: the keyword defaults of `UNet2DModel.__init__`,
    `UNet2DConditionModel.__init__` and `AutoencoderKL.__init__`, by class name (read from the signatures, no model built):
    what a config.json's missing keys mean to diffusers."""
    import inspect
    defaults = {}
    from diffusers import AutoencoderKL
    for cls in (UNet2DModel, UNet2DConditionModel, AutoencoderKL):
        params = inspect.signature(cls.__init__).parameters.items()
        defaults[cls.__name__] = {k: p.default for k, p in params if k != "self" and p.default is not inspect.Parameter.empty}
    import diffusers
    defaults["_diffusers_version"] = diffusers.__version__
    with open(os.path.join(out, "diffusers_defaults.json"), "w") as f:
        json.dump(defaults, f, indent=1, sort_keys=True)
        f.write("\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="tests/fixtures/unet")
    parser.add_argument("--only", choices=["tiny", "ddpm_cifar10", "class_cond", "cross_attn", "vae", "defaults"], help="make one set only")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    makers = dict(tiny=make_tiny, ddpm_cifar10=make_ddpm_cifar10, class_cond=make_class_cond, cross_attn=make_cross_attn, vae=make_vae, defaults=make_defaults)
    for name, make in makers.items():
        if args.only in (None, name):
            make(args.out)


if __name__ == "__main__":
    main()
