"""`samaudio-server`: load a model and serve `samaudio.v1.SeparationService` until SIGTERM/SIGINT.

On SIGTERM or SIGINT the server drains: health turns NOT_SERVING, new streams get UNAVAILABLE, running streams
finish within --grace seconds, then it exits. A second signal stops at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from samaudio.defaults import DEFAULT_PORT, STREAM_DEFAULTS, StreamDefaults
from samaudio_server.servicer import Limits

logger = logging.getLogger("samaudio_server")

SIGNAL_POLL_SECONDS = 0.2  # how often the main thread looks for a signal (see main)

DEFAULT_MODEL = "facebook/sam-audio-small"


def build_parser() -> argparse.ArgumentParser:
    from samaudio import __version__

    p = argparse.ArgumentParser(
        prog="samaudio-server",
        description="Serve SAM-Audio separation over gRPC (samaudio.v1.SeparationService, health, reflection).",
        epilog="SIGTERM or Ctrl-C drains: running streams finish within --grace seconds, new ones get UNAVAILABLE; "
        "a second signal stops at once. Exit status: 0 stopped cleanly, 1 streams were cut off at the end of the "
        "grace period or the model could not be loaded, 2 bad arguments.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="a model by name (`samaudio models` lists them: demo-tiny is a small untrained one, no download), a "
        "local folder or a Hugging Face hub id (default: %(default)s, gated)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s; 0.0.0.0 for all)")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to bind, 0 for any free one (default: %(default)s)"
    )
    p.add_argument("--device", default=None, help="torch device, e.g. cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument(
        "--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="model dtype (default: float32)"
    )
    p.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="where windows run: local = this process's device; ray = replicas of a Ray Serve deployment on the "
        "Ray cluster this box belongs to, one per GPU (needs the [cluster] extra) (default: %(default)s)",
    )
    p.add_argument(
        "--ray-address", default="auto", help="the Ray cluster to join with --backend ray (default: %(default)s)"
    )
    p.add_argument(
        "--replicas",
        type=_replicas,
        default="auto",
        help="replicas with --backend ray, each loads the model once on one GPU; auto: one per GPU of the cluster "
        "(default: %(default)s)",
    )
    quality = p.add_argument_group(
        "quality parts (issue 16), each loaded only when named",
        "Relative checkpoint paths are read from the model folder, as the official config keys take them.",
    )
    quality.add_argument(
        "--text-ranker",
        choices=["judge", "clap", "ensemble"],
        help="load a text ranker so streams may ask for candidates > 1; ensemble: the model config's ensemble, or "
        "CLAP (weight 1) and the judge (weight 2) (default: none)",
    )
    quality.add_argument(
        "--visual-ranker", choices=["imagebind"], help="load ImageBind to rank candidates of masked-video streams"
    )
    quality.add_argument(
        "--span-predictor",
        metavar="NAME",
        help="load a PE-A-Frame span predictor (hub id, official name such as pe-a-frame-large, or folder) for "
        "predict_spans and the span gate, which is then on by default (default: none)",
    )
    quality.add_argument("--clap-checkpoint", metavar="PATH", help="CLAP checkpoint (default: the released one)")
    quality.add_argument(
        "--judge-checkpoint", metavar="ID_OR_FOLDER", help="SAM-Audio Judge hub id or folder (default: the released)"
    )
    quality.add_argument(
        "--imagebind-checkpoint", metavar="PATH", help="ImageBind checkpoint (default: the released imagebind_huge)"
    )
    p.add_argument(
        "--max-candidates",
        type=int,
        default=Limits.max_candidates,
        help="most candidates per window a stream may ask for (each costs about one more separation) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--vision",
        action="store_true",
        help="load the vision encoder too, so streams may send a masked video (visual prompting; more memory)",
    )
    p.add_argument(
        "--max-video-bytes",
        type=int,
        default=Limits.max_video_bytes,
        help="largest masked video, as sent and decoded, 0 for no limit (default: %(default)s)",
    )
    p.add_argument("--max-streams", type=int, default=Limits.max_streams, help="streams at once (default: %(default)s)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=Limits.max_stream_seconds,
        help="longest stream in seconds of audio, 0 for no limit (default: %(default)s)",
    )
    d = STREAM_DEFAULTS
    p.add_argument(
        "--device-batch",
        type=int,
        default=d.windows_per_device_batch,
        help="windows per model call, across streams (default: %(default)s)",
    )
    p.add_argument(
        "--stream-batch",
        type=int,
        default=d.windows_per_stream_call,
        help="windows one stream hands to the device at once (default: %(default)s)",
    )
    p.add_argument(
        "--chunk-seconds",
        type=float,
        default=d.chunk_seconds,
        help="window length in seconds when a stream sets none (default: %(default)s)",
    )
    p.add_argument(
        "--overlap-seconds",
        type=float,
        default=d.overlap_seconds,
        help="window overlap in seconds when a stream sets none (default: %(default)s)",
    )
    p.add_argument(
        "--steps", type=int, default=d.solver_steps, help="default midpoint solver steps (default: %(default)s)"
    )
    p.add_argument(
        "--token",
        default=os.environ.get("SAMAUDIO_TOKEN"),
        help="require 'authorization: Bearer TOKEN' (default: $SAMAUDIO_TOKEN; prefer it: the command line shows "
        "in the process list)",
    )
    p.add_argument("--tls-cert", type=Path, help="PEM certificate chain; with --tls-key serves TLS")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument(
        "--audio-timeout",
        type=float,
        default=Limits.audio_timeout_seconds,
        help="end a stream (OUT_OF_RANGE) whose waits for audio exceed the audio it sent by this many seconds, "
        "0 for no limit (default: %(default)s)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds running streams get to finish on SIGTERM (default: %(default)s)",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="what to log on stderr; INFO logs one line per stream (default: %(default)s)",
    )
    return p


def _replicas(value: str) -> int | str:
    """--replicas: 'auto' or a whole number >= 1."""
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is neither 'auto' nor a whole number of replicas >= 1")
    return int(value)


def _model_name(model: str) -> str:
    """The name clients see: a hub id as is, a folder by its last part (server paths stay private)."""
    path = Path(model).expanduser()
    return path.resolve().name if path.is_dir() else model


def read_tls(cert: Path, key: Path) -> tuple[bytes, bytes]:
    """The PEM bytes of --tls-cert and --tls-key, checked to be a certificate chain and its key before the model
    loads (issue 19: bad files gave a traceback, or "Failed to bind" after the load); exits with a message."""
    import ssl

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=lambda: b"")
    except OSError as e:  # ssl.SSLError is one too
        why = e.strerror or getattr(e, "reason", None) or str(e)
        sys.exit(
            f"samaudio-server: --tls-cert {cert} and --tls-key {key} are not a readable PEM certificate chain and "
            f"its unencrypted private key ({why}): give the files your certificate authority issued"
        )
    return cert.read_bytes(), key.read_bytes()


def quality_parts(args: argparse.Namespace) -> dict:
    """`SAMAudio.from_pretrained` keywords for --text-ranker, --visual-ranker and --span-predictor: a kind alone
    takes the model config's entry of that kind (or the released weights), a checkpoint option the config keys."""
    clap = {"kind": "clap", "checkpoint": args.clap_checkpoint}
    judge = {"kind": "judge"} | ({"checkpoint_or_model_id": args.judge_checkpoint} if args.judge_checkpoint else {})
    parts: dict = {}
    if args.text_ranker is not None:
        custom = args.clap_checkpoint or args.judge_checkpoint
        if not custom:
            parts["text_ranker"] = args.text_ranker
        elif args.text_ranker == "ensemble":  # the official ensemble's weights
            parts["text_ranker"] = {"kind": "ensemble", "rankers": {"clap": [clap, 1.0], "judge": [judge, 2.0]}}
        else:
            parts["text_ranker"] = clap if args.text_ranker == "clap" else judge
    if args.visual_ranker is not None:
        parts["visual_ranker"] = {"kind": "imagebind", "checkpoint": args.imagebind_checkpoint}
    if args.span_predictor:
        parts["span_predictor"] = args.span_predictor
    return parts


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.backend == "ray" and quality_parts(args):
        sys.exit("samaudio-server: --text-ranker, --visual-ranker and --span-predictor need --backend local for now")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (args.tls_cert is None) != (args.tls_key is None):
        sys.exit("samaudio-server: --tls-cert and --tls-key go together: give both for TLS, or neither")
    tls = read_tls(args.tls_cert, args.tls_key) if args.tls_cert else (None, None)

    from samaudio.errors import SAMAudioError
    from samaudio.model import catalog
    from samaudio_server.server import create_server

    worker = None
    try:
        if args.backend == "ray":
            from samaudio_server.cluster import ReplicaSpec, connect

            spec = ReplicaSpec(
                model=args.model, dtype=args.dtype, vision=args.vision, windows_per_batch=args.device_batch
            )
            worker = connect(spec, address=args.ray_address, replicas=args.replicas)
            model, processor = worker.model, worker.processor()
        else:
            model, processor = catalog.load(
                args.model, device=args.device, dtype=args.dtype, vision=args.vision, **quality_parts(args)
            )
    except SAMAudioError as e:
        sys.exit(
            f"samaudio-server: {e}\n--model takes a name from `samaudio models` (e.g. demo-tiny: untrained, no "
            "download), a local folder (config.json + weights) or a hub id you can download."
        )
    missing = [name for name in quality_parts(args) if getattr(model, name, None) is None]
    if missing:  # an untrained preset is built without them
        sys.exit(
            f"samaudio-server: {args.model} has no {' or '.join(missing)} to load (an untrained preset): give a model "
            "folder or hub id with --text-ranker, --visual-ranker or --span-predictor"
        )

    limits = Limits(
        max_streams=args.max_streams,
        max_stream_seconds=args.max_seconds,
        max_video_bytes=args.max_video_bytes,
        audio_timeout_seconds=args.audio_timeout,
        max_candidates=args.max_candidates,
    )
    try:
        server, port = create_server(
            f"{args.host}:{args.port}",
            model=model,
            processor=processor,
            model_name=_model_name(args.model),
            limits=limits,
            defaults=StreamDefaults(
                chunk_seconds=args.chunk_seconds,
                overlap_seconds=args.overlap_seconds,
                solver_steps=args.steps,
                windows_per_stream_call=args.stream_batch,
                windows_per_device_batch=args.device_batch,
            ),
            token=args.token or None,  # an empty SAMAUDIO_TOKEN means no token
            tls_cert=tls[0],
            tls_key=tls[1],
            worker=worker,
        )
    except (ValueError, OSError) as e:
        sys.exit(f"samaudio-server: {e}")
    stop = threading.Event()
    signals_seen: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        signals_seen.append(signum)
        if len(signals_seen) > 1:
            logger.warning("second signal: stopping now")
            os._exit(1)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    scheme = "TLS" if args.tls_cert else "plaintext"
    # tests and scripts read the port from this line
    logger.info("samaudio-server listening on %s:%d (%s, model %s)", args.host, port, scheme, _model_name(args.model))
    # Python runs signal handlers only when the main thread runs bytecode, and the kernel may deliver SIGTERM to any
    # of gRPC's threads, which does not wake a main thread asleep in a long wait: SIGTERM then went unnoticed for
    # up to the whole wait (issue 19). Short waits bound how late the drain starts.
    while not stop.wait(SIGNAL_POLL_SECONDS):
        pass
    logger.info("signal %s: draining", signal.Signals(signals_seen[0]).name)
    clean = server.drain(args.grace)
    logger.info("stopped%s", "" if clean else " (streams cut off after the grace period)")
    # os._exit, not sys.exit: a gRPC thread stuck on a half-ended stream would hold the interpreter's exit (it
    # joins the pool's threads) past the grace period (issue 19)
    logging.shutdown()
    os._exit(0 if clean else 1)


if __name__ == "__main__":
    main()
