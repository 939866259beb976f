"""One StyleGAN2 fine-tuning step (docs/reference.md §4.4): JAX (this port) vs the PyTorch reference iteration,
on this machine.

    python tools/benchmark_stylegan_finetune.py [--size 256] [--batch 2] [--n_crops 4] [--repeats 2] \
        [--out benchmarks/stylegan_finetune_cpu.json]

Both sides run the same step on the same random weights and the same injected randomness: the official
architecture at `--size` (channel_multiplier 2, style_dim 512, 8 mapping layers), the full VGG19 up to
conv4_4, a CLIP ViT-B/32 vision tower (random weights, the openai/clip-vit-base-patch32 shapes),
FreezeG 3, all four loss terms, and an R1 step (the most expensive kind; 1 in 16 steps officially).
The official batch is 16 with 16 crops; the defaults here are smaller so that a 2-core CPU finishes
in minutes (the settings are recorded in the JSON). JAX times exclude compilation (reported
separately); each timing is the median of `repeats` steps after one warm-up.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from scenimefy_jax.convert import clip as convert_clip  # noqa: E402
from scenimefy_jax.convert import stylegan2 as convert_sg  # noqa: E402
from scenimefy_jax.convert import vgg as convert_vgg  # noqa: E402
from scenimefy_jax.models import stylegan2 as sg  # noqa: E402
from scenimefy_jax.models.vgg import CONV4_4, VGG19Features, trim_params  # noqa: E402
from scenimefy_jax.training import stylegan_step as st  # noqa: E402
from tests.torch_reference import cut_training as ref_cut  # noqa: E402
from tests.torch_reference import stylegan2 as ref  # noqa: E402
from tests.torch_reference import stylegan_finetune as ref_ft  # noqa: E402
from tools.benchmark_report import write_report  # noqa: E402

VIT_B32 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
               image_size=224, patch_size=32)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            vocab_size=49408, max_position_embeddings=8)


def _sd(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--n_crops", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/stylegan_finetune_cpu.json")
    parser.add_argument("--notes", default="", help="free text stored in the JSON (e.g. machine load)")
    args = parser.parse_args()
    hp = st.FinetuneHParams(n_crops=args.n_crops, start_iter=0)

    torch.manual_seed(0)
    tg = ref.randomize_(ref.Generator(args.size, 512, 8), seed=0)
    td = ref.randomize_(ref.Discriminator(args.size), seed=1)
    tvgg = ref_cut.VGG19()
    config = transformers.CLIPConfig(text_config=TEXT, vision_config=VIT_B32, projection_dim=512)
    tclip = transformers.CLIPModel(config).eval()

    G = sg.Generator(size=args.size)
    D = sg.Discriminator(size=args.size)
    clip_model = convert_clip.model_from_config(config.to_dict())
    g = convert_sg.convert_generator(_sd(tg), G, source="bench", name="g")
    source = {"g": g, "g_ema": g, "d": convert_sg.convert_discriminator(_sd(td), D, source="bench")}
    nets = st.Networks(G, D, VGG19Features(last_layer=CONV4_4), clip_model)
    state = st.create_finetune_state(
        source, hp, nets, vgg_params=trim_params(convert_vgg.convert_state_dict(_sd(tvgg)).params, CONV4_4),
        clip_params=convert_clip.convert_state_dict({k: v.numpy() for k, v in tclip.state_dict().items()},
                                                    model=clip_model).params)
    state = jax.device_put(state)
    real = np.random.default_rng(0).uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype(np.float32)
    rand = jax.device_get(jax.jit(lambda k: st.draw_randomness(k, hp, G, args.batch))(jax.random.key(0)))

    step = jax.jit(lambda s, b, r: st.train_step(s, b, None, hparams=hp, nets=nets, randomness=r))
    batch = {"real": real}
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, rand).compile()
    compile_s = time.perf_counter() - t0
    # state.step stays 0 (the output state is discarded), so every timed step includes the R1 step.
    jax.block_until_ready(compiled(state, batch, rand))
    jax_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(state, batch, rand))
        jax_times.append(time.perf_counter() - t0)

    nets_t = dict(generator=tg, g_ema=copy.deepcopy(tg), g_source=copy.deepcopy(tg), discriminator=td, vgg=tvgg,
                  clip=tclip)
    lr_g, betas_g = hp.g_adam()
    lr_d, betas_d = hp.d_adam()
    opts = dict(g_optim=torch.optim.Adam(tg.parameters(), lr=lr_g, betas=betas_g),
                d_optim=torch.optim.Adam(td.parameters(), lr=lr_d, betas=betas_d))
    torch_times = []
    for i in range(args.repeats + 1):
        t0 = time.perf_counter()
        ref_ft.finetune_iteration(nets_t, opts, real, rand._asdict(), hp=hp, apply_r1=True,
                                  clip_image_size=VIT_B32["image_size"])
        if i:  # the first is the warm-up
            torch_times.append(time.perf_counter() - t0)

    report = {
        "benchmark": "one StyleGAN2 fine-tuning step (D step + R1 step + G step with VGG/CLIP/patch losses + EMA)",
        "settings": {"size": args.size, "batch": args.batch, "n_crops": args.n_crops, "crop_size": hp.crop_size,
                     "freeze_g": hp.freeze_g, "clip": "ViT-B/32 shapes, random weights, float32", "r1_step": True,
                     "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
                     "timing": "median after one warm-up; JAX compile excluded and reported separately",
                     "official_recipe": "batch 16, 16 crops (not run here)"},
        "results": {"jax_step_s": statistics.median(jax_times), "jax_compile_s": compile_s,
                    "torch_step_s": statistics.median(torch_times),
                    "jax_times_s": jax_times, "torch_times_s": torch_times},
    }
    report["results"]["speedup_torch_over_jax"] = report["results"]["torch_step_s"] / report["results"]["jax_step_s"]
    if args.notes:
        report["notes"] = args.notes
    write_report(args.out, report, packages=("transformers",))
    print(json.dumps(report["results"], indent=2))


if __name__ == "__main__":
    main()
