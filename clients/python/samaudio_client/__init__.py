"""The thin samaudio client: separate audio on a samaudio server from any machine, without torch.

    from samaudio_client import Client
    with Client("gpu-box:50051") as client:
        stems = client.separate(audio, 44100, "snare drum")   # audio: (frames, channels) numpy
        stems.target, stems.residual

The `samaudio` command line (`samaudio_client.cli`) is built on the same client.
"""

from importlib import import_module

# Names are imported on first use, so that importing the command line (`samaudio_client.cli`) does not import
# grpc before it has set grpc's log verbosity.
_LAZY = {
    **dict.fromkeys(
        [
            "AsyncClient",
            "Client",
            "ModelInfo",
            "SeparationOptions",
            "ServerInfo",
            "SeparatedBlock",
            "Settings",
            "Stems",
            "Summary",
            "Video",
            "VideoError",
        ],
        "samaudio_client.client",
    ),
    "CallError": "samaudio_client.errors",
    "ClientError": "samaudio_client.errors",
    # earlier names of ClientError, CallError and SeparatedBlock, importable but no longer listed in __all__
    "SamaudioError": "samaudio_client.errors",
    "ServerError": "samaudio_client.errors",
    "StemBlock": "samaudio_client.client",
    "AudioFileError": "samaudio_client.files",
    "Span": "samaudio_client.spans",
    "SpanError": "samaudio_client.spans",
    "parse_span": "samaudio_client.spans",
}

__all__ = [
    "AsyncClient",
    "AudioFileError",
    "CallError",
    "Client",
    "ClientError",
    "ModelInfo",
    "SeparatedBlock",
    "SeparationOptions",
    "ServerInfo",
    "Settings",
    "Span",
    "SpanError",
    "Stems",
    "Summary",
    "Video",
    "VideoError",
    "parse_span",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'samaudio_client' has no attribute {name!r}")
