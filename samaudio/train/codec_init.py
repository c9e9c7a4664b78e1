"""A DACVAE set by hand to a band-limited lapped transform (MDCT): the codec's starting point in training.

A DACVAE learns to reconstruct waveforms with their phase only after very many steps (from random weights, on
fresh clips, its SNR stays at 0 dB for hundreds of steps: it learns spectra first). With content below
C * 12.5 Hz, a codec of C latent channels can instead be *set* to an MDCT of that band, which reconstructs the
waveform itself; training then starts from there. The construction keeps every layer, only choosing weights:

    encoder  48 kHz -> 24 kHz -> 3 kHz (pick samples: no anti-alias filter, the content is band-limited)
             -> 10 polyphase channels at 300 Hz -> MDCT of 240-sample sine windows every 120 samples (25 Hz),
                bins 0..C-1 (k * 12.5 Hz): the latent
    decoder  inverse MDCT per frame as the transposed conv's kernel (overlap-add is what a transposed conv
             does), interleave to 3 kHz, linear interpolation to 24 kHz and 48 kHz (the synthesis kernels are
             pre-emphasised by the inverse of its sinc^2 droop), then the head.
Residual units are zeroed (identity), Snake alphas made tiny (x + alpha x^2 ~ x), the watermark's output conv
zeroed (its term vanishes). Only `encoder_rates` [2, 8, 10, 12] (decoder the reverse) are supported.

Legend: N = 120 MDCT hop at 3 kHz (one latent frame), C latent channels (MDCT bins kept).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from samaudio.errors import ConfigError
from samaudio.model.codec import DACVAE, ResidualUnit, Snake1d, WNConv1d, WNConvTranspose1d

N = 120  # MDCT hop in 3 kHz samples: one 40 ms latent frame
RATE_3K = 3000
SNAKE_ALPHA = 1e-6  # x + sin(a x)^2 / a = x + a x^2 + ...: linear to 1e-5 for |x| < 10


def mdct_basis(bins: int) -> np.ndarray:
    """(bins, 2N) orthonormal MDCT basis with the sine window: analysis and (windowed) synthesis both."""
    n = np.arange(2 * N)
    window = np.sin(np.pi * (n + 0.5) / (2 * N))
    k = np.arange(bins)[:, None]
    return math.sqrt(2 / N) * window * np.cos(np.pi / N * (n + 0.5 + N / 2) * (k + 0.5))


def set_weight(conv, weight: np.ndarray | Tensor, bias: np.ndarray | Tensor | None = None) -> None:
    """Write a plain weight into a weight-normed conv (zero rows get g = 0 with a nonzero v, not 0 / 0)."""
    w = torch.as_tensor(weight, dtype=torch.float32)
    with torch.no_grad():
        norm = torch.linalg.vector_norm(w, dim=tuple(range(1, w.dim())), keepdim=True)
        conv.weight_v.copy_(torch.where(norm > 0, w, torch.ones_like(w)))
        conv.weight_g.copy_(norm)
        conv.bias.copy_(torch.zeros_like(conv.bias) if bias is None else torch.as_tensor(bias, dtype=torch.float32))


def _pick(c_out: int, c_in: int, k: int, taps: dict[tuple[int, int], int]) -> np.ndarray:
    """(c_out, c_in, k) zeros with 1 at (o, i, taps[(o, i)])."""
    w = np.zeros((c_out, c_in, k))
    for (o, i), tap in taps.items():
        w[o, i, tap] = 1.0
    return w


def _check(codec: DACVAE) -> None:
    cfg, C = codec.config, codec.codebook_dim
    if list(cfg.encoder_rates) != [2, 8, 10, 12] or list(cfg.decoder_rates) != [12, 10, 8, 2]:
        raise ConfigError(
            f"the MDCT initialisation needs encoder_rates [2, 8, 10, 12] and decoder_rates [12, 10, 8, 2], got "
            f"{cfg.encoder_rates} and {cfg.decoder_rates}"
        )
    if C > N or 16 * cfg.encoder_dim < C or cfg.latent_dim < C or cfg.decoder_dim < 2 * 10 or cfg.decoder_dim < C:
        raise ConfigError(
            f"the MDCT initialisation needs codebook_dim <= {N}, 16 * encoder_dim, latent_dim and decoder_dim >= "
            f"codebook_dim and decoder_dim >= 20; got codebook_dim {C}, encoder_dim {cfg.encoder_dim}, latent_dim "
            f"{cfg.latent_dim}, decoder_dim {cfg.decoder_dim}"
        )


@torch.no_grad()
def init_mdct_codec(codec: DACVAE) -> DACVAE:
    """Set `codec`'s weights to the band-limited MDCT codec described above; returns it. The band is
    [0, codebook_dim * 12.5 Hz)."""
    _check(codec)
    cfg, C = codec.config, codec.codebook_dim
    for module in codec.modules():
        if isinstance(module, Snake1d):
            module.alpha.fill_(SNAKE_ALPHA)
        if isinstance(module, ResidualUnit):
            last = module.block[3]
            set_weight(last, np.zeros(tuple(last.weight_v.shape)))  # x + 0: identity
    d = cfg.encoder_dim
    enc = codec.encoder.block
    # encoder: conv k7 (pad 3) passes x; block strided convs pick samples. Sample t of the 3 kHz signal is
    # x[16 t + 8]: the half-sample advance centres the decoder's linear interpolation (see below).
    set_weight(enc[0], _pick(d, 1, 7, {(0, 0): 3}))
    set_weight(enc[1].block[4], _pick(2 * d, d, 4, {(0, 0): 1}))  # out[t] = in[2t + k - 1]: x24[t] = x[2t]
    set_weight(enc[2].block[4], _pick(4 * d, 2 * d, 16, {(0, 0): 8}))  # out[t] = in[8t + k - 4]: x3k[t] = x24[8t + 4]
    set_weight(enc[3].block[4], _pick(8 * d, 4 * d, 20, {(p, 0): 5 + p for p in range(10)}))  # phase p: x3k[10t + p]
    # block 4: out[t] = sum_{p,k} w[o, p, k] ph_p[12t + k - 6] = sum_n basis[o, n] x3k[120t - 60 + n], n = 10k + p
    basis = mdct_basis(C)  # (C, 240)
    w = np.zeros((16 * d, 8 * d, 24))
    for p in range(10):
        w[:C, p, :] = basis[:, p::10]
    set_weight(enc[4].block[4], w)
    set_weight(enc[6], _pick(cfg.latent_dim, 16 * d, 3, {(c, c): 1 for c in range(C)}))
    q = codec.quantizer
    set_weight(q.in_proj, _pick(2 * C, cfg.latent_dim, 1, {(c, c): 0 for c in range(C)}))  # mean = bins; scale half 0
    set_weight(q.out_proj, _pick(cfg.latent_dim, C, 1, {(c, c): 0 for c in range(C)}))

    D = cfg.decoder_dim
    dec = codec.decoder.model
    set_weight(dec[0], _pick(D, cfg.latent_dim, 7, {(c, c): 3 for c in range(C)}))
    # block 1 (stride 12, pad 6): in[t] adds w[:, :, k] at 300 Hz step 12t + k - 6, phase p = 3 kHz sample
    # 120t - 60 + 10k + p: the inverse MDCT of frame t, pre-emphasised against the interpolation's droop
    freqs = (np.arange(C) + 0.5) * RATE_3K / (2 * N)
    droop = np.sinc(freqs / RATE_3K) ** 2 * np.sinc(freqs / 24000) ** 2  # linear interpolation x8, then x2
    w = np.zeros((D, D // 2, 24))  # transposed: (c_in, c_out, k)
    for p in range(10):
        w[:C, p, :] = basis[:, p::10] / droop[:, None]
    set_weight(dec[1].block[1], w)
    # block 2 (stride 10, pad 5): phase p of step t -> 3 kHz sample 10t + p (tap p + 5)
    w = np.zeros((D // 2, D // 4, 20))
    for p in range(10):
        w[p, 0, p + 5] = 1.0
    set_weight(dec[2].block[1], w)
    # block 3 (stride 8, pad 4): in[t] adds w[k] at 24 kHz sample 8t + k - 4; a triangle centred on tap 8
    # puts sample t at 8t + 4, i.e. 48 kHz sample 16t + 8, where the encoder took it
    w = np.zeros((D // 4, D // 8, 16))
    w[0, 0, :] = np.maximum(0.0, 1 - np.abs(np.arange(16) - 8) / 8)
    set_weight(dec[3].block[1], w)
    # block 4 (stride 2, pad 1): in[t] -> 48 kHz samples 2t - 1, 2t, 2t + 1 with weights 1/2, 1, 1/2
    w = np.zeros((D // 8, D // 16, 4))
    w[0, 0, :3] = [0.5, 1.0, 0.5]
    set_weight(dec[4].block[1], w)
    wm = codec.decoder.wm_model
    set_weight(wm.encoder_block.pre[1], _pick(1, D // 16, 7, {(0, 0): 3}))  # the head passes channel 0
    out = wm.decoder_block.post[1]  # the watermark's last conv: zero, so waveform = head(x)
    out.weight.zero_()
    out.bias.zero_()
    return codec
