from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SampleFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLE_FORMAT_UNSPECIFIED: _ClassVar[SampleFormat]
    SAMPLE_FORMAT_FLOAT32_LE: _ClassVar[SampleFormat]
    SAMPLE_FORMAT_INT16_LE: _ClassVar[SampleFormat]

class AnchorSign(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANCHOR_SIGN_UNSPECIFIED: _ClassVar[AnchorSign]
    ANCHOR_SIGN_POSITIVE: _ClassVar[AnchorSign]
    ANCHOR_SIGN_NEGATIVE: _ClassVar[AnchorSign]

class Stem(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEM_UNSPECIFIED: _ClassVar[Stem]
    STEM_TARGET: _ClassVar[Stem]
    STEM_RESIDUAL: _ClassVar[Stem]
SAMPLE_FORMAT_UNSPECIFIED: SampleFormat
SAMPLE_FORMAT_FLOAT32_LE: SampleFormat
SAMPLE_FORMAT_INT16_LE: SampleFormat
ANCHOR_SIGN_UNSPECIFIED: AnchorSign
ANCHOR_SIGN_POSITIVE: AnchorSign
ANCHOR_SIGN_NEGATIVE: AnchorSign
STEM_UNSPECIFIED: Stem
STEM_TARGET: Stem
STEM_RESIDUAL: Stem

class Anchor(_message.Message):
    __slots__ = ("sign", "start_seconds", "end_seconds")
    SIGN_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    sign: AnchorSign
    start_seconds: float
    end_seconds: float
    def __init__(self, sign: _Optional[_Union[AnchorSign, str]] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ...) -> None: ...

class Prompt(_message.Message):
    __slots__ = ("description", "anchors", "seed")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ANCHORS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    description: str
    anchors: _containers.RepeatedCompositeFieldContainer[Anchor]
    seed: int
    def __init__(self, description: _Optional[str] = ..., anchors: _Optional[_Iterable[_Union[Anchor, _Mapping]]] = ..., seed: _Optional[int] = ...) -> None: ...

class MaskedVideo(_message.Message):
    __slots__ = ("width_pixels", "height_pixels", "frames_per_second", "rgb_frames", "encoded_file", "masks", "frame_count")
    WIDTH_PIXELS_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_PIXELS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    RGB_FRAMES_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FILE_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    width_pixels: int
    height_pixels: int
    frames_per_second: float
    rgb_frames: bytes
    encoded_file: bytes
    masks: bytes
    frame_count: int
    def __init__(self, width_pixels: _Optional[int] = ..., height_pixels: _Optional[int] = ..., frames_per_second: _Optional[float] = ..., rgb_frames: _Optional[bytes] = ..., encoded_file: _Optional[bytes] = ..., masks: _Optional[bytes] = ..., frame_count: _Optional[int] = ...) -> None: ...

class SeparationConfig(_message.Message):
    __slots__ = ("model", "description", "anchors", "sample_rate_hertz", "channel_count", "sample_format", "chunk_seconds", "overlap_seconds", "seed", "solver_steps", "stems", "masked_video", "candidates", "predict_spans", "span_gate", "span_threshold", "prompts", "null_sum", "total_frames")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ANCHORS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SOLVER_STEPS_FIELD_NUMBER: _ClassVar[int]
    STEMS_FIELD_NUMBER: _ClassVar[int]
    MASKED_VIDEO_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PREDICT_SPANS_FIELD_NUMBER: _ClassVar[int]
    SPAN_GATE_FIELD_NUMBER: _ClassVar[int]
    SPAN_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    NULL_SUM_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    model: str
    description: str
    anchors: _containers.RepeatedCompositeFieldContainer[Anchor]
    sample_rate_hertz: int
    channel_count: int
    sample_format: SampleFormat
    chunk_seconds: float
    overlap_seconds: float
    seed: int
    solver_steps: int
    stems: _containers.RepeatedScalarFieldContainer[Stem]
    masked_video: MaskedVideo
    candidates: int
    predict_spans: bool
    span_gate: bool
    span_threshold: float
    prompts: _containers.RepeatedCompositeFieldContainer[Prompt]
    null_sum: bool
    total_frames: int
    def __init__(self, model: _Optional[str] = ..., description: _Optional[str] = ..., anchors: _Optional[_Iterable[_Union[Anchor, _Mapping]]] = ..., sample_rate_hertz: _Optional[int] = ..., channel_count: _Optional[int] = ..., sample_format: _Optional[_Union[SampleFormat, str]] = ..., chunk_seconds: _Optional[float] = ..., overlap_seconds: _Optional[float] = ..., seed: _Optional[int] = ..., solver_steps: _Optional[int] = ..., stems: _Optional[_Iterable[_Union[Stem, str]]] = ..., masked_video: _Optional[_Union[MaskedVideo, _Mapping]] = ..., candidates: _Optional[int] = ..., predict_spans: _Optional[bool] = ..., span_gate: _Optional[bool] = ..., span_threshold: _Optional[float] = ..., prompts: _Optional[_Iterable[_Union[Prompt, _Mapping]]] = ..., null_sum: _Optional[bool] = ..., total_frames: _Optional[int] = ...) -> None: ...

class SeparateRequest(_message.Message):
    __slots__ = ("config", "audio_content")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CONTENT_FIELD_NUMBER: _ClassVar[int]
    config: SeparationConfig
    audio_content: bytes
    def __init__(self, config: _Optional[_Union[SeparationConfig, _Mapping]] = ..., audio_content: _Optional[bytes] = ...) -> None: ...

class SeparationAccepted(_message.Message):
    __slots__ = ("effective_config", "model_sample_rate_hertz")
    EFFECTIVE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    MODEL_SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    effective_config: SeparationConfig
    model_sample_rate_hertz: int
    def __init__(self, effective_config: _Optional[_Union[SeparationConfig, _Mapping]] = ..., model_sample_rate_hertz: _Optional[int] = ...) -> None: ...

class StemBlock(_message.Message):
    __slots__ = ("start_frame", "frame_count", "target_audio", "residual_audio", "prompt_target_audio")
    START_FRAME_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    TARGET_AUDIO_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_AUDIO_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TARGET_AUDIO_FIELD_NUMBER: _ClassVar[int]
    start_frame: int
    frame_count: int
    target_audio: bytes
    residual_audio: bytes
    prompt_target_audio: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, start_frame: _Optional[int] = ..., frame_count: _Optional[int] = ..., target_audio: _Optional[bytes] = ..., residual_audio: _Optional[bytes] = ..., prompt_target_audio: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SeparationProgress(_message.Message):
    __slots__ = ("frames_done", "frames_known", "model_evaluations_done", "model_evaluations_planned")
    FRAMES_DONE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_KNOWN_FIELD_NUMBER: _ClassVar[int]
    MODEL_EVALUATIONS_DONE_FIELD_NUMBER: _ClassVar[int]
    MODEL_EVALUATIONS_PLANNED_FIELD_NUMBER: _ClassVar[int]
    frames_done: int
    frames_known: int
    model_evaluations_done: int
    model_evaluations_planned: int
    def __init__(self, frames_done: _Optional[int] = ..., frames_known: _Optional[int] = ..., model_evaluations_done: _Optional[int] = ..., model_evaluations_planned: _Optional[int] = ...) -> None: ...

class SeparationSummary(_message.Message):
    __slots__ = ("frames_in", "frames_out", "windows", "model_evaluations", "elapsed_seconds", "candidates_evaluated", "chosen_scores", "windows_gated")
    FRAMES_IN_FIELD_NUMBER: _ClassVar[int]
    FRAMES_OUT_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    MODEL_EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_EVALUATED_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_SCORES_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_GATED_FIELD_NUMBER: _ClassVar[int]
    frames_in: int
    frames_out: int
    windows: int
    model_evaluations: int
    elapsed_seconds: float
    candidates_evaluated: int
    chosen_scores: _containers.RepeatedScalarFieldContainer[float]
    windows_gated: int
    def __init__(self, frames_in: _Optional[int] = ..., frames_out: _Optional[int] = ..., windows: _Optional[int] = ..., model_evaluations: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ..., candidates_evaluated: _Optional[int] = ..., chosen_scores: _Optional[_Iterable[float]] = ..., windows_gated: _Optional[int] = ...) -> None: ...

class SeparateResponse(_message.Message):
    __slots__ = ("accepted", "stem_block", "progress", "summary")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    STEM_BLOCK_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    accepted: SeparationAccepted
    stem_block: StemBlock
    progress: SeparationProgress
    summary: SeparationSummary
    def __init__(self, accepted: _Optional[_Union[SeparationAccepted, _Mapping]] = ..., stem_block: _Optional[_Union[StemBlock, _Mapping]] = ..., progress: _Optional[_Union[SeparationProgress, _Mapping]] = ..., summary: _Optional[_Union[SeparationSummary, _Mapping]] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "selected_by_default", "sample_rate_hertz", "default_chunk_seconds", "default_overlap_seconds", "default_solver_steps", "masked_video_supported", "text_ranker", "visual_ranker", "span_predictor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SELECTED_BY_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_CHUNK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_OVERLAP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SOLVER_STEPS_FIELD_NUMBER: _ClassVar[int]
    MASKED_VIDEO_SUPPORTED_FIELD_NUMBER: _ClassVar[int]
    TEXT_RANKER_FIELD_NUMBER: _ClassVar[int]
    VISUAL_RANKER_FIELD_NUMBER: _ClassVar[int]
    SPAN_PREDICTOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    selected_by_default: bool
    sample_rate_hertz: int
    default_chunk_seconds: float
    default_overlap_seconds: float
    default_solver_steps: int
    masked_video_supported: bool
    text_ranker: str
    visual_ranker: str
    span_predictor: str
    def __init__(self, name: _Optional[str] = ..., selected_by_default: _Optional[bool] = ..., sample_rate_hertz: _Optional[int] = ..., default_chunk_seconds: _Optional[float] = ..., default_overlap_seconds: _Optional[float] = ..., default_solver_steps: _Optional[int] = ..., masked_video_supported: _Optional[bool] = ..., text_ranker: _Optional[str] = ..., visual_ranker: _Optional[str] = ..., span_predictor: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_streams", "max_stream_seconds", "min_sample_rate_hertz", "max_sample_rate_hertz", "max_channel_count", "max_request_bytes", "max_response_bytes", "max_solver_steps", "max_video_bytes", "max_chunk_seconds", "min_stride_seconds", "max_frame_work", "max_description_bytes", "audio_timeout_seconds", "sample_rate_divisor_hertz", "max_candidates")
    MAX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    MAX_CHANNEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_RESPONSE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SOLVER_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_VIDEO_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_STRIDE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_WORK_FIELD_NUMBER: _ClassVar[int]
    MAX_DESCRIPTION_BYTES_FIELD_NUMBER: _ClassVar[int]
    AUDIO_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_DIVISOR_HERTZ_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    max_streams: int
    max_stream_seconds: float
    min_sample_rate_hertz: int
    max_sample_rate_hertz: int
    max_channel_count: int
    max_request_bytes: int
    max_response_bytes: int
    max_solver_steps: int
    max_video_bytes: int
    max_chunk_seconds: float
    min_stride_seconds: float
    max_frame_work: float
    max_description_bytes: int
    audio_timeout_seconds: float
    sample_rate_divisor_hertz: int
    max_candidates: int
    def __init__(self, max_streams: _Optional[int] = ..., max_stream_seconds: _Optional[float] = ..., min_sample_rate_hertz: _Optional[int] = ..., max_sample_rate_hertz: _Optional[int] = ..., max_channel_count: _Optional[int] = ..., max_request_bytes: _Optional[int] = ..., max_response_bytes: _Optional[int] = ..., max_solver_steps: _Optional[int] = ..., max_video_bytes: _Optional[int] = ..., max_chunk_seconds: _Optional[float] = ..., min_stride_seconds: _Optional[float] = ..., max_frame_work: _Optional[float] = ..., max_description_bytes: _Optional[int] = ..., audio_timeout_seconds: _Optional[float] = ..., sample_rate_divisor_hertz: _Optional[int] = ..., max_candidates: _Optional[int] = ...) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("models", "sample_formats", "limits", "server_version", "authentication_required")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FORMATS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATION_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    sample_formats: _containers.RepeatedScalarFieldContainer[SampleFormat]
    limits: Limits
    server_version: str
    authentication_required: bool
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., sample_formats: _Optional[_Iterable[_Union[SampleFormat, str]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., server_version: _Optional[str] = ..., authentication_required: _Optional[bool] = ...) -> None: ...
