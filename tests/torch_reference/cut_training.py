"""PyTorch reference of the semi-supervised training pieces, written from docs/reference.md §2.3-2.8.

Discriminator, projection heads (with injectable patch positions), VGG19 features, the loss modules
as the official code computes them (batch size 1 semantics, in-place masking, straight-through hDCE),
and one official training iteration (`optimize_parameters`). Used only by tests and benchmarks.
NCHW throughout; projected patches are `(B*P, D)` rows, batch-major, as in the official code.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tests.torch_reference.cut_networks import Downsample

# ----------------------------------------------------------------------------- networks


class NLayerDiscriminator(nn.Module):
    """n_layers=3 PatchGAN, InstanceNorm, anti-aliased (docs/reference.md §2.3 table)."""

    def __init__(self, input_nc=3, ndf=64, n_layers=3):
        super().__init__()
        seq = [nn.Conv2d(input_nc, ndf, 4, 1, 1), nn.LeakyReLU(0.2, True), Downsample(ndf)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1), nn.InstanceNorm2d(ndf * mult),
                    nn.LeakyReLU(0.2, True), Downsample(ndf * mult)]
        prev, mult = mult, min(2**n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1), nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        seq += [nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x)


class PatchSampleF(nn.Module):
    """`PatchSampleF(use_mlp=True)` with its MLPs built eagerly for known channels; ids are given."""

    def __init__(self, channels=(3, 128, 256, 256, 256), nc=256):
        super().__init__()
        for k, c in enumerate(channels):
            setattr(self, f"mlp_{k}", nn.Sequential(nn.Linear(c, nc), nn.ReLU(), nn.Linear(nc, nc)))
        self.n = len(channels)

    def forward(self, feats, patch_ids):
        """feats: list of (B, C, H, W); patch_ids: list of LongTensor (P,) -> list of (B*P, nc)."""
        out = []
        for k, (feat, ids) in enumerate(zip(feats, patch_ids)):
            # Same numbers as the official `feat.permute(0, 2, 3, 1).flatten(1, 2)[:, ids, :]`, but
            # gathering before the permute keeps the gradient that flows back into G contiguous NCHW:
            # torch 2.13 (CPU) InstanceNorm2d backward returns WRONG gradients when its incoming
            # gradient has channels-last strides (measured: errors of the size of the gradient itself;
            # see tests/training/test_i2i_step.py::test_torch_instance_norm_channels_last_gradient_bug).
            sample = feat.flatten(2)[:, :, ids].permute(0, 2, 1).flatten(0, 1)
            sample = getattr(self, f"mlp_{k}")(sample)
            norm = sample.pow(2).sum(1, keepdim=True).pow(0.5)
            out.append(sample.div(norm + 1e-7))
        return out


VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


class VGG19(nn.Module):
    """torchvision `vgg19()` layout: `features` (37 modules) and `classifier` (keys 0, 3, 6)."""

    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for v in VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 1000),
        )

    def feature_mode(self, x, last=25):
        """The official `feature_mode=True` forward: `features[0..last]` (conv4_4 pre-ReLU for 25)."""
        for module in list(self.features)[: last + 1]:
            x = module(x)
        return x


# ----------------------------------------------------------------------------- losses (official forms)


def lsgan(pred, real: bool):
    return F.mse_loss(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))


def normalize(x):
    return x.div(x.pow(2).sum(1, keepdim=True).pow(0.5) + 1e-7)


def patch_nce(feat_q, feat_k, tau=0.07, batch_size=1, weight=None):
    """Official PatchNCELoss: per-row CE (B*P,), negatives grouped by `batch_size`."""
    n, dim = feat_q.shape
    feat_k = feat_k.detach()
    l_pos = torch.bmm(feat_q.view(n, 1, -1), feat_k.view(n, -1, 1)).view(n, 1)
    q = feat_q.view(batch_size, -1, dim)
    k = feat_k.view(batch_size, -1, dim)
    p = q.size(1)
    l_neg = torch.bmm(q, k.transpose(2, 1))
    if weight is not None:
        l_neg = l_neg * weight
    l_neg = l_neg.masked_fill(torch.eye(p, dtype=torch.bool)[None], -10.0).view(-1, p)
    out = torch.cat((l_pos, l_neg), dim=1) / tau
    return F.cross_entropy(out, torch.zeros(out.size(0), dtype=torch.long), reduction="none")


def hdce(feat_q, feat_k, weight, tau=0.07, batch_size=1):
    """Official PatchHDCELoss (vector of B*P rows; caller takes the mean)."""
    n, dim = feat_q.shape
    feat_k = feat_k.detach()
    l_pos = torch.bmm(feat_q.view(n, 1, -1), feat_k.view(n, -1, 1)).view(n, 1)
    q = feat_q.view(batch_size, -1, dim)
    k = feat_k.view(batch_size, -1, dim)
    p = q.size(1)
    l_neg = torch.bmm(q, k.transpose(2, 1))
    if weight is not None:
        l_neg = l_neg * weight
    l_neg = l_neg.masked_fill(torch.eye(p, dtype=torch.bool)[None], -10.0).view(-1, p)
    v = torch.logsumexp((l_neg - l_pos) / tau, dim=1)
    loss_vec = torch.exp(v - v.detach())
    dummy = torch.cat((l_pos, l_neg), dim=1) / tau
    ce = F.cross_entropy(dummy, torch.zeros(dummy.size(0), dtype=torch.long), reduction="none")
    return loss_vec.mean() - 1 + ce.detach()


def src(feat_q, feat_k, gamma, only_weight=False):
    """Official SRC_Loss for one image (all rows one group): (JSD sum, hard-negative weights (1,P,P))."""
    dim = feat_q.shape[1]
    feat_k = normalize(feat_k.detach())
    feat_q = normalize(feat_q)
    q = feat_q.view(1, -1, dim)
    k = feat_k.view(1, -1, dim)
    spatial_q = torch.bmm(q, q.transpose(2, 1))
    spatial_k = torch.bmm(k, k.transpose(2, 1))
    p = k.size(1)
    seed = spatial_k.clone().detach().masked_fill(torch.eye(p, dtype=torch.bool)[None], -10.0)
    w = torch.softmax(seed / gamma, dim=2).detach()
    w = w / w.max(dim=2, keepdim=True)[0]
    if only_weight:
        return 0, w
    a_q = torch.softmax(spatial_q, dim=1)
    a_k = torch.softmax(spatial_k, dim=1).detach()
    m = 0.5 * (a_q + a_k)
    kl = lambda lp: F.kl_div(torch.log(m), lp, reduction="sum", log_target=True)  # noqa: E731
    return 0.5 * (kl(torch.log(a_q)) + kl(torch.log(a_k))), w


# ----------------------------------------------------------------------------- one training iteration


def lambda_pair(epoch, n_epochs_total, faithful_to):
    if faithful_to == "official_code":
        return math.cos(math.pi / 2 * n_epochs_total * (epoch - 1))
    return math.cos(math.pi / 2 * (epoch - 1) / n_epochs_total)


def training_iteration(nets, opts, batch, ids_unpaired, ids_paired, *, epoch, faithful_to="official_code",
                       n_epochs=10, n_epochs_decay=10, lambda_nce_s=0.05, lambda_vgg=-1.0, vgg=None,
                       nce_layers=(0, 4, 8, 12, 16), tau=0.07, lambda_gan=1.0, lambda_gan_p=1.0,
                       lambda_hdce=0.1, lambda_src=0.05):
    """One official `optimize_parameters` at batch size 1 (docs/reference.md §2.5-2.7).

    nets: dict G, D, D_p, F, F_s (modules); opts: dict of torch.optim.Adam with the lr already set
    for this epoch; batch: dict x, y, x_p, y_p of (1, 3, H, W); ids: lists of LongTensor per layer.
    Returns a dict of loss values (floats).
    """
    G, D, D_p, F_, F_s = (nets[k] for k in ("G", "D", "D_p", "F", "F_s"))
    x, y, xp, yp = batch["x"], batch["y"], batch["x_p"], batch["y_p"]
    layers = list(nce_layers)
    n_total = n_epochs + n_epochs_decay
    gamma = 50.0 + (10.0 - 50.0) * epoch / n_total

    # forward
    fake = G(torch.cat((x, y), 0))
    fake_b, idt_b = fake[:1], fake[1:]
    fake_b_p = G(xp)

    # D
    for p in D.parameters():
        p.requires_grad_(True)
    opts["D"].zero_grad()
    loss_d = 0.5 * (lsgan(D(fake_b.detach()), False) + lsgan(D(y), True))
    loss_d.backward()
    opts["D"].step()

    # D_p
    for p in D_p.parameters():
        p.requires_grad_(True)
    opts["D_p"].zero_grad()
    loss_dp = 0.5 * (lsgan(D_p(torch.cat((xp, fake_b_p), 1).detach()), False)
                     + lsgan(D_p(torch.cat((xp, yp), 1)), True))
    loss_dp.backward()
    opts["D_p"].step()

    # G + F + F_s
    for p in list(D.parameters()) + list(D_p.parameters()):
        p.requires_grad_(False)
    for k in ("G", "F", "F_s"):
        opts[k].zero_grad()
    lp = lambda_pair(epoch, n_total, faithful_to)
    loss_gan = lsgan(D(fake_b), True) * lambda_gan
    loss_gan_p = lsgan(D_p(torch.cat((xp, fake_b_p), 1)), True) * lambda_gan_p

    fake_feat = G(fake_b, layers, encode_only=True)
    real_a_feat = G(x, layers, encode_only=True)
    fake_pool = F_(fake_feat, ids_unpaired)
    real_a_pool = F_(real_a_feat, ids_unpaired)
    idt_feat = G(idt_b, layers, encode_only=True)
    real_b_feat = G(y, layers, encode_only=True)
    idt_pool = F_(idt_feat, ids_unpaired)
    real_b_pool = F_(real_b_feat, ids_unpaired)

    # StylePatchNCE: keys from y_p, queries from G(x_p), through F_s
    feat_q = G(fake_b_p, layers, encode_only=True)
    feat_k = G(yp, layers, encode_only=True)
    k_pool = F_s(feat_k, ids_paired)
    q_pool = F_s(feat_q, ids_paired)
    nce = sum(patch_nce(q, k, tau).mul(lambda_nce_s).mean() for q, k in zip(q_pool, k_pool)) / len(layers)
    loss_nce_s = nce * lambda_nce_s if faithful_to == "official_code" else nce

    loss_src, weights = 0.0, []
    for q, k in zip(fake_pool, real_a_pool):
        l, w = src(q, k, gamma)
        loss_src = loss_src + l * lambda_src
        weights.append(w)
    loss_src = loss_src / len(layers)
    loss_hdce = sum((hdce(q, k, w) * lambda_hdce).mean() for q, k, w in zip(fake_pool, real_a_pool, weights)) / len(layers)
    weights_y = [src(q, k, gamma, only_weight=True)[1] for q, k in zip(idt_pool, real_b_pool)]
    loss_hdce_y = sum((hdce(q, k, w) * lambda_hdce).mean() for q, k, w in zip(idt_pool, real_b_pool, weights_y)) / len(layers)
    loss_g = 0.0
    if lambda_vgg > 0:
        fake_in = fake_b + 0.5 if faithful_to == "official_code" else (fake_b + 1) / 2.0
        loss_g = F.mse_loss(vgg.feature_mode(fake_in), vgg.feature_mode((x + 1) / 2.0)) * lambda_vgg
    loss_g = loss_g + loss_gan + 0.5 * (loss_hdce + loss_hdce_y) + loss_src + (loss_gan_p + loss_nce_s) * lp
    loss_g.backward()
    opts["G"].step()
    opts["F"].step()
    opts["F_s"].step()
    return {"D": float(loss_d), "D_p": float(loss_dp), "G": float(loss_g), "SRC": float(loss_src),
            "HDCE": float(loss_hdce), "HDCE_Y": float(loss_hdce_y), "NCE_s": float(loss_nce_s),
            "G_GAN": float(loss_gan), "G_GAN_p": float(loss_gan_p)}
