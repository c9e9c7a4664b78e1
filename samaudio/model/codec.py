"""DACVAE, the audio codec SAM-Audio separates in: 48 kHz mono waveform <-> latent frames at 25 Hz.

A DAC-style convolutional encoder and decoder around a VAE bottleneck (facebookresearch/dacvae), kept the way
the official SAM-Audio wrapper keeps it: only `encoder`, `quantizer` (the bottleneck) and `decoder` exist, so
the state_dict keys are the official `audio_codec.*` keys with the prefix stripped. Encoding returns the VAE
mean (no sampling, no normalisation). Decoding always watermarks: the decoder's last stage (`wm_model`) embeds
a 16-bit message, drawn at random per row when none is given, exactly as the official decode does.

Legend of dimension letters used in shape comments:
    B   batch (rows)
    L   input samples
    N   samples after padding to a multiple of the hop; decoder output samples
    T   latent frames, N / hop
    C   codebook_dim, latent channels SAM-Audio works in
    Z   latent_dim, encoder output / decoder input width
    D   decoder_dim
    c   channels of the block at hand
    n   watermark time steps, N / prod(WM_RATES)
    H   watermark hidden width (D // 3)
    W   watermark channels at the waveform end (D // 48)
    M   watermark width at the message (4 * W)
    K   message bits (NBITS)
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from samaudio.errors import ConfigError, InvalidAudioError, InvalidRequestError, StoppedError
from samaudio.model.config import DACVAEConfig

# Constants dacvae hard-codes (not config fields).
NBITS = 16  # watermark message bits
WM_RATES = (8, 5, 4, 2)  # side-path strides of decoder blocks 1..4; product 320 samples per watermark step
WM_LSTM_LAYERS = 2
SIDE_FACTOR = 3  # a decoder block's watermark side path is 1/3 of its main width


# ----------------------------------------------------------------------------------------------------------
# Helpers: stop points, weight norm and the two padding modes

StopCheck = Callable[[], bool]  # asked between layers; True: the caller went away, stop


def _stop_point(should_stop: StopCheck | None) -> None:
    # A window's encode and decode take far longer than a solver step (the decode alone most of a window at the
    # small size): a cancel waits for the next layer, not for the whole codec (issue 17).
    if should_stop is not None and should_stop():
        raise StoppedError("the codec stopped between two layers: should_stop() was true")


def _run_layers(layers: Iterable[nn.Module], x: Tensor, should_stop: StopCheck | None) -> Tensor:
    """`x` through `layers` in turn (as their Sequential would), with a stop point before each and inside those
    that have their own (`ResidualUnit`, `EncoderBlock`)."""
    for layer in layers:
        _stop_point(should_stop)
        x = layer(x, should_stop) if isinstance(layer, (ResidualUnit, EncoderBlock)) else layer(x)
    return x


def _weight_norm(g: Tensor, v: Tensor) -> Tensor:
    """The old `torch.nn.utils.weight_norm` (dim 0): g * v / ||v||, the norm over every dim but 0, no eps."""
    return v * (g / torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True))


class _WeightNormed(nn.Module):
    """The weight of a weight-normed layer, folded once for inference and recomputed only when g or v change.

    Training, and any call with gradients on, computes g * v / ||v|| afresh, so autograd reaches `weight_g` and
    `weight_v`. Without gradients (eval, inference) the folded weight is kept and reused (#20): refolding 108 M
    parameters per codec call is a pass over 430 MB each time. The cache is keyed on the parameters' version
    counters (bumped by load_state_dict, optimizer steps and every in-place write), storage, dtype and device,
    so it never serves stale weights; it is the same arithmetic, so outputs are bit-identical. It is not a
    buffer: state_dict keys stay `bias`, `weight_g`, `weight_v`.
    """

    fold_weight_norm = True  # False recomputes per call, as before #20 (the benchmark's "before" path)
    weight_g: nn.Parameter
    weight_v: nn.Parameter

    def __init__(self):
        super().__init__()
        self._folded: tuple[tuple, Tensor] | None = None

    def folded_weight(self) -> Tensor:
        g, v = self.weight_g, self.weight_v
        if self.training or torch.is_grad_enabled():
            self._folded = None  # weights are about to change: hold no stale copy
            return _weight_norm(g, v)
        if not self.fold_weight_norm:
            return _weight_norm(g, v)
        key = (g._version, v._version, g.data_ptr(), v.data_ptr(), g.dtype, v.dtype, g.device)
        if self._folded is None or self._folded[0] != key:
            self._folded = (key, _weight_norm(g, v))
        return self._folded[1]


class WNConv1d(_WeightNormed):
    """Weight-normed Conv1d, "none" padding: symmetric zeros, (k - stride) * dilation // 2 each side.

    Holds `bias`, `weight_g` (c_out, 1, 1), `weight_v` (c_out, c_in, k) directly, in that order, as the old
    weight_norm hook leaves them in the official checkpoints.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.stride, self.dilation = stride, dilation
        self.padding = (kernel_size - stride) * dilation // 2
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.weight_g = nn.Parameter(torch.empty(c_out, 1, 1))
        self.weight_v = nn.Parameter(torch.empty(c_out, c_in, kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))  # nn.Conv1d's default
        with torch.no_grad():  # the hook starts with weight == v
            self.weight_g.copy_(torch.linalg.vector_norm(self.weight_v, dim=(1, 2), keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.folded_weight(), self.bias, self.stride, self.padding, self.dilation)


class WNConvTranspose1d(_WeightNormed):
    """Weight-normed ConvTranspose1d, "none" padding: output length exactly L * stride.

    The weight is (c_in, c_out, k), so weight norm's dim 0 is the *input* channel: `weight_g` (c_in, 1, 1).
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int):
        super().__init__()
        self.stride = stride
        self.padding, self.output_padding = (stride + 1) // 2, stride % 2
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.weight_g = nn.Parameter(torch.empty(c_in, 1, 1))
        self.weight_v = nn.Parameter(torch.empty(c_in, c_out, kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
        with torch.no_grad():
            self.weight_g.copy_(torch.linalg.vector_norm(self.weight_v, dim=(1, 2), keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose1d(x, self.folded_weight(), self.bias, self.stride, self.padding, self.output_padding)


class CausalConv1d(nn.Conv1d):
    """Plain Conv1d with dacvae's "auto" (causal) padding: zeros, k - stride on the left and on the right
    what completes the last stride; output length ceil(L / stride). Keys `weight`, `bias` as nn.Conv1d."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1):
        super().__init__(c_in, c_out, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        k, s, L = self.kernel_size[0], self.stride[0], x.shape[-1]
        right = math.ceil(L / s) * s - L  # 0 for every length SAM-Audio produces
        return super().forward(F.pad(x, (k - s, right)))


class CausalConvTranspose1d(nn.ConvTranspose1d):
    """Plain ConvTranspose1d, "auto" (causal): no padding, then the last k - stride samples dropped, so
    kernel 2 * stride gives exactly L * stride samples."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int):
        super().__init__(c_in, c_out, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)  # (B, c_out, (L - 1) * s + k)
        trim = self.kernel_size[0] - self.stride[0]
        return y[..., : y.shape[-1] - trim]


class Snake1d(nn.Module):
    """x + sin(alpha x)^2 / alpha, one alpha per channel (the 1e-9 keeps alpha = 0 finite)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        inv_alpha = (self.alpha + 1e-9).reciprocal()
        if torch.is_grad_enabled():
            return torch.addcmul(x, inv_alpha, torch.sin(self.alpha * x).square())
        # Inference: one temporary instead of four, the same arithmetic in the same order (#9). On a CPU the
        # codec's activations are tens of MB per call, and every fresh buffer costs page faults.
        y = torch.mul(x, self.alpha).sin_().square_()
        return torch.addcmul(x, inv_alpha, y, out=y)


# ----------------------------------------------------------------------------------------------------------
# Blocks, bottom-up


class ResidualUnit(nn.Module):
    """Snake -> WN conv k7 (dilated) -> Snake -> WN conv k1, plus the input. Length preserved."""

    def __init__(self, c: int, dilation: int = 1):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(c),
            WNConv1d(c, c, kernel_size=7, dilation=dilation),
            Snake1d(c),
            WNConv1d(c, c, kernel_size=1),
        )

    def forward(self, x: Tensor, should_stop: StopCheck | None = None) -> Tensor:
        # = x + block(x), into the block's fresh output (nothing saves it)
        return _run_layers(self.block, x, should_stop).add_(x)


class ELUResidualUnit(nn.Module):
    """The watermark side path's residual unit: ELU -> causal conv k3 (c -> c/2) -> ELU -> conv k1, plus input.

    Slots 0 and 2 are the parameter-free ELUs, hence the keys `block.1.*` and `block.3.*`.
    """

    def __init__(self, c: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ELU(),
            CausalConv1d(c, c // 2, kernel_size=3),
            nn.ELU(),
            CausalConv1d(c // 2, c, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class EncoderBlock(nn.Module):
    """Three dilated residual units at c/2, then a strided WN conv c/2 -> c: length / stride."""

    def __init__(self, c: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            ResidualUnit(c // 2, dilation=1),
            ResidualUnit(c // 2, dilation=3),
            ResidualUnit(c // 2, dilation=9),
            Snake1d(c // 2),
            WNConv1d(c // 2, c, kernel_size=2 * stride, stride=stride),
        )

    def forward(self, x: Tensor, should_stop: StopCheck | None = None) -> Tensor:
        return _run_layers(self.block, x, should_stop)


class Encoder(nn.Module):
    """(B, 1, N) waveform -> (B, Z, T) with T = N / prod(rates)."""

    def __init__(self, d: int, rates: list[int], latent_dim: int):
        super().__init__()
        layers: list[nn.Module] = [WNConv1d(1, d, kernel_size=7)]
        c = d
        for stride in rates:
            c *= 2
            layers.append(EncoderBlock(c, stride))
        layers += [Snake1d(c), WNConv1d(c, latent_dim, kernel_size=3)]
        self.block = nn.Sequential(*layers)

    def forward(self, wav: Tensor, should_stop: StopCheck | None = None) -> Tensor:
        return _run_layers(self.block, wav, should_stop)


class VAEBottleneck(nn.Module):
    """`in_proj` gives the posterior's mean and scale (2C channels), `out_proj` maps a C-channel latent back.

    dacvae's RVQ (sized by n_codebooks / codebook_size) is replaced by this module and leaves no keys.
    """

    def __init__(self, latent_dim: int, codebook_dim: int):
        super().__init__()
        self.codebook_dim = codebook_dim
        self.in_proj = WNConv1d(latent_dim, 2 * codebook_dim, kernel_size=1)
        self.out_proj = WNConv1d(codebook_dim, latent_dim, kernel_size=1)

    def mean(self, z: Tensor) -> Tensor:
        """(B, Z, T) encoder output -> (B, C, T) posterior mean; the scale half is never used."""
        return self.in_proj(z)[:, : self.codebook_dim]


class DecoderBlock(nn.Module):
    """One decoder stage: a main path (c_in -> c_out, length x stride) and, in the same `block`, the layers of
    the watermark side path at a third of the width, which the watermarker calls (length x or / wm_stride).

    The twelve slots are indexed by the checkpoint keys, so they are kept in dacvae's order even though no
    single path runs them in sequence. dacvae names {2, 3, 6} the "downsample" group and {7, 10, 11} the
    "upsample" group; what they do to the time axis is the reverse, and the methods here are named for that.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, wm_stride: int):
        super().__init__()
        s_in, s_out = c_in // SIDE_FACTOR, c_out // SIDE_FACTOR
        self.block = nn.ModuleList(
            [
                Snake1d(c_in),  # 0 main
                WNConvTranspose1d(c_in, c_out, kernel_size=2 * stride, stride=stride),  # 1 main
                nn.ELU(),  # 2 side, up
                CausalConvTranspose1d(s_in, s_out, kernel_size=2 * wm_stride, stride=wm_stride),  # 3 side, up
                ResidualUnit(c_out, dilation=1),  # 4 main
                ResidualUnit(c_out, dilation=3),  # 5 main
                ELUResidualUnit(s_out),  # 6 side, up
                ELUResidualUnit(s_out),  # 7 side, down
                ResidualUnit(c_out, dilation=9),  # 8 main
                nn.Identity(),  # 9 main, a no-op: the slot exists only so that 10 and 11 keep their key indices
                nn.ELU(),  # 10 side, down
                CausalConv1d(s_out, s_in, kernel_size=2 * wm_stride, stride=wm_stride),  # 11 side, down
            ]
        )

    def forward(self, x: Tensor, should_stop: StopCheck | None = None) -> Tensor:
        """Main path, (B, c_in, L) -> (B, c_out, L * stride)."""
        return _run_layers([self.block[j] for j in (0, 1, 4, 5, 8, 9)], x, should_stop)

    def side_down(self, h: Tensor) -> Tensor:
        """Watermark side path towards the message: (B, c_out/3, L) -> (B, c_in/3, L / wm_stride)."""
        return self.block[11](self.block[10](self.block[7](h)))

    def side_up(self, h: Tensor) -> Tensor:
        """Watermark side path back to the waveform: (B, c_in/3, L) -> (B, c_out/3, L * wm_stride)."""
        return self.block[6](self.block[3](self.block[2](h)))


class LSTMBlock(nn.Module):
    """Unidirectional multi-layer LSTM over time with a skip connection, on (B, H, n) tensors."""

    single_thread = True  # False runs on all of torch's threads, as before #20 (the benchmark's "before" path)

    def __init__(self, hidden: int, num_layers: int = WM_LSTM_LAYERS):
        super().__init__()
        self.lstm = nn.LSTM(hidden, hidden, num_layers)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(2, 0, 1)  # (n, B, H)
        if self.single_thread and x.device.type == "cpu" and not torch.is_grad_enabled():
            # On a CPU each of the n steps is a (B, H) x (H, 4H) product too small to share: every step of a
            # multi-threaded run waits at a barrier for the slowest thread, which on a busy machine cost 15x
            # the single-threaded time (#20). Same kernels, bit-identical output.
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                y, _ = self.lstm(x)  # zero initial states
            finally:
                torch.set_num_threads(threads)
        else:
            y, _ = self.lstm(x)
        return (y + x).permute(1, 2, 0)  # (B, H, n)


class MsgProcessor(nn.Module):
    """Adds the message: bit k with value b selects embedding row 2k + b; the K rows are summed over time."""

    def __init__(self, nbits: int, hidden: int):
        super().__init__()
        self.nbits = nbits
        self.msg_processor = nn.Embedding(2 * nbits, hidden)  # key `msg_processor.msg_processor.weight`

    def forward(self, h: Tensor, message: Tensor) -> Tensor:
        idx = 2 * torch.arange(self.nbits, device=h.device) + message.long()  # (B, K)
        emb = self.msg_processor(idx).sum(dim=1)  # (B, M)
        return h + emb.unsqueeze(-1)  # (B, M, n)


class WatermarkEncoder(nn.Module):
    """`pre`: the waveform head (Snake, WN conv to one channel, tanh) then a causal conv into the side path;
    `post`: after the side path has come down to H channels at n steps, LSTM, ELU, conv to M channels."""

    def __init__(self, c_main: int, hidden: int, wm_channels: int, d_out: int):
        super().__init__()
        self.pre = nn.Sequential(
            Snake1d(c_main),
            WNConv1d(c_main, 1, kernel_size=7),
            nn.Tanh(),
            CausalConv1d(1, wm_channels, kernel_size=7),
        )
        self.post = nn.Sequential(LSTMBlock(hidden), nn.ELU(), CausalConv1d(hidden, d_out, kernel_size=7))

    def head(self, x: Tensor) -> Tensor:
        """(B, c_main, N) -> (B, 1, N): the un-watermarked waveform."""
        return self.pre[2](self.pre[1](self.pre[0](x)))


class WatermarkDecoder(nn.Module):
    """`pre`: conv M -> H and LSTM after the message; `post`: ELU and a causal conv to one channel."""

    def __init__(self, hidden: int, wm_channels: int, d_in: int):
        super().__init__()
        self.pre = nn.Sequential(CausalConv1d(d_in, hidden, kernel_size=7), LSTMBlock(hidden))
        self.post = nn.Sequential(nn.ELU(), CausalConv1d(wm_channels, 1, kernel_size=7))


class Watermarker(nn.Module):
    """The decoder's last stage: waveform = head(x) + alpha * watermark(head(x), message).

    The watermark runs down through the decoder blocks' side layers in reverse block order (to n steps, H
    channels), takes the message, and comes back up through them in forward order.
    """

    def __init__(self, c_main: int, hidden: int, wm_channels: int, d_wm_out: int, nbits: int):
        super().__init__()
        self.alpha = wm_channels / d_wm_out  # "linear" blending; 0.25 for every derived size
        self.encoder_block = WatermarkEncoder(c_main, hidden, wm_channels, d_wm_out)
        self.msg_processor = MsgProcessor(nbits, d_wm_out)
        self.decoder_block = WatermarkDecoder(hidden, wm_channels, d_wm_out)

    def forward(
        self, x: Tensor, blocks: list[DecoderBlock], message: Tensor, should_stop: StopCheck | None = None
    ) -> Tensor:
        a = self.encoder_block.head(x)  # (B, 1, N)
        h = self.encoder_block.pre[3](a)  # (B, W, N)
        for block in reversed(blocks):
            _stop_point(should_stop)
            h = block.side_down(h)  # ends (B, H, n)
        h = self.encoder_block.post(h)  # (B, M, n)
        h = self.msg_processor(h, message)  # (B, M, n)
        h = self.decoder_block.pre(h)  # (B, H, n)
        for block in blocks:
            _stop_point(should_stop)
            h = block.side_up(h)  # ends (B, W, N)
        _stop_point(should_stop)
        h = self.decoder_block.post(h)  # (B, 1, N)
        return a + self.alpha * h


class Decoder(nn.Module):
    """(B, Z, T) latent -> (B, 1, N) watermarked waveform, N = T * prod(rates)."""

    def __init__(self, latent_dim: int, d: int, rates: list[int], nbits: int = NBITS):
        super().__init__()
        layers: list[nn.Module] = [WNConv1d(latent_dim, d, kernel_size=7)]
        c = d
        for stride, wm_stride in zip(rates, WM_RATES):
            layers.append(DecoderBlock(c, c // 2, stride, wm_stride))
            c //= 2
        self.model = nn.Sequential(*layers)
        # dacvae hard-codes 512 / 32 / 128, which fit only d = 1536; derived so they fit any width.
        hidden, wm_channels = d // SIDE_FACTOR, d // 48
        self.wm_model = Watermarker(c, hidden, wm_channels, 4 * wm_channels, nbits)

    def forward(self, z: Tensor, message: Tensor, should_stop: StopCheck | None = None) -> Tensor:
        _stop_point(should_stop)
        x = self.model[0](z)
        for block in list(self.model)[1:]:
            x = block(x, should_stop)  # ends (B, D / 16, N)
        _stop_point(should_stop)
        return self.wm_model(x, list(self.model)[1:], message, should_stop)


def _check_config(config: DACVAEConfig) -> None:
    """Sizes the watermark's fixed strides and channel splits need (the official code crashes instead)."""
    if len(config.decoder_rates) != len(WM_RATES):
        raise ConfigError(
            f"audio_codec.decoder_rates has {len(config.decoder_rates)} strides but the watermark side path "
            f"needs exactly {len(WM_RATES)} decoder blocks (strides {list(WM_RATES)})"
        )
    wm_hop = math.prod(WM_RATES)
    if math.prod(config.decoder_rates) % wm_hop:
        raise ConfigError(
            f"prod(audio_codec.decoder_rates) = {math.prod(config.decoder_rates)} must be a multiple of the "
            f"watermark's {wm_hop} samples per step"
        )
    if config.decoder_dim < 96:
        raise ConfigError(f"audio_codec.decoder_dim is {config.decoder_dim}; the watermark needs at least 96")


# ----------------------------------------------------------------------------------------------------------
# The codec


class DACVAE(nn.Module):
    """The SAM-Audio codec: `codec(wav)` encodes to latent means, `codec.decode(latent)` decodes watermarked.

        codec = DACVAE(DACVAEConfig())
        latent = codec(wav)             # (B, 1, L) -> (B, C, ceil(L / hop))
        audio = codec.decode(latent)    # (B, C, T) -> (B, 1, T * hop)
    """

    def __init__(self, config: DACVAEConfig, decoder: bool = True):
        super().__init__()
        if decoder:
            _check_config(config)
        self.config = config
        self.hop_length = config.hop_length
        self.sample_rate = config.sample_rate
        self.codebook_dim = config.codebook_dim
        self.nbits = NBITS
        self.encoder = Encoder(config.encoder_dim, config.encoder_rates, config.latent_dim)
        self.quantizer = VAEBottleneck(config.latent_dim, config.codebook_dim)
        # encoder-only users (the judge) build none: their checkpoints hold no decoder keys
        self.decoder = Decoder(config.latent_dim, config.decoder_dim, config.decoder_rates, NBITS) if decoder else None

    def set_inference_shortcuts(self, *, fold_weight_norm: bool = True, single_thread_lstm: bool = True) -> None:
        """Switch the output-preserving inference shortcuts of #20 (both on by default): weight norm folded once
        instead of per call, the watermark LSTM on one thread. Off only to measure what they save."""
        for m in self.modules():
            if isinstance(m, _WeightNormed):
                m.fold_weight_norm = fold_weight_norm
            elif isinstance(m, LSTMBlock):
                m.single_thread = single_thread_lstm

    @property
    def folded_weight_bytes(self) -> int:
        """Memory held by folded weight-norm weights (about the codec's size in its dtype once it has run)."""
        return sum(
            m._folded[1].numel() * m._folded[1].element_size()
            for m in self.modules()
            if isinstance(m, _WeightNormed) and m._folded is not None
        )

    def _check_wav(self, wav: Tensor) -> None:
        if not isinstance(wav, Tensor) or wav.dim() != 3 or wav.shape[1] != 1:
            shape = tuple(wav.shape) if isinstance(wav, Tensor) else type(wav).__name__
            raise InvalidAudioError(
                f"the codec takes mono audio shaped (batch, 1, samples), got {shape}; "
                "mix down to one channel and add the channel axis (wav[:, None, :])"
            )
        if not wav.is_floating_point():
            raise InvalidAudioError(f"the codec takes float audio in [-1, 1], got dtype {wav.dtype}")
        B, _, L = wav.shape
        if B == 0 or L == 0:
            raise InvalidAudioError(f"the codec got empty audio, shape {tuple(wav.shape)}")
        pad = -L % self.hop_length
        if pad >= L:  # reflect padding cannot reflect more samples than there are
            raise InvalidAudioError(
                f"audio of {L} samples is too short for the codec: it needs more than {self.hop_length // 2} "
                f"samples ({self.hop_length // 2 / self.sample_rate * 1000:.0f} ms at {self.sample_rate} Hz); "
                "pad it with silence"
            )
        if not torch.isfinite(wav).all():
            raise InvalidAudioError("the audio holds NaN or infinite samples; replace them before encoding")

    @torch.no_grad()
    def forward(self, wav: Tensor, should_stop: StopCheck | None = None) -> Tensor:
        """(B, 1, L) waveform at `sample_rate` -> (B, C, T) latent means, T = ceil(L / hop).

        `should_stop` is asked between layers; once it is true the call raises `StoppedError`."""
        self._check_wav(wav)
        pad = -wav.shape[-1] % self.hop_length
        if pad:
            wav = F.pad(wav, (0, pad), mode="reflect")  # (B, 1, N)
        z = self.encoder(wav, should_stop)  # (B, Z, T)
        return self.quantizer.mean(z)  # (B, C, T)

    def decode(
        self, latent: Tensor, message: Tensor | None = None, should_stop: StopCheck | None = None
    ) -> Tensor:
        """(B, C, T) latent -> (B, 1, T * hop) waveform carrying `message` (B, 16) of 0/1 floats.

        Without a message a fresh random one is drawn per row from the CPU default generator, then moved to
        the latent's device, as the official decode does (so seeding the CPU generator replays it).
        Gradients are not disabled here. `should_stop` is asked between layers; once it is true the call raises
        `StoppedError`.
        """
        if self.decoder is None:
            raise InvalidRequestError("this codec was built without its decoder (DACVAE(config, decoder=False))")
        if not isinstance(latent, Tensor) or latent.dim() != 3 or latent.shape[1] != self.codebook_dim:
            shape = tuple(latent.shape) if isinstance(latent, Tensor) else type(latent).__name__
            raise InvalidRequestError(
                f"decode takes latents shaped (batch, {self.codebook_dim}, frames), got {shape}"
            )
        B, _, T = latent.shape
        if B == 0 or T == 0:
            raise InvalidRequestError(f"decode got an empty latent, shape {tuple(latent.shape)}")
        if message is None:
            message = torch.randint(0, 2, (B, self.nbits), dtype=torch.float32).to(latent.device)
        elif not isinstance(message, Tensor) or tuple(message.shape) != (B, self.nbits):
            shape = tuple(message.shape) if isinstance(message, Tensor) else type(message).__name__
            raise InvalidRequestError(
                f"the watermark message must be shaped ({B}, {self.nbits}): one row of {self.nbits} bits per "
                f"latent row; got {shape}"
            )
        elif not ((message == 0) | (message == 1)).all():
            raise InvalidRequestError("the watermark message must hold only 0 and 1")
        z = self.quantizer.out_proj(latent)  # (B, Z, T)
        return self.decoder(z, message.to(latent.device), should_stop)  # (B, 1, T * hop)

    def feature_idx_to_wav_idx(self, feature_idx: int | Tensor, sample_rate: int | None = None) -> int | Tensor:
        """Latent frame index -> sample index at `sample_rate` (default the codec's), truncated."""
        orig = sample_rate if sample_rate is not None else self.sample_rate
        wav_idx = feature_idx * self.hop_length * (orig / self.sample_rate)
        return wav_idx.int() if isinstance(wav_idx, Tensor) else int(wav_idx)

    def wav_idx_to_feature_idx(self, wav_idx: int | Tensor, sample_rate: int | None = None) -> int | Tensor:
        """Sample index at `sample_rate` (default the codec's) -> latent frames covering it, rounded up."""
        orig = sample_rate if sample_rate is not None else self.sample_rate
        if isinstance(wav_idx, Tensor):
            return torch.ceil(torch.ceil(self.sample_rate * wav_idx / orig) / self.hop_length).int()
        return math.ceil(math.ceil(self.sample_rate * wav_idx / orig) / self.hop_length)
