"""samaudio: SAM-Audio sound separation, faithful to the official model, streamed to any client.

`from samaudio import SAMAudio, SAMAudioProcessor` is the official API. Names are imported lazily so that
the thin client, which installs without torch, can import the generated protocol modules in `samaudio.v1`.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "SAMAudio": "samaudio.model.model",
    "SeparationResult": "samaudio.model.model",
    "SAMAudioConfig": "samaudio.model.config",
    "SAMAudioProcessor": "samaudio.processor",
    "Batch": "samaudio.processor",
    "SAMAudioJudgeModel": "samaudio.model.judge",
    "SAMAudioJudgeProcessor": "samaudio.model.judge",
    "PEAudioFrame": "samaudio.model.span_predictor",
    "StreamingSeparator": "samaudio.streaming",
    "SeparatedBlock": "samaudio.streaming",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'samaudio' has no attribute {name!r}")
