"""PyTorch reference of one iteration of the authors' StyleGAN fine-tuning script, written here from
docs/reference.md §4.4: the rosinality / Cartoon-StyleGAN training loop with FreezeG, the VGG19 content
loss, the CLIP global loss and the OneshotCLIP patch loss, on the reference networks of
`stylegan2.py` / `cut_training.py` and transformers' `CLIPModel`.

Randomness is injected (z's, crossover points, noise, crop corners) so that the JAX step can be fed
exactly the same values. Images and noise arrive as NHWC numpy and are converted here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import autograd

from tests.torch_reference.stylegan2 import nchw

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def requires_grad(model, flag=True, target_layer=None):
    """Cartoon-StyleGAN `requires_grad`: substring match on parameter names."""
    for name, param in model.named_parameters():
        if target_layer is None or target_layer in name:
            param.requires_grad = flag


def unfreeze_generator(generator, freeze_g):
    """The official FreezeG loop: the last `freeze_g` resolution blocks become trainable."""
    requires_grad(generator, False)
    if freeze_g < 0:
        requires_grad(generator, True)
        return
    for layer in range(freeze_g):
        requires_grad(generator, True, target_layer=f"convs.{generator.num_layers - 2 - 2 * layer}")
        requires_grad(generator, True, target_layer=f"convs.{generator.num_layers - 3 - 2 * layer}")
        requires_grad(generator, True, target_layer=f"to_rgbs.{generator.log_size - 3 - layer}")


def accumulate(model1, model2, decay):
    par1, par2 = dict(model1.named_parameters()), dict(model2.named_parameters())
    for k in par1:
        par1[k].data.mul_(decay).add_(par2[k].data, alpha=1 - decay)


def clip_embed(clip_model, images, image_size):
    """`x*0.5+0.5`, bicubic resize (align_corners False, no antialias), CLIP mean/std, image features, L2."""
    x = images * 0.5 + 0.5
    x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=False)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    out = clip_model.get_image_features(pixel_values=(x - mean) / std)
    out = out.pooler_output if hasattr(out, "pooler_output") else out
    return out / out.norm(dim=-1, keepdim=True)


def patch_loss(feat_q, feat_k, n_groups, tau):
    """OneshotCLIP `PatchLoss` (nce_allbatch False): groups by reshaping without reordering."""
    feat_k = feat_k.detach()
    qn, kn = feat_q.norm(dim=-1, keepdim=True), feat_k.norm(dim=-1, keepdim=True)
    l_pos = (feat_q * feat_k).sum(-1, keepdim=True) / (qn * kn)
    d = feat_q.shape[1]
    qg, kg = feat_q.view(n_groups, -1, d), feat_k.view(n_groups, -1, d)
    p = qg.shape[1]
    l_neg = torch.bmm(qg, kg.transpose(2, 1)) / torch.bmm(qn.view(n_groups, -1, 1), kn.view(n_groups, -1, 1).transpose(2, 1))
    l_neg = l_neg.masked_fill(torch.eye(p, dtype=torch.bool)[None], -10.0).view(-1, p)
    out = torch.cat([l_pos, l_neg], 1) / tau
    return F.cross_entropy(out, torch.zeros(out.shape[0], dtype=torch.long))


def crops_of(images, corners, size):
    """Crop-major concatenation: crop0 of every image, crop1 of every image, ..."""
    return torch.cat([images[:, :, int(y) : int(y) + size, int(x) : int(x) + size] for y, x in corners], 0)


def _noise(list_nhwc):
    return [nchw(n) for n in list_nhwc]


def finetune_iteration(nets, opts, real_nhwc, rand, *, hp, apply_r1, clip_image_size):
    """One official iteration. `nets`: dict generator, g_ema, g_source, discriminator, vgg, clip;
    `opts`: dict g_optim, d_optim (Adam over all parameters, as the script); `rand`: dict of numpy
    d_z, d_inject, d_noise, g_z, g_inject, g_noise, s_inject, s_noise, crops; `hp`: FinetuneHParams.
    Returns a dict of losses (floats)."""
    generator, discriminator = nets["generator"], nets["discriminator"]
    real = nchw(real_nhwc)
    b = real.shape[0]
    out = {}

    # D step
    requires_grad(generator, False)
    requires_grad(discriminator, True)
    z = torch.tensor(rand["d_z"])
    fake, _ = generator([z[0], z[1]], inject_index=int(rand["d_inject"]), noise=_noise(rand["d_noise"]))
    fake_pred = discriminator(fake)
    real_pred = discriminator(real)
    d_loss = F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()
    discriminator.zero_grad()
    d_loss.backward()
    opts["d_optim"].step()
    out["d"] = d_loss.item()

    if apply_r1:
        real.requires_grad = True
        real_pred = discriminator(real)
        (grad_real,) = autograd.grad(outputs=real_pred.sum(), inputs=real, create_graph=True)
        r1 = grad_real.pow(2).reshape(b, -1).sum(1).mean()
        discriminator.zero_grad()
        (hp.r1_gamma / 2 * r1 * hp.d_reg_every + 0 * real_pred[0]).backward()
        opts["d_optim"].step()
        out["r1"] = r1.item()

    # G step
    unfreeze_generator(generator, hp.freeze_g)
    requires_grad(discriminator, False)
    z = torch.tensor(rand["g_z"])
    fake, _ = generator([z[0], z[1]], inject_index=int(rand["g_inject"]), noise=_noise(rand["g_noise"]))
    with torch.no_grad():
        x_s, _ = nets["g_source"]([z[0], z[1]], inject_index=int(rand["s_inject"]), noise=_noise(rand["s_noise"]))
    g_adv = F.softplus(-discriminator(fake)).mean()
    fake_in = fake + 1 / 2.0 if hp.faithful_to == "official_code" else (fake + 1) / 2.0  # the official slip
    content = F.mse_loss(nets["vgg"].feature_mode(fake_in), nets["vgg"].feature_mode((x_s + 1) / 2.0))
    with torch.no_grad():
        e_s = clip_embed(nets["clip"], x_s, clip_image_size)
    clip_loss = (1 - F.cosine_similarity(e_s, clip_embed(nets["clip"], fake, clip_image_size))).mean()
    q = clip_embed(nets["clip"], crops_of(fake, rand["crops"], hp.crop_size), clip_image_size)
    with torch.no_grad():
        k = clip_embed(nets["clip"], crops_of(x_s, rand["crops"], hp.crop_size), clip_image_size)
    if hp.faithful_to != "official_code":  # per-image groups: reorder crop-major rows image-major
        n = len(rand["crops"])
        order = [c * b + i for i in range(b) for c in range(n)]
        q, k = q[order], k[order]
    patch = patch_loss(q, k, b, hp.patch_tau)
    g_loss = g_adv + hp.lambda_content * content + hp.lambda_clip * clip_loss + hp.lambda_patch * patch
    generator.zero_grad()
    g_loss.backward()
    opts["g_optim"].step()
    accumulate(nets["g_ema"], generator, hp.ema_decay)
    out.update(g=g_loss.item(), g_adv=g_adv.item(), content=content.item(), clip=clip_loss.item(), patch=patch.item())
    return out
