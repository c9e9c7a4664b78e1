"""`samaudio`: separate files on a samaudio server (or in-process), describe a server, run the demo.

    samaudio separate FILE... --text "snare drum" [--text "hi-hat" ...] [--null-sum] [--span +1.2:3.4]
                     [--start S --duration D] [--subtype PCM_24]
                     [--video CLIP.mp4 [--video-masks MASKS.npy]]
                     [--server HOST:PORT | --local [--model NAME_OR_FOLDER]] [--out-dir DIR] [--format wav|flac]
    samaudio info [--server HOST:PORT] [--json]
    samaudio models [--json]
    samaudio demo [--out-dir DIR]
    samaudio osc --reply HOST:PORT [--listen HOST:PORT] [--server HOST:PORT]   (see samaudio_client.osc)

`separate` writes `<name>.target.<ext>` and `<name>.residual.<ext>` with the input's sample rate, channels,
sample format (`--subtype` to choose another; integer formats clip beyond full scale, with a warning) and
exact length (the region's with --start/--duration), prints their paths on stdout (target, then residual, per
file), and shows progress on stderr. `--video` sends a visual prompt (the clip, taken to start at the
separated region's start) to a server started with `--vision`. Exit codes: 0 done, 2 usage (bad arguments,
unreadable input, a span that does not fit), 3 the server or the engine failed (the message is on stderr),
130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# gRPC core logs a failed connection (a TLS handshake, say) on stderr in its own format, repeating what this
# command's error message says in a form users cannot act on. Its verbosity is read when grpc is imported, so
# this comes before the imports below; GRPC_VERBOSITY=INFO in the environment brings the lines back.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from samaudio import __version__  # noqa: E402 - after the verbosity
from samaudio.errors import SAMAudioError  # torch-free: the library's errors import nothing
from samaudio.install import SERVER_EXTRA, missing_server_modules  # torch-free too
from samaudio_client.errors import ClientError
from samaudio_client.files import FORMATS, AudioFileError, Region, StemWriter, output_subtype, read_blocks, stem_paths
from samaudio_client.options import (
    add_connection,
    add_quality_settings,
    add_stream_settings,
    positive,
    seconds,
    stream_settings,
)
from samaudio_client.spans import Span, SpanError, parse_span, to_region

if TYPE_CHECKING:
    from samaudio_client.client import ServerInfo, Video

log = logging.getLogger("samaudio")

EXIT_OK, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 3, 130, 143
EXIT_CODES = (
    "exit codes: 0 done; 2 usage (bad arguments, an unreadable input, a span that does not fit); 3 the server or "
    "the engine failed (the gRPC code and the message on stderr); 130 interrupted (Ctrl-C); 143 terminated "
    "(SIGTERM). Interrupted or terminated, no partial stem file is left behind."
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that every path that cleans up after
    Ctrl-C (partial stems removed, the server's stream cancelled) cleans up after a `kill` too."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


class UsageError(ClientError):
    """Arguments that cannot work: exit 2."""


class LocalEngineMissing(ClientError):
    """--local or demo on an install without the model stack: exit 3 with the install command."""


# --------------------------------------------------------------------------------------------------------------
# Arguments


def _span(text: str) -> Span:
    try:
        return parse_span(text)
    except SpanError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samaudio",
        description="SAM-Audio sound separation: the thin client.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log what happens, and the details of an error (before COMMAND)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "separate",
        help="separate a described sound from audio files",
        description="Write <name>.target.<ext> (the described sound) and <name>.residual.<ext> (the rest) per file.",
        epilog=EXIT_CODES,
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audio files (anything libsndfile reads)")
    p.add_argument(
        "--text",
        action="append",
        default=[],
        help='what to separate, e.g. "snare drum"; repeat it for several sounds from one stream, one file each',
    )
    p.add_argument(
        "--span",
        type=_span,
        action="append",
        default=[],
        metavar="+/-START:END",
        help="a span prompt on the file's timeline in seconds: +1.2:3.4 the sound is there, -5:6 it is not "
        "(repeatable)",
    )
    p.add_argument("--start", type=seconds, metavar="S", help="separate from S seconds into the file")
    p.add_argument("--duration", type=positive(float), metavar="D", help="separate D seconds (default: to the end)")
    p.add_argument(
        "--video",
        type=Path,
        metavar="CLIP",
        help="a visual prompt: a video file (MP4, MKV, WebM, ...; the server decodes it) showing the sounding "
        "object, with the object masked (or see --video-masks). It is taken to start at the separated region's "
        "start (--start, else the file's start), whatever its length. --text may then be empty. Needs a server "
        "started with --vision; the same clip goes with every FILE",
    )
    p.add_argument(
        "--video-masks",
        type=Path,
        metavar="FILE",
        help="object masks for --video, one per decoded frame, non-zero on the sounding object (blacked out before "
        "the model sees it): a .npy array (frames, height, width), or a raw file of one byte per pixel",
    )
    where = p.add_mutually_exclusive_group()
    add_connection(p, where)
    where.add_argument("--local", action="store_true", help=f"run the model in this process (needs {SERVER_EXTRA})")
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME_OR_FOLDER",
        help="a model the server serves (default: its default; `samaudio info` lists them), or with --local a name "
        "from `samaudio models` (e.g. demo-tiny: untrained, no download), a hub id or a folder",
    )
    p.add_argument("--out-dir", type=Path, metavar="DIR", help="where to write the stems (default: beside each input)")
    p.add_argument("--format", choices=sorted(FORMATS), default="wav", help="output format (default: %(default)s)")
    p.add_argument(
        "--subtype",
        metavar="NAME",
        help="sample format of the stems, e.g. PCM_16, PCM_24, FLOAT (default: the input's, if the format holds it)",
    )
    add_stream_settings(p)
    add_quality_settings(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary on stderr")

    p = commands.add_parser(
        "info",
        help="describe a server: health, models, limits",
        description="Describe a samaudio server: its health, version, whether it needs a token, the models it serves "
        "(with their default window, overlap and solver steps), the sample formats and its limits. Needs no token.",
        epilog=EXIT_CODES,
    )
    add_connection(p)
    p.add_argument("--json", action="store_true", help="print the description as JSON")

    p = commands.add_parser(
        "models",
        help="list the models known by name, for samaudio-server --model and separate --local --model",
        description="List the models samaudio knows by name: trained models that ship with it, and presets (sizes "
        "built with random weights: UNTRAINED, for trying the path out). Any other --model is a local folder or a "
        "Hugging Face hub id. What a running server serves: samaudio info --server HOST:PORT.",
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")

    p = commands.add_parser(
        "demo",
        help="separate three sounds from a generated mixture with the small trained demo model, all in this process",
        description="Start a server on a free loopback port with the small demo model that ships with samaudio "
        "(trained on synthetic sound classes), separate a bass line, a kick drum and a beeping tone from a generated "
        "mixture through the client in one stream, write the stems and say how well each was separated (SI-SDR): "
        f"the whole path, no model download. Needs {SERVER_EXTRA}.",
    )
    p.add_argument(
        "--out-dir", type=Path, help="where to write the example and its stems (default: a new temporary folder)"
    )
    p.add_argument("--seconds", type=positive(float), default=8.0, help="length of the example (default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    from samaudio_client import osc  # here, not at the top: the bridge imports grpc, which other commands may not need

    osc.add_parser(commands)
    from samaudio.eval.cli import add_parser as add_eval_parser  # torch-free: the options only

    add_eval_parser(commands)
    return parser


# --------------------------------------------------------------------------------------------------------------
# separate


@dataclass(frozen=True)
class Job:
    region: Region
    spans: list[Span]  # on the region's timeline
    paths: tuple[Path, ...]  # target(s), then residual
    video: Video | None = None  # starts at the region's start
    subtype: str = "FLOAT"  # the stems' sample format (output_subtype)


def plan(args: argparse.Namespace) -> list[Job]:
    """Check every file and span before any work, so a typo fails fast with exit 2."""
    texts = args.text or [""]
    if len(texts) > 1 and (args.span or args.video is not None):
        raise UsageError("--span and --video mark one sound: give them with one --text, not several")
    if len(texts) > 1 and not all(t.strip() for t in texts):
        raise UsageError('an empty --text among several: describe each sound, e.g. --text vocals --text drums')
    if not texts[0].strip() and not any(s.sign == "+" for s in args.span) and args.video is None:
        raise UsageError(
            'say what to separate: --text "snare drum", at least one positive --span +START:END, or a --video'
        )
    if args.local and args.tls_ca is not None:
        raise UsageError("--local runs in this process: --tls-ca has no server to apply to")
    chunk, overlap = args.chunk_seconds, args.overlap_seconds
    if chunk is not None and overlap is not None and overlap >= chunk:
        raise UsageError(
            f"--overlap-seconds {args.overlap_seconds:g} must be less than --chunk-seconds {args.chunk_seconds:g}: "
            f"e.g. --overlap-seconds {args.chunk_seconds / 5:g}"
        )
    video = _video(args)
    jobs = []
    for path in args.files:
        region = Region.of(path, args.start, args.duration)
        spans = to_region(args.span, region.start_seconds, region.seconds)
        try:
            subtype = output_subtype(args.format, region.subtype, args.subtype)
        except AudioFileError as err:
            raise UsageError(f"--subtype: {err}") from None
        jobs.append(Job(region, spans, stem_paths(path, args.out_dir, args.format, texts), video, subtype))
    _refuse_shared_outputs(jobs)
    return jobs


def _refuse_shared_outputs(jobs: list[Job]) -> None:
    """Two inputs that would write the same stem files (same name into one --out-dir, or a file given twice)."""
    seen: dict[Path, Path] = {}
    for job in jobs:
        for out in job.paths:
            key = Path(os.path.abspath(out))
            first = seen.setdefault(key, job.region.path)
            if first is not job.region.path:
                raise UsageError(
                    f"{first} and {job.region.path} would both write {out}: give each input once, and separate "
                    "inputs with the same name in separate calls with different --out-dir folders"
                )


def _video(args: argparse.Namespace) -> Video | None:
    """The --video prompt, read once for all files (the server decodes it; this install cannot)."""
    if args.video is None:
        if args.video_masks is not None:
            raise UsageError("--video-masks marks the object in a --video: give the clip with --video")
        return None
    if args.local:
        raise UsageError(
            "--video runs on a server: visual prompting needs a server started with --vision, not --local"
        )
    from samaudio_client.client import Video, VideoError

    try:
        return Video.from_file(args.video, args.video_masks)
    except VideoError as err:
        raise UsageError(str(err)) from None


class Progress:
    """A tqdm bar in seconds of audio, fed with (frames_done, frames_known) from the server or the engine."""

    def __init__(self, job: Job, quiet: bool) -> None:
        self.rate = job.region.sample_rate
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(
                total=round(job.region.seconds, 2),
                desc=job.region.path.name,
                unit="s",
                file=sys.stderr,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s audio [{elapsed}<{remaining}]",
            )

    def __call__(self, frames_done: int, frames_known: int) -> None:
        self._show(frames_done / self.rate)

    def step(self, evaluations_done: int, evaluations_planned: int) -> None:
        """Model work done, which moves inside a window (the frames only move when a window is finished)."""
        if evaluations_planned and self.bar is not None:
            self._show(self.bar.total * evaluations_done / evaluations_planned)

    def _show(self, seconds: float) -> None:
        if self.bar is not None:
            self.bar.n = max(self.bar.n, min(self.bar.total, round(seconds, 2)))
            self.bar.refresh()

    def close(self, finished: bool) -> None:
        """Close the bar at 100 % for a finished job, where it stopped for one cut short (failed, interrupted)."""
        if self.bar is not None:
            if finished:
                self.bar.n = self.bar.total
            self.bar.close()


def _run_job(job: Job, separate: Callable[[Job, StemWriter, Progress], str], args: argparse.Namespace) -> None:
    """Separate one job into its two files, written block by block; partial files are removed on failure."""
    began = time.monotonic()
    quiet = args.quiet
    writer = StemWriter(job.paths, job.region.sample_rate, job.region.channels, args.format, job.subtype)
    progress = Progress(job, quiet)
    try:
        how = separate(job, writer, progress)
    except BaseException:
        progress.close(finished=False)
        writer.abort()
        raise
    progress.close(finished=True)
    writer.close()
    assert writer.frames == job.region.frames, (writer.frames, job.region.frames)
    for path in job.paths:
        print(os.path.abspath(path))
    sys.stdout.flush()
    if not quiet:
        r = job.region
        print(
            f"{r.path.name}: {r.seconds:.3f} s, {r.channels} ch, {r.sample_rate} Hz separated in "
            f"{time.monotonic() - began:.1f} s ({how})",
            file=sys.stderr,
        )


def separate_remote(args: argparse.Namespace, jobs: list[Job]) -> None:
    from samaudio_client.client import Client

    options = stream_settings(args)
    if args.model:
        options["model"] = args.model
    with Client(args.server, token=args.token, tls=args.tls, ca_file=args.tls_ca) as client:
        check_before_upload(client.info(), jobs, args)

        def separate(job: Job, writer: StemWriter, progress: Progress) -> str:
            texts = args.text or [""]
            summary = client.separate_file(
                job.region.path,
                texts[0] if len(texts) == 1 else texts,
                args.span,
                start=args.start,
                duration=args.duration,
                on_block=lambda b: writer.write(b.start, *(b.targets or (b.target,)), b.residual),
                on_progress=progress,
                on_step=progress.step,
                video=job.video,
                **options,
            )
            s = summary.settings
            return (
                f"server {args.server}, model {s.model}, {_count(summary.windows, 'window')}, "
                f"chunk {s.chunk_seconds:g} s, "
                f"{s.solver_steps} steps" + _quality_note(summary)
            )

        for job in jobs:
            _run_job(job, separate, args)


def check_before_upload(info: ServerInfo, jobs: list[Job], args: argparse.Namespace) -> None:
    """Refuse, from the server's GetInfo, what it would refuse only once the upload is under way: an unknown
    model, an overlap not shorter than the window it would use, a file longer than its stream limit. These
    raise the status the server would answer, so the exit code and message read the same."""
    import grpc

    from samaudio_client.errors import CallError

    served = [m.name for m in info.models]
    if args.model and args.model not in served:
        raise CallError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"this server serves the model {' and '.join(map(repr, served))}, not {args.model!r}",
            info.target,
        )
    model = next((m for m in info.models if m.name == args.model or (not args.model and m.default)), None)
    if model is not None:
        chunk = args.chunk_seconds if args.chunk_seconds is not None else model.chunk_seconds
        overlap = args.overlap_seconds if args.overlap_seconds is not None else model.overlap_seconds
        if overlap >= chunk:
            raise UsageError(
                f"the overlap {overlap:g} s must be less than the window {chunk:g} s (this server's default for what "
                f"--chunk-seconds / --overlap-seconds leave unset): e.g. --overlap-seconds {chunk / 5:g}"
            )
    limit = info.limits.get("max_stream_seconds", 0)
    for job in jobs:
        r = job.region
        if limit and r.frames > math.floor(limit * r.sample_rate):  # the server's own rule
            raise CallError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{r.path} is {r.seconds:.2f} s long (the separated region), more than this server's limit of "
                f"{limit:g} s per stream: separate it in parts with --start and --duration (nothing was sent)",
                info.target,
            )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _import_engine() -> Any:
    """The library's streaming engine, or a clear LocalEngineMissing on a thin install."""
    missing = missing_server_modules()
    if missing:
        raise LocalEngineMissing(
            f"running the model in this process needs the model stack, which this install lacks "
            f"({', '.join(missing)}): {SERVER_EXTRA} (or separate on a server with --server HOST:PORT)"
        )
    import samaudio.streaming

    return samaudio.streaming


def _quality_note(summary: Any) -> str:
    """What the quality path did, for the summary line: candidates and their scores, gated windows."""
    s, note = summary.settings, ""
    if s.candidates > 1:
        scores = summary.chosen_scores
        mean = f", mean chosen score {sum(scores) / len(scores):.3g}" if scores else ""
        note += f", {s.candidates} candidates per window ({summary.candidates_evaluated} solved{mean})"
    if s.predict_spans:
        note += ", predicted spans"
    if s.span_gate:
        note += f", span gate ({_count(summary.windows_gated, 'window')} silent)"
    return note


def separate_local(args: argparse.Namespace, jobs: list[Job]) -> None:
    streaming = _import_engine()
    from samaudio.model.model import midpoint_ode_opt
    from samaudio.model import catalog

    model_name = args.model or _default_model()
    model, processor = catalog.load(model_name)
    device = model.device
    options = stream_settings(args)
    steps = options.pop("solver_steps", None)
    if steps is not None:
        options["ode_opt"] = midpoint_ode_opt(steps)

    def separate(job: Job, writer: StemWriter, progress: Progress) -> str:
        r = job.region
        texts = args.text or [""]
        several = len(texts) > 1
        sep = streaming.StreamingSeparator(
            model,
            processor,
            "" if several else texts[0],
            [(s.sign, s.start_seconds, s.end_seconds) for s in job.spans],
            sample_rate=r.sample_rate,
            channels=r.channels,
            on_progress=progress,
            on_step=progress.step,
            prompts=[streaming.Prompt(t) for t in texts] if several else None,
            total_frames=r.frames,
            **options,
        )
        for frames in read_blocks(r, max(1, r.sample_rate // 4)):
            for b in sep.push(frames):
                writer.write(b.start, *b.targets, b.residual)
        for b in sep.finish():
            writer.write(b.start, *b.targets, b.residual)
        return f"in this process on {device}, model {model_name}, {_count(sep.counters.windows_done, 'window')}"

    for job in jobs:
        _run_job(job, separate, args)


def _default_model() -> str:
    from samaudio.model.config import get_preset

    return get_preset("sam-audio-small").hub_id or "facebook/sam-audio-small"


def cmd_separate(args: argparse.Namespace) -> None:
    jobs = plan(args)
    if args.local:
        separate_local(args, jobs)
    else:
        separate_remote(args, jobs)


# --------------------------------------------------------------------------------------------------------------
# info, demo


def cmd_info(args: argparse.Namespace) -> None:
    from samaudio_client.client import Client

    with Client(args.server, token=args.token, tls=args.tls, ca_file=args.tls_ca) as client:
        info = client.info()
    if args.json:
        print(json.dumps(asdict(info), indent=2))
        return
    print(f"server    {info.target}")
    print(f"health    {info.health}")
    print(f"version   {info.version}")
    print(f"auth      {'token required' if info.authentication_required else 'none'}")
    for m in info.models:
        print(
            f"model     {m.name}{' (default)' if m.default else ''}: {m.sample_rate} Hz, chunk {m.chunk_seconds:g} s, "
            f"overlap {m.overlap_seconds:g} s, {m.solver_steps} solver steps"
            f"{', takes --video' if m.masked_video_supported else ''}"
            f"{f', text ranker {m.text_ranker} (--candidates)' if m.text_ranker else ''}"
            f"{f', visual ranker {m.visual_ranker}' if m.visual_ranker else ''}"
            f"{f', span predictor {m.span_predictor} (--predict-spans, --span-gate)' if m.span_predictor else ''}"
        )
    print(f"formats   {', '.join(info.sample_formats)}")
    for name, value in info.limits.items():
        print(f"limit     {name} {_limit(name, value)}")


def _limit(name: str, value: float) -> str:
    """A GetInfo limit for people: bytes as an integer with its binary size, seconds with their unit."""
    if value == 0 and name.startswith("max_"):
        return "0 (none)"
    if name.endswith("_bytes"):
        size, unit = float(value), "B"
        for unit in ("B", "KiB", "MiB", "GiB"):
            if size < 1024 or unit == "GiB":
                break
            size /= 1024
        return f"{int(value)} bytes ({size:g} {unit})" if unit != "B" else f"{int(value)} bytes"
    if name.endswith("_seconds"):
        return f"{value:g} s"
    if name.endswith("_hertz"):
        return f"{int(value)} Hz"
    return f"{int(value)}" if float(value).is_integer() else f"{value:g}"


def cmd_models(args: argparse.Namespace) -> None:
    from samaudio.model import catalog  # torch-free: names and presets are data

    if args.json:
        print(catalog.as_json())
        return
    print(catalog.describe())
    print(
        "\nUse a name with samaudio-server --model NAME or samaudio separate --local --model NAME. Any other --model "
        "is a local folder or a Hugging Face hub id (facebook/sam-audio-small, gated). What a running server "
        "serves: samaudio info --server HOST:PORT."
    )


def cmd_demo(args: argparse.Namespace) -> None:
    _import_engine()
    from samaudio_client.demo import run_demo

    run_demo(main, args.out_dir, seconds=args.seconds, quiet=args.quiet)


# --------------------------------------------------------------------------------------------------------------


def _attach_span_values(argv: Sequence[str]) -> list[str]:
    """`--span -5:6` -> `--span=-5:6`: argparse would take a value starting with '-' for an option."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        value = next(args, None) if arg == "--span" else None
        out.append(arg if value is None else f"--span={value}")
    return out


def cmd_eval(args: argparse.Namespace) -> None:
    """`samaudio eval`: runs in this process (the metrics are models), so it needs the server stack."""
    missing = missing_server_modules()
    if missing:
        raise UsageError(f"eval runs models in this process and this install lacks {', '.join(missing)}: {SERVER_EXTRA}")
    from samaudio.eval.cli import main as run_eval

    separator = None
    if args.server:
        from samaudio_client.evaluation import ServerSeparator

        separator = ServerSeparator.from_args(args)
    run_eval(args, separator)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `samaudio` console script (which exits with the returned code)."""
    argv = _attach_span_values(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)  # exits 2 on bad arguments, naming the expected form
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="samaudio: %(levelname)s %(message)s"
    )
    from samaudio_client import osc

    commands = {
        "separate": cmd_separate, "info": cmd_info, "models": cmd_models, "demo": cmd_demo, "osc": osc.main,
        "eval": cmd_eval,
    }
    command = commands[args.command]
    in_main_thread = threading.current_thread() is threading.main_thread()  # (signal handlers live there only)
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        command(args)
    except (UsageError, SpanError, AudioFileError) as err:
        return _fail(args, err, EXIT_USAGE)
    # CallError carries the gRPC code and the server's message; the library's named errors (--local, demo)
    # and OSError (an unwritable --out-dir, a full disk) carry messages meant for users too.
    except (ClientError, SAMAudioError, OSError) as err:
        return _fail(args, err, EXIT_FAILED)
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print(f"samaudio {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return EXIT_OK


def _fail(args: argparse.Namespace, err: BaseException, code: int) -> int:
    if args.verbose:
        log.error("details", exc_info=err)
    print(f"samaudio {args.command}: error: {err}{_hint(err)}", file=sys.stderr)
    return code


def _hint(err: BaseException) -> str:
    """This client's way to act on a server's status (the server's message names no client's flags)."""
    from samaudio_client.errors import CallError

    if not isinstance(err, CallError):
        return ""
    if err.code.name == "UNAUTHENTICATED":
        return " (pass it with --token or the SAMAUDIO_TOKEN environment variable)"
    if err.code.name == "INVALID_ARGUMENT" and "serves the model" in err.message:
        return f" (samaudio info --server {err.target} lists the models it serves)"
    return {
        "tls_required": " (add --tls-ca CERT.pem for a self-signed certificate, or --tls for one a public CA signed)",
        "not_tls": " (leave out --tls and --tls-ca)",
        "hostname": " (give --server a name the certificate lists; the README's TLS section makes such a certificate)",
        "untrusted": " (--tls-ca CERT.pem trusts a self-signed certificate)",
    }.get(err.cause, "")


if __name__ == "__main__":
    sys.exit(main())
