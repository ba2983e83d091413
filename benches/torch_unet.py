"""The PyTorch/diffusers side of benches/unet.rs: one case per process.

Usage: torch_unet.py PRESET CHANNELS BATCH train|forward ITERATIONS THREADS [cpu|cuda [f32|tf32|bf16]]
Prints "median_seconds_per_iteration step_mib" (peak resident memory during the steps minus
the resident memory before them, as benches/unet.rs measures ember; on cuda, the peak device
memory allocated during the steps minus what was allocated before them). The model is
diffusers' UNet2DModel with the same architecture as ember's preset; a training iteration is
the same as ember's: sample t and noise, q_sample, forward, MSE against the noise, backward,
Adam step. On cuda the iteration ends with a synchronize, and the precision (default f32) sets
cuBLAS's and cuDNN's allow_tf32 as benches/unet.rs's `--precision` sets ember's products: off
for f32, on for tf32, so both sides compute alike; bf16 runs the forward and the loss under
torch.autocast(bfloat16) (f32 weights and Adam; NCHW, not the issue table's channels_last). The CPU computes in f32 only (tf32 and bf16
there are refused).
"""
import statistics
import sys
import time

import torch
from diffusers import UNet2DModel

PRESETS = {
    "tiny": dict(block_out_channels=(32, 64, 64), down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8),
    "ddpm-cifar10": dict(block_out_channels=(128, 256, 256, 256),
                         down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=32),
}


def status_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main():
    preset, channels, batch, mode, iterations, threads = sys.argv[1:7]
    device = torch.device(sys.argv[7] if len(sys.argv) > 7 else "cpu")
    precision = sys.argv[8] if len(sys.argv) > 8 else "f32"
    channels, batch, iterations, threads = int(channels), int(batch), int(iterations), int(threads)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    if precision not in ("f32", "tf32", "bf16"):
        sys.exit(f"unknown precision {precision!r}: f32, tf32 or bf16")
    if precision != "f32" and not cuda:
        sys.exit(f"precision {precision} needs cuda: the CPU computes in f32")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.benchmark = True
    model = UNet2DModel(sample_size=32, in_channels=channels, out_channels=channels, layers_per_block=2,
                        attention_head_dim=None, norm_eps=1e-6, dropout=0.1, flip_sin_to_cos=False, freq_shift=1,
                        downsample_padding=0, act_fn="silu", **PRESETS[preset]).to(device)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0).float().to(device)
    x0 = (torch.rand(batch, channels, 32, 32) * 2 - 1).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)

    def train_iteration():
        t = torch.randint(0, 1000, (batch,), device=device)
        noise = torch.randn_like(x0)
        a = ab[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with autocast:
            loss = torch.nn.functional.mse_loss(model(x_t, t).sample.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward_iteration():
        with torch.no_grad(), autocast:
            model(x0, torch.arange(batch, device=device) * 97 % 1000).sample

    if mode == "train":
        model.train()
        fn = train_iteration
    else:
        model.eval()
        fn = forward_iteration
    def synchronize():
        if cuda:
            torch.cuda.synchronize(device)

    def memory_mib(peak):
        if cuda:
            if not peak:
                torch.cuda.reset_peak_memory_stats(device)
            return (torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)) / 2**20
        return status_mib("VmHWM:" if peak else "VmRSS:")

    synchronize()
    baseline = memory_mib(False)  # model, optimizer and data allocated; torch imported
    fn()
    synchronize()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    print(statistics.median(times), memory_mib(True) - baseline)


if __name__ == "__main__":
    main()
