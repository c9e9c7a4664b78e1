"""The thin samaudio client: separate audio on a samaudio server from any machine, without torch.

    from samaudio_client import Client
    with Client("gpu-box:50051") as client:
        stems = client.separate(audio, 44100, "snare drum")   # audio: (frames, channels) numpy
        stems.target, stems.residual

The `samaudio` command line (`samaudio_client.cli`) is built on the same client.
"""

from samaudio_client.client import (
    AsyncClient,
    Client,
    ModelInfo,
    SeparationOptions,
    ServerInfo,
    Settings,
    StemBlock,
    Stems,
    Summary,
    Video,
    VideoError,
)
from samaudio_client.errors import SamaudioError, ServerError
from samaudio_client.files import AudioFileError
from samaudio_client.spans import Span, SpanError, parse_span

__all__ = [
    "AsyncClient",
    "AudioFileError",
    "Client",
    "ModelInfo",
    "SamaudioError",
    "SeparationOptions",
    "ServerError",
    "ServerInfo",
    "Settings",
    "Span",
    "SpanError",
    "StemBlock",
    "Stems",
    "Summary",
    "Video",
    "VideoError",
    "parse_span",
]
