"""The training loop: the codec stage, then the flow stage, then the exported model; resumable throughout.

    python -m samaudio.train --preset samaudio-demo --out runs/demo

Stage "codec" trains the DACVAE autoencoder on clips of the synthetic data, from random weights or from the
band-limited MDCT codec (`codec_init.py`; the default, with no codec steps); its latents are then normalised
(folded into the bottleneck). Stage "flow" freezes codec and text encoder and trains the rest of SAMAudio with
the flow-matching objective on a pool of encoded examples that is partly renewed every step (encoding costs
more than a DiT step on a CPU). Every `checkpoint_every_s` the state goes to `checkpoint.pt`; a new run with
the same `--out` continues from it. The losses go to `losses.jsonl`; the end writes `model/` (from_pretrained).

Legend: P pool examples, B batch, T latent frames, C codec latent channels, L samples.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from samaudio.errors import ConfigError
from samaudio.model.config import SAMAudioConfig
from samaudio.model.model import SAMAudio
from samaudio.model.text_encoder import T5TextEncoder
from samaudio.train import data
from samaudio.train.codec_init import init_mdct_codec
from samaudio.train.codec_objective import CodecLoss, autoencode, normalize_latents
from samaudio.train.flow_objective import FlowBatch, flow_matching_loss

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOSSES = "losses.jsonl"
TRAIN_SEED = 7  # training examples come from rng([TRAIN_SEED, stage, step, i]); the held-out set uses another


@dataclass
class TrainConfig:
    codec_init: str = "mdct"  # "mdct": start from the band-limited MDCT codec (codec_init.py); "random"
    codec_steps: int = 0  # the MDCT codec already reconstructs the synthetic data (20-40 dB SI-SDR)
    codec_batch: int = 6
    codec_seconds: float = 0.48  # 12 latent frames: the codec's receptive field is far shorter
    codec_lr: float = 1e-3
    flow_steps: int = 1000
    flow_batch: int = 16
    flow_seconds: float = 2.0
    flow_lr: float = 5e-4
    normalize_examples: int = 32  # fresh mixtures whose latent statistics are folded into the codec
    normalize_seconds: float = 2.0
    pool_size: int = 192  # encoded examples the flow stage samples batches from
    pool_refresh: int = 1  # pool examples replaced by fresh ones each flow step
    warmup_steps: int = 30
    seed: int = 0  # initial weights and the frozen random text encoder
    checkpoint_every_s: float = 180.0
    log_every: int = 10


def build_model(config: SAMAudioConfig, seed: int) -> SAMAudio:
    """Random weights from `seed`, with a random (frozen) T5 and its character tokenizer: no download."""
    torch.manual_seed(seed)
    text_encoder = T5TextEncoder.random(config.text_encoder, seed=seed)
    return SAMAudio(config, text_encoder=text_encoder)


def _lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _frames_active(target: np.ndarray, hop: int) -> np.ndarray:
    """(L,) -> (T,) bool: latent frames where the target's RMS is above -60 dBFS."""
    T = math.ceil(len(target) / hop)
    padded = np.pad(target, (0, T * hop - len(target)))
    return np.sqrt((padded.reshape(T, hop) ** 2).mean(axis=1)) > 1e-3


class Trainer:
    """Holds the model, the optimiser of the current stage and the loss log; `run()` does what is left."""

    def __init__(self, config: SAMAudioConfig, out: str | Path, train: TrainConfig | None = None):
        self.config = config
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.train = train or TrainConfig()
        self.model = build_model(config, self.train.seed)
        if self.train.codec_init == "mdct":
            init_mdct_codec(self.model.audio_codec)
        elif self.train.codec_init != "random":
            raise ConfigError(f"codec_init is {self.train.codec_init!r}; use 'mdct' or 'random'")
        self.model.text_encoder.requires_grad_(False)
        self.stage, self.step, self.elapsed = "codec", 0, 0.0
        self._budget: int | None = None  # steps left to this run() call (None: no limit)
        self.optimizer = self._optimizer()
        if (self.out / CHECKPOINT).is_file():
            self._resume()

    # ------------------------------------------------------------------ state

    def _optimizer(self) -> torch.optim.Optimizer:
        if self.stage == "codec":
            params, lr = self.model.audio_codec.parameters(), self.train.codec_lr
        else:
            params = [p for n, p in self.model.named_parameters() if not n.startswith(("audio_codec.", "text_encoder."))]
            lr = self.train.flow_lr
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)

    def save(self) -> None:
        state = {
            "stage": self.stage,
            "step": self.step,
            "elapsed": self.elapsed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.config.to_dict(),
            "train": asdict(self.train),
        }
        tmp = self.out / (CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.out / CHECKPOINT)  # never a half-written checkpoint
        logger.info("checkpoint: stage %s step %d (%.0f s trained)", self.stage, self.step, self.elapsed)

    def _resume(self) -> None:
        state = torch.load(self.out / CHECKPOINT, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.stage, self.step, self.elapsed = state["stage"], state["step"], state["elapsed"]
        self.optimizer = self._optimizer()
        if self.stage != "done":
            self.optimizer.load_state_dict(state["optimizer"])
        logger.info("resumed: stage %s step %d (%.0f s trained)", self.stage, self.step, self.elapsed)

    def _log(self, **fields) -> None:
        with open(self.out / LOSSES, "a") as f:
            f.write(json.dumps({"stage": self.stage, "step": self.step, "elapsed_s": round(self.elapsed, 1), **fields}) + "\n")

    # ------------------------------------------------------------------ stages

    def run(self, max_steps: int | None = None) -> Path | None:
        """Train what is left and write `model/`, returning its folder; with `max_steps`, stop after that many
        steps of this call, save a checkpoint and return None (a later run continues)."""
        self._budget = max_steps
        if self.stage == "codec":
            self._train_codec()
        if self.stage == "normalize":
            self._normalize()
        if self.stage == "flow":
            self._train_flow()
        if self.stage != "done":
            return None
        return self.export()

    def _stopping(self) -> bool:
        """Count one step against this call's `max_steps`; True (after a checkpoint) once they are used."""
        if self._budget is None:
            return False
        self._budget -= 1
        if self._budget > 0:
            return False
        self.save()
        return True

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([TRAIN_SEED, *key])

    def _codec_batch(self, step: int) -> torch.Tensor:
        """(B, 1, L) clips: mixtures, targets or residuals of fresh examples, so single sounds are seen too."""
        clips = []
        for i in range(self.train.codec_batch):
            rng = self._rng(0, step, i)
            ex = data.make_example(rng, self.train.codec_seconds)
            clips.append([ex.mixture, ex.target if ex.present else ex.mixture, ex.residual][int(rng.integers(0, 3))])
        return torch.from_numpy(np.stack(clips))[:, None]  # (B, 1, L)

    def _train_codec(self) -> None:
        codec, loss_fn = self.model.audio_codec, CodecLoss(self.config.sample_rate)
        codec.train()
        last_save = time.monotonic()
        while self.step < self.train.codec_steps:
            if self._budget is not None and self._budget <= 0:
                return
            start = time.monotonic()
            for group in self.optimizer.param_groups:
                group["lr"] = _lr(self.step, self.train.codec_steps, self.train.codec_lr, self.train.warmup_steps)
            wav = self._codec_batch(self.step)
            losses = loss_fn(autoencode(codec, wav), wav)
            self.optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(codec.parameters(), 1.0)
            self.optimizer.step()
            self.step += 1
            self.elapsed += time.monotonic() - start
            if self.step % self.train.log_every == 0:
                self._log(**{k: round(float(v.detach()), 5) for k, v in losses.items()})
            if time.monotonic() - last_save > self.train.checkpoint_every_s:
                self.save()
                last_save = time.monotonic()
            if self._stopping():
                return
        codec.eval()
        self.stage, self.step = "normalize", 0
        self.save()

    def _normalize(self) -> None:
        """Fold per-channel latent statistics of fresh mixtures into the codec (see normalize_latents)."""
        start = time.monotonic()
        n, seconds = self.train.normalize_examples, self.train.normalize_seconds
        wav = torch.from_numpy(np.stack([data.make_example(self._rng(1, 0, i), seconds).mixture for i in range(n)]))
        with torch.no_grad():
            latents = self.model.audio_codec(wav[:, None])  # (n, C, T)
        mean, std = normalize_latents(self.model.audio_codec, latents)
        logger.info("latent mean |%.3f|, std %.3f..%.3f folded into the codec", mean.abs().mean(), std.min(), std.max())
        self.elapsed += time.monotonic() - start
        self.stage, self.step = "flow", 0
        self.optimizer = self._optimizer()
        self.save()

    @torch.no_grad()
    def _encode_examples(self, key: int, count: int) -> dict[str, torch.Tensor]:
        """`count` fresh examples encoded: latents (count, T, C) of mixture, target, residual; prompt; activity."""
        codec, hop = self.model.audio_codec, self.config.hop_length
        examples = [data.make_example(self._rng(2, key, i), self.train.flow_seconds) for i in range(count)]
        wav = torch.from_numpy(np.stack([[e.mixture, e.target, e.residual] for e in examples]))  # (count, 3, L)
        wav = wav.reshape(3 * count, 1, -1)
        # in groups: one call on the whole pool would hold gigabytes of 48 kHz activations
        latents = torch.cat([codec(wav[i : i + 24]) for i in range(0, len(wav), 24)]).transpose(1, 2)  # (3 count, T, C)
        latents = latents.reshape(count, 3, *latents.shape[1:])
        return {
            "mixture": latents[:, 0],
            "target": latents[:, 1],
            "residual": latents[:, 2],
            "prompt": torch.tensor([data.DESCRIPTIONS.index(e.description) for e in examples]),
            "active": torch.from_numpy(np.stack([_frames_active(e.target, hop) for e in examples])),
        }

    def _train_flow(self) -> None:
        model, P = self.model, self.train.pool_size
        model.audio_codec.eval()
        with torch.no_grad():
            text, text_mask = model.encode_text(data.DESCRIPTIONS)  # (K, S, Dt), (K, S): fixed for the stage
        # the pool is rebuilt on resume: its contents are a function of the step
        pool = self._encode_examples(self.step * 1000 + 999, P)
        generator = torch.Generator().manual_seed(self.train.seed * 100003 + self.step)
        model.train()
        model.text_encoder.eval()
        model.audio_codec.eval()
        last_save = time.monotonic()
        while self.step < self.train.flow_steps:
            if self._budget is not None and self._budget <= 0:
                return
            start = time.monotonic()
            for group in self.optimizer.param_groups:
                group["lr"] = _lr(self.step, self.train.flow_steps, self.train.flow_lr, self.train.warmup_steps)
            fresh = self._encode_examples(self.step, self.train.pool_refresh)
            slots = torch.randperm(P, generator=generator)[: self.train.pool_refresh]
            for k in pool:
                pool[k][slots] = fresh[k]
            idx = torch.randperm(P, generator=generator)[: self.train.flow_batch]
            prompt = pool["prompt"][idx]
            batch = FlowBatch(
                mixture=pool["mixture"][idx],
                target=pool["target"][idx],
                residual=pool["residual"][idx],
                text=text[prompt],
                text_mask=text_mask[prompt],
                active=pool["active"][idx],
            )
            loss = flow_matching_loss(model, batch, generator)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], 1.0)
            self.optimizer.step()
            self.step += 1
            self.elapsed += time.monotonic() - start
            if self.step % self.train.log_every == 0:
                self._log(loss=round(float(loss.detach()), 5))
            if time.monotonic() - last_save > self.train.checkpoint_every_s:
                self.save()
                last_save = time.monotonic()
            if self._stopping():
                return
        model.eval()
        self.stage, self.step = "done", 0
        self.save()

    def export(self) -> Path:
        """`model/` (config.json, model.safetensors, t5/) and `loss.png` beside it."""
        self.model.eval()
        folder = self.model.save_pretrained(self.out / "model")
        try:
            from samaudio.train.report import plot_losses

            plot_losses(self.out / LOSSES, folder / "loss.png")
        except ImportError:
            logger.warning("matplotlib is not installed: no loss plot (pip install '.[train]')")
        return folder
