"""Makes the CLIP text encoder parity fixture with transformers' CLIPTextModel (the outside
oracle for crates/unet/src/clip.rs). Run by `cargo xtask fixtures` as
`.venv/bin/python scripts/make_clip_fixtures.py --out tests/fixtures/clip`.

clip_text_io.safetensors: a random CLIPTextModel (vocabulary 50, width 32, MLP 64, 2 layers of
2 heads, 16 positions, quick-GELU, eos_token_id 3 so the pooled token is the first end-of-text
token) in float64, on `input_ids` [2, 9] (the second row padded after its end-of-text token,
`attention_mask` 0 there): `last_hidden_state`, `pooler_output`, the loss
sum(last_hidden_state * r_hidden) + sum(pooler_output * r_pooled) for fixed random `r_hidden`,
`r_pooled`, every parameter's gradient (`grad.<name>`) and the weights (`weight.<name>`); the
metadata's `config` is the config.json transformers writes. Tensors are stored as float32
(token ids and the mask as exact small integers).
"""
import argparse
import json
import os
import tempfile

import torch
import transformers
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

CONFIG = dict(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              max_position_embeddings=16, hidden_act="quick_gelu", layer_norm_eps=1e-5,
              bos_token_id=1, eos_token_id=3, pad_token_id=0)


def make_clip_text(out):
    torch.manual_seed(9)
    model = CLIPTextModel(CLIPTextConfig(**CONFIG)).double()
    with torch.no_grad():  # weights representable in float32, as the file stores them
        for p in model.parameters():
            p.copy_(p.float().double())
    model.eval()
    with tempfile.TemporaryDirectory() as folder:
        model.config.save_pretrained(folder)
        with open(os.path.join(folder, "config.json")) as f:
            config_json = f.read()
    input_ids = torch.tensor([[1, 17, 42, 8, 23, 5, 31, 3, 9],
                              [1, 12, 7, 3, 0, 0, 0, 0, 0]])
    attention_mask = torch.tensor([[1] * 9, [1, 1, 1, 1, 0, 0, 0, 0, 0]])
    output = model(input_ids=input_ids, attention_mask=attention_mask)
    g = torch.Generator().manual_seed(10)
    r_hidden = torch.randn(output.last_hidden_state.shape, generator=g, dtype=torch.float64).float().double()
    r_pooled = torch.randn(output.pooler_output.shape, generator=g, dtype=torch.float64).float().double()
    loss = (output.last_hidden_state * r_hidden).sum() + (output.pooler_output * r_pooled).sum()
    model.zero_grad()
    loss.backward()
    tensors = {"input_ids": input_ids.double(), "attention_mask": attention_mask.double(),
               "last_hidden_state": output.last_hidden_state, "pooler_output": output.pooler_output,
               "r_hidden": r_hidden, "r_pooled": r_pooled, "loss": loss.reshape(1)}
    for n, p in model.named_parameters():
        tensors["weight." + n] = p.detach()
        tensors["grad." + n] = p.grad
    tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
    meta = {"generator": "scripts/make_clip_fixtures.py", "torch_version": torch.__version__,
            "transformers_version": transformers.__version__, "config": config_json,
            "loss": "sum(last_hidden_state * r_hidden) + sum(pooler_output * r_pooled)"}
    save_file(tensors, os.path.join(out, "clip_text_io.safetensors"), meta)
    print(f"clip text: {sum(p.numel() for p in model.parameters())} parameters")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="tests/fixtures/clip")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    make_clip_text(args.out)


if __name__ == "__main__":
    main()
