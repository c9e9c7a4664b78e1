"""Reading input files: the region of a file that is separated, read block by block to its real end."""

from __future__ import annotations

import logging

import pytest
import soundfile as sf
from audio_fixtures import decoded_frames, write_mp3_without_length_header
from samaudio_client.files import AudioFileError, Region, read_blocks


@pytest.fixture(scope="module")
def misstated_mp3(tmp_path_factory):
    path = tmp_path_factory.mktemp("mp3") / "take.mp3"
    write_mp3_without_length_header(path, 2.3)
    stated, decoded = sf.info(str(path)).frames, decoded_frames(path)
    assert abs(stated - decoded) > 100, "the fixture must misstate its length to test anything"
    return path, decoded


def test_an_mp3_whose_header_misstates_its_length_is_read_to_its_decoded_end(misstated_mp3, caplog):
    path, decoded = misstated_mp3

    with caplog.at_level(logging.WARNING):
        region = Region.of(path)
    blocks = list(read_blocks(region, 4410))

    assert region.frames == decoded and region.sample_rate == 44100 and region.channels == 2
    assert sum(len(b) for b in blocks) == decoded
    assert f"decodes to {decoded}" in caplog.text  # the user hears why the length differs from the header


def test_a_region_of_a_misstated_mp3_is_checked_against_its_decoded_length(misstated_mp3):
    path, decoded = misstated_mp3

    with pytest.raises(AudioFileError, match=f"use --duration {(decoded - 44100) / 44100:.3f} or less"):
        Region.of(path, start=1.0, duration=2.0)
    region = Region.of(path, start=1.0)
    assert region.frames == decoded - 44100 == sum(len(b) for b in read_blocks(region, 1000))


def test_a_folder_as_input_says_it_is_a_folder(tmp_path):
    with pytest.raises(AudioFileError, match="is a folder: give the audio files in it"):
        Region.of(tmp_path)


def test_a_file_without_audio_says_so(tmp_path):
    sf.write(tmp_path / "empty.wav", [], 48000, subtype="FLOAT")

    with pytest.raises(AudioFileError, match="holds no audio"):
        Region.of(tmp_path / "empty.wav")
