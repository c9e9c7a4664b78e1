"""The OSC bridge (`samaudio osc`) over real UDP on loopback, separating on a real server with the golden model.

A python-osc client sends requests to a running bridge; the test's own OSC server stands at the bridge's
`--reply` address and queues every reply. Waits are on that queue with a timeout, so a missing reply fails the
test instead of hanging it.
"""

from __future__ import annotations

import argparse
import logging
import queue
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import soundfile as sf
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from samaudio_client import Client
from samaudio_client.osc import OscBridge, add_parser, is_loopback, parse_address
from server_fixtures import (  # noqa: F401 - fixtures are used by name
    CHUNK_SECONDS,
    OVERLAP_SECONDS,
    SOLVER_STEPS,
    golden_server,
    make_audio,
)

OPTIONS = dict(chunk_seconds=CHUNK_SECONDS, overlap_seconds=OVERLAP_SECONDS, solver_steps=SOLVER_STEPS)
TIMEOUT = 60.0  # seconds to wait for one reply; generous for a loaded machine, a hang still fails
TERMINAL = ("/samaudio/done", "/samaudio/error", "/samaudio/cancelled")


class Replies:
    """The test's end of `--reply`: an OSC server on 127.0.0.1 port 0 that sorts the replies by request id."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[str, list[Any]]] = queue.Queue()
        self._held: dict[str, list[tuple[str, list[Any]]]] = defaultdict(list)  # read, not yet asked for
        self.arrived: list[tuple[str, list[Any]]] = []  # every reply, in order of arrival
        dispatcher = Dispatcher()
        dispatcher.set_default_handler(self._arrive)
        self._server = BlockingOSCUDPServer(("127.0.0.1", 0), dispatcher)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def _arrive(self, address: str, *args: Any) -> None:
        self.arrived.append((address, list(args)))
        self._queue.put((address, list(args)))

    @property
    def address(self) -> tuple[str, int]:
        return self._server.server_address[:2]

    def next(self, request_id: str) -> tuple[str, list[Any]]:
        """The next reply carrying `request_id` (as its first argument)."""
        if self._held[request_id]:
            return self._held[request_id].pop(0)
        while True:
            address, args = self._queue.get(timeout=TIMEOUT)  # queue.Empty fails the test
            rid = args[0] if args else None
            if rid == request_id:
                return address, args
            self._held[rid].append((address, args))

    def until_end(self, request_id: str) -> list[tuple[str, list[Any]]]:
        """Every reply for `request_id` up to and including its done, error or cancelled."""
        replies = [self.next(request_id)]
        while replies[-1][0] not in TERMINAL:
            replies.append(self.next(request_id))
        return replies

    def held(self) -> dict[str, list[tuple[str, list[Any]]]]:
        """Replies read while waiting for another id and not asked for since."""
        return {rid: got for rid, got in self._held.items() if got}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def replies():
    r = Replies()
    yield r
    r.close()


@pytest.fixture
def client(golden_server):
    with Client(f"127.0.0.1:{golden_server[1]}") as c:
        yield c


@pytest.fixture
def out_dir(tmp_path) -> Path:
    return tmp_path / "stems"


@pytest.fixture
def bridge(client, replies, out_dir):
    with OscBridge(client, replies.address, ("127.0.0.1", 0), out_dir=out_dir, options=OPTIONS) as b:
        yield b


@pytest.fixture
def send(bridge) -> Callable[..., None]:
    osc = SimpleUDPClient(*bridge.address)
    return lambda address, *args: osc.send_message(address, list(args))


def write(path: Path, seconds: float, rate: int, channels: int, seed: int = 0) -> Path:
    sf.write(path, make_audio(seconds, rate, channels, seed), rate, subtype="FLOAT")
    return path


@pytest.fixture
def wav(tmp_path) -> Path:
    """1.1 s of mono at 44.1 kHz: awkward length and rate."""
    return write(tmp_path / "take.wav", 1.1, 44100, 1)


@pytest.fixture
def long_wav(tmp_path) -> Path:
    """40 s at 8 kHz: small on disk, dozens of model windows on the server (a cancel lands mid-stream)."""
    return write(tmp_path / "long.wav", 40.0, 8000, 1, seed=3)


def addresses(replies: list[tuple[str, list[Any]]]) -> list[str]:
    return [address for address, _ in replies]


# --------------------------------------------------------------------------------------------------------------
# Separations


def test_a_request_is_accepted_reports_increasing_progress_and_is_done_with_stems_of_the_inputs_shape(
    send, replies, tmp_path, out_dir
):
    wav = write(tmp_path / "take.wav", 1.3, 44100, 2)

    send("/samaudio/separate", "take-1", str(wav), "a chirp")

    got = replies.until_end("take-1")

    assert got[0] == ("/samaudio/accepted", ["take-1"])
    stems = [str(out_dir / "take.target.wav"), str(out_dir / "take.residual.wav")]
    assert got[-1] == ("/samaudio/done", ["take-1", *stems])
    fractions = [args[1] for address, args in got[1:-1]]
    assert addresses(got[1:-1]) == ["/samaudio/progress"] * len(fractions) and fractions
    assert all(0 < f <= 1 for f in fractions) and fractions == sorted(set(fractions))
    for path in got[-1][1][1:]:
        info = sf.info(path)
        assert (info.frames, info.channels, info.samplerate) == (57330, 2, 44100)


def test_a_region_with_spans_gives_the_clients_stems_for_that_region(send, replies, client, tmp_path, out_dir):
    wav = write(tmp_path / "song.wav", 2.0, 48000, 1, seed=4)

    send("/samaudio/separate", "r", str(wav), "a chirp", 0.5, 1.25, "+1.0:1.5,-0.6:0.8")
    done = replies.until_end("r")[-1]

    expected = client.separate_file(wav, "a chirp", ["+1.0:1.5", "-0.6:0.8"], start=0.5, duration=1.25, **OPTIONS)
    assert done[0] == "/samaudio/done", done
    target, residual = (sf.read(path, dtype="float32", always_2d=True)[0] for path in done[1][1:])
    assert target.shape == residual.shape == (60000, 1)
    np.testing.assert_array_equal(target, expected.target)
    np.testing.assert_array_equal(residual, expected.residual)


def test_several_sounds_separated_by_semicolons_are_done_with_one_file_each(send, replies, client, tmp_path, out_dir):
    wav = write(tmp_path / "band.wav", 1.2, 48000, 1, seed=6)

    send("/samaudio/separate", "b", str(wav), "a chirp; low hum")
    done = replies.until_end("b")[-1]

    expected = client.separate_file(wav, ["a chirp", "low hum"], **OPTIONS)
    names = ["band.a-chirp.wav", "band.low-hum.wav", "band.residual.wav"]
    assert done == ("/samaudio/done", ["b", *(str(out_dir / n) for n in names)])
    got = [sf.read(path, dtype="float32", always_2d=True)[0] for path in done[1][1:]]
    np.testing.assert_array_equal(got[0], expected["a chirp"])
    np.testing.assert_array_equal(got[1], expected["low hum"])
    np.testing.assert_array_equal(got[2], expected.residual)


def test_integer_times_are_taken_as_seconds(send, replies, wav):
    send("/samaudio/separate", "ints", str(wav), "a chirp", 0, 1)

    done = replies.until_end("ints")[-1]

    assert done[0] == "/samaudio/done", done
    assert sf.info(done[1][1]).frames == 44100


def test_two_requests_run_at_once_and_every_reply_carries_its_own_id(send, replies, tmp_path):
    first = write(tmp_path / "first.wav", 1.9, 48000, 1, seed=5)
    second = write(tmp_path / "second.wav", 1.4, 22050, 2, seed=6)

    send("/samaudio/separate", "a", str(first), "a chirp")
    send("/samaudio/separate", "b", str(second), "a chirp")
    a, b = replies.until_end("a"), replies.until_end("b")

    assert addresses(a)[0] == addresses(b)[0] == "/samaudio/accepted"
    assert a[-1][0] == b[-1][0] == "/samaudio/done"
    assert all(args[0] == "a" for _, args in a) and all(args[0] == "b" for _, args in b)
    assert sf.info(a[-1][1][1]).frames == 91200
    assert (sf.info(b[-1][1][2]).frames, sf.info(b[-1][1][2]).channels) == (30870, 2)
    order = [(address, args[0]) for address, args in replies.arrived]
    assert order.index(("/samaudio/progress", "b")) < order.index(("/samaudio/done", "a"))  # both ran at once


def test_a_cancel_mid_stream_ends_the_request_with_cancelled_and_leaves_no_files(send, replies, long_wav, out_dir):
    send("/samaudio/separate", "long", str(long_wav), "a chirp")
    assert replies.next("long") == ("/samaudio/accepted", ["long"])
    assert replies.next("long")[0] == "/samaudio/progress"  # the stream is running on the server

    send("/samaudio/cancel", "long")

    rest = replies.until_end("long")
    assert rest[-1] == ("/samaudio/cancelled", ["long"])
    assert set(addresses(rest[:-1])) <= {"/samaudio/progress"}
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_stopping_the_bridge_cancels_the_requests_in_flight(client, replies, long_wav, out_dir):
    bridge = OscBridge(client, replies.address, ("127.0.0.1", 0), out_dir=out_dir, options=OPTIONS)
    SimpleUDPClient(*bridge.start()).send_message("/samaudio/separate", ["long", str(long_wav), "a chirp"])
    assert replies.next("long")[0] == "/samaudio/accepted"

    bridge.stop()

    assert replies.until_end("long")[-1] == ("/samaudio/cancelled", ["long"])


def test_an_id_already_in_flight_is_refused(send, replies, long_wav, wav):
    send("/samaudio/separate", "same", str(long_wav), "a chirp")
    assert replies.next("same")[0] == "/samaudio/accepted"

    send("/samaudio/separate", "same", str(wav), "a chirp")

    address, args = replies.next("same")
    while address == "/samaudio/progress":  # the running request's
        address, args = replies.next("same")
    send("/samaudio/cancel", "same")
    assert (address, args[0]) == ("/samaudio/error", "same")
    assert "already in flight" in args[1]
    assert replies.until_end("same")[-1][0] == "/samaudio/cancelled"


def test_a_server_error_is_an_error_reply_with_the_servers_message(replies, golden_server, wav, out_dir):
    with Client(f"127.0.0.1:{golden_server[1]}") as client:
        bridge = OscBridge(client, replies.address, ("127.0.0.1", 0), out_dir=out_dir, options={"model": "nope"})
        with bridge:
            SimpleUDPClient(*bridge.address).send_message("/samaudio/separate", ["m", str(wav), "a chirp"])

            got = replies.until_end("m")

    assert addresses(got) == ["/samaudio/accepted", "/samaudio/error"]
    assert "INVALID_ARGUMENT" in got[-1][1][1] and "'nope'" in got[-1][1][1]
    assert not out_dir.exists() or not any(out_dir.iterdir())


# --------------------------------------------------------------------------------------------------------------
# Malformed messages: one /samaudio/error each, with what was wrong, and the bridge goes on serving

SEP, CANCEL = "/samaudio/separate", "/samaudio/cancel"
MALFORMED = {
    # name: (address, arguments with {wav} for a readable file, id of the error reply, words in its message)
    "no arguments": (SEP, [], "", "no arguments"),
    "only the id": (SEP, ["x"], "x", "at least 3"),
    "id not a string": (SEP, [7, "{wav}", "a chirp"], "", "request_id must be a non-empty string"),
    "empty id": (SEP, ["", "{wav}", "a chirp"], "", "request_id must be a non-empty string"),
    "path not a string": (SEP, ["x", 1.5, "a chirp"], "x", "path must be a string"),
    "description not a string": (SEP, ["x", "{wav}", 3], "x", "description must be a string"),
    "start without duration": (SEP, ["x", "{wav}", "a chirp", 0.5], "x", "without duration_s"),
    "start as text": (SEP, ["x", "{wav}", "a chirp", "0.5", 1.0], "x", "start_s must be a number"),
    "duration as a bool": (SEP, ["x", "{wav}", "a chirp", 0.0, True], "x", "duration_s must be a number"),
    "spans not a string": (SEP, ["x", "{wav}", "a chirp", 0.0, 1.0, 2], "x", "spans must be a string"),
    "too many arguments": (SEP, ["x", "{wav}", "a", 0.0, 1.0, "", "extra"], "x", "at most 6"),
    "missing file": (SEP, ["x", "/no/such/take.wav", "a chirp"], "x", "no such file"),
    "not audio": (SEP, ["x", "{text}", "a chirp"], "x", "cannot read"),
    "bad span": (SEP, ["x", "{wav}", "a chirp", "+1.2-3.4"], "x", "cannot read span '+1.2-3.4'"),
    "span ending before it starts": (SEP, ["x", "{wav}", "a chirp", "+1:0.5"], "x", "not after its start"),
    "span outside the region": (SEP, ["x", "{wav}", "a", 0.0, 0.5, "+0.8:1.0"], "x", "outside the separated region"),
    "region past the end": (SEP, ["x", "{wav}", "a chirp", 1.0, 2.0], "x", "past the end"),
    "nothing to separate": (SEP, ["x", "{wav}", " ", "-0.1:0.2"], "x", "say what to separate"),
    "cancel without id": (CANCEL, [], "", "no arguments"),
    "cancel of an unknown id": (CANCEL, ["ghost"], "ghost", "no request 'ghost' in flight"),
    "cancel with extra arguments": (CANCEL, ["x", 1], "x", "expected 1"),
    "unknown address": ("/samaudio/seperate", ["x", "{wav}", "a chirp"], "", "unknown address /samaudio/seperate"),
}


@pytest.fixture
def files(wav, tmp_path) -> dict[str, str]:
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    return {"wav": str(wav), "text": str(text)}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_message_gets_an_error_saying_what_was_wrong(case, send, replies, files):
    address, args, request_id, words = MALFORMED[case]

    send(address, *[a.format(**files) if isinstance(a, str) else a for a in args])

    reply, reply_args = replies.next(request_id)
    assert reply == "/samaudio/error"
    assert words in reply_args[1], reply_args[1]


def test_an_unreadable_packet_gets_an_error_with_an_empty_id(bridge, replies):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"/samaudio/separate\x00\x00,s\x00\x00abc", bridge.address)  # the string runs off the end

    reply, args = replies.next("")
    assert reply == "/samaudio/error" and "unreadable OSC packet" in args[1]


def test_other_applications_addresses_are_ignored_without_a_reply(send, replies):
    send("/track/1/volume", 0.5)
    send("/samaudio/cancel", "after")  # replies keep the messages' order: one to the first would come first

    assert replies.next("after")[0] == "/samaudio/error"
    assert replies.held() == {}


def test_the_bridge_keeps_serving_after_malformed_messages(send, replies, files):
    for address, args, _, _ in MALFORMED.values():
        send(address, *[a.format(**files) if isinstance(a, str) else a for a in args])

    send("/samaudio/separate", "good", files["wav"], "a chirp")

    assert replies.until_end("good")[-1][0] == "/samaudio/done"


# --------------------------------------------------------------------------------------------------------------
# Listening address and the command line


def test_listening_beyond_loopback_logs_a_warning(client, replies, caplog):
    bridge = OscBridge(client, replies.address, ("0.0.0.0", 0))
    with caplog.at_level(logging.WARNING, logger="samaudio_client.osc"):
        bridge.start()
        bridge.stop()

    assert "not loopback" in caplog.text and "no authentication" in caplog.text


def test_loopback_is_recognised_and_host_names_are_not_trusted():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20") and not is_loopback("studio.local")


def test_the_osc_command_listens_on_loopback_by_default_and_needs_a_reply_address():
    parser = argparse.ArgumentParser(prog="samaudio")
    add_parser(parser.add_subparsers(dest="command"))

    args = parser.parse_args(["osc", "--reply", "127.0.0.1:9001", "--server", "gpu:50051", "--steps", "4"])

    assert (args.listen, args.reply) == (("127.0.0.1", 9000), ("127.0.0.1", 9001))
    assert (args.server, args.steps) == ("gpu:50051", 4)
    with pytest.raises(SystemExit):
        parser.parse_args(["osc"])


def test_addresses_are_host_colon_port():
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    for bad in ("9000", "host:", "host:port", "host:70000"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_address(bad)
