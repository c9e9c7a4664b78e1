"""Audio files: the region of an input read block by block to its real end; stems written in the input's sample
format by default, clipped with a warning in integer formats."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import decoded_frames, write_mp3_without_length_header
from samaudio_client.files import AudioFileError, Region, StemWriter, output_subtype, read_blocks, stem_paths


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


@pytest.mark.parametrize(
    ("fmt", "given", "written"),
    [("wav", "PCM_16", "PCM_16"), ("wav", "PCM_24", "PCM_24"), ("wav", "FLOAT", "FLOAT"), ("wav", "DOUBLE", "DOUBLE"),
     ("flac", "PCM_16", "PCM_16"), ("flac", "FLOAT", "PCM_24"), ("wav", "VORBIS", "FLOAT"), ("wav", "", "FLOAT")],
)
def test_stems_keep_the_inputs_subtype_when_the_format_holds_it(fmt, given, written):
    assert output_subtype(fmt, given) == written


def test_a_requested_subtype_wins_and_a_wrong_one_names_the_choices():
    assert output_subtype("wav", "PCM_16", "float") == "FLOAT"
    with pytest.raises(AudioFileError, match="FLOAT") as err:
        output_subtype("flac", "PCM_16", "FLOAT")  # FLAC has no float
    assert "PCM_24" in str(err.value)


def test_integer_stems_are_clipped_and_counted_with_a_warning(tmp_path, caplog):
    paths = stem_paths(tmp_path / "take.wav", None, "wav")
    loud = np.array([[0.5], [1.5], [-2.0], [0.25]], np.float32)
    writer = StemWriter(paths, 48000, 1, "wav", "PCM_16")
    writer.write(0, loud * 0.5, loud)
    with caplog.at_level(logging.WARNING, logger="samaudio"):
        writer.close()

    target, residual = (sf.read(p, dtype="int16")[0] for p in paths)
    assert writer.clipped == [0, 2]
    assert residual.tolist() == [16384, 32767, -32768, 8192]  # clipped, not wrapped
    assert target.tolist() == [8192, 24576, -32768, 4096]
    assert sf.info(paths[1]).subtype == "PCM_16"
    assert "take.residual.wav: 2 sample(s) beyond full scale were clipped to fit PCM_16" in caplog.text


def test_float_stems_keep_samples_beyond_full_scale(tmp_path, caplog):
    paths = stem_paths(tmp_path / "take.wav", None, "wav")
    loud = np.array([[1.5], [-2.0]], np.float32)
    writer = StemWriter(paths, 48000, 1, "wav", "FLOAT")
    writer.write(0, loud, loud)
    with caplog.at_level(logging.WARNING, logger="samaudio"):
        writer.close()
    assert sf.read(paths[0], dtype="float32")[0].tolist() == [1.5, -2.0] and not caplog.text


def test_several_descriptions_name_their_files_and_the_residual_comes_last(tmp_path):
    paths = stem_paths(tmp_path / "take.wav", tmp_path / "out", "flac", ["Lead vocals!", "drums", "drums", "residual"])
    assert [p.name for p in paths] == [
        "take.lead-vocals.flac", "take.drums.flac", "take.drums-2.flac", "take.residual-target.flac",
        "take.residual.flac",
    ]
    assert [p.name for p in stem_paths(tmp_path / "take.wav", None, "wav", ["drums"])] == [
        "take.target.wav", "take.residual.wav"
    ]


@pytest.mark.parametrize("compressed", ["MPEG_LAYER_III", "VORBIS", "ULAW"])
def test_stems_of_a_compressed_input_are_written_as_float_wav(compressed):
    assert output_subtype("wav", compressed) == "FLOAT"
    assert output_subtype("flac", compressed) == "PCM_24"
