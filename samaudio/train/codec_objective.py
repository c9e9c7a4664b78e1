"""The autoencoder objective of the DACVAE codec: the batch's negative signal-to-noise ratio in dB plus a
lightly weighted multi-resolution STFT loss (auraloss).

Separation is scored on waveforms, so the waveform term leads. With the spectral term leading (or waveform L1
beside it at equal weight) the phase stays free: after 400 steps the decoded waveform was still uncorrelated
with the input (SI-SDR near -40 dB) while the spectra matched.

The codec is trained as the deterministic autoencoder SAM-Audio uses (encode to the posterior mean, decode);
`normalize_latents` then folds a per-channel affine map into the bottleneck so that the latents the DiT works in
have zero mean and unit variance overall, which the flow's N(0, 1) starting point assumes.

Legend: B clips, L samples, C latent channels, T latent frames.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from samaudio.model.codec import DACVAE, WNConv1d
from samaudio.train.codec_init import set_weight


class CodecLoss(nn.Module):
    """`-snr_db + stft_weight * stft` between a decoded and a reference waveform, both (B, 1, L)."""

    def __init__(self, sample_rate: int, stft_weight: float = 0.1):
        super().__init__()
        import auraloss

        self.stft_weight = stft_weight
        # windows from 2.7 ms to 43 ms at 48 kHz: clicks and onsets to bass notes
        self.stft = auraloss.freq.MultiResolutionSTFTLoss(
            fft_sizes=[2048, 512, 128], hop_sizes=[512, 128, 32], win_lengths=[2048, 512, 128]
        )

    def forward(self, decoded: Tensor, reference: Tensor) -> dict[str, Tensor]:
        # over the whole batch, not per clip: a clip of the synthetic data may be silent (auraloss's SNRLoss is
        # per clip and would divide by its zero energy)
        snr_db = 10 * torch.log10(reference.pow(2).sum() / ((decoded - reference).pow(2).sum() + 1e-9) + 1e-9)
        stft = self.stft(decoded, reference)
        return {"loss": self.stft_weight * stft - snr_db, "snr_db": snr_db, "stft": stft}


def autoencode(codec: DACVAE, wav: Tensor) -> Tensor:
    """(B, 1, L) with L a multiple of the hop -> (B, 1, L) reconstruction, differentiable (unlike codec())."""
    latent = codec.quantizer.mean(codec.encoder(wav))  # (B, C, T)
    message = torch.zeros(wav.shape[0], codec.nbits, device=wav.device)  # a fixed watermark message
    return codec.decode(latent, message=message)


@torch.no_grad()
def normalize_latents(codec: DACVAE, latents: Tensor) -> tuple[Tensor, Tensor]:
    """Fold z' = (z - mean) / std (mean per channel, the std of all of them, from `latents` (N, C, T)) into the bottleneck's
    projections.

    The codec decodes z' exactly as it decoded z. Returns the (mean, std) that were folded, each (C,).
    """
    C = codec.codebook_dim
    mean = latents.mean(dim=(0, 2))  # (C,)
    # one scale for all channels: per channel, almost empty channels (std 0.004 against 0.33) were blown up
    # until they dominated the flow loss
    std = latents.std().clamp_min(1e-5).expand(C).clone()  # (C,)
    q = codec.quantizer
    # in_proj: its first C output rows give the mean; scale and shift them
    w_in = _weight(q.in_proj)  # (2C, Z, 1)
    w_in[:C] /= std[:, None, None]
    bias_in = q.in_proj.bias.clone()
    bias_in[:C] = (bias_in[:C] - mean) / std
    set_weight(q.in_proj, w_in, bias_in)
    # out_proj: W z + b = (W diag(std)) z' + (W mean + b)
    w_out = _weight(q.out_proj)  # (Z, C, 1)
    bias_out = q.out_proj.bias + (w_out[:, :, 0] @ mean)
    set_weight(q.out_proj, w_out * std[None, :, None], bias_out)
    return mean, std


def _weight(conv: WNConv1d) -> Tensor:
    v = conv.weight_v
    return conv.weight_g * v / torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True)
