"""The committed evaluation clip set and its loader (used by the load generator and benchmarks).

Checks the slices, labels, audio format and that test voices never appear in training.
"""

import io
import json
import pathlib
import wave

import numpy as np
import pytest

import speech_serving
from speech_serving.clips import CLIPS_FILE, SLICES, load_clip_arrays, load_clips

pytestmark = pytest.mark.unit
LABELS = {"_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"}


def test_every_slice_has_int16_one_second_clips_of_every_label():
    for name in SLICES:
        clips = load_clips(name)
        assert clips and all(c.slice == name for c in clips)
        assert all(c.audio.dtype == np.int16 and c.audio.shape == (16000,) for c in clips)
        labels = {c.label for c in clips}
        assert labels == ({"_silence_"} if name == "silence" else LABELS)


def test_all_slices_together_and_file_is_small():
    arrays = load_clip_arrays()
    assert set(arrays.slices) == set(SLICES)
    assert len(arrays.labels) == len(load_clips()) == arrays.audio.shape[0]
    assert CLIPS_FILE.stat().st_size < 4_000_000


def test_clip_voices_are_unseen_in_training():
    card = json.loads((pathlib.Path(speech_serving.__file__).parent / "models" / "v2.json").read_text())
    train = set(card["data"]["train_voices"])
    voices = {str(v).split("+")[-1] for v in load_clip_arrays().voices if v != "noise"}
    assert voices and voices.isdisjoint(train)


def test_unknown_slice_is_rejected_with_the_valid_names():
    with pytest.raises(ValueError, match="slice: expected one of clean, young"):
        load_clips("loud")


def test_wav_bytes_round_trip():
    clip = load_clips("clean")[0]
    with wave.open(io.BytesIO(clip.wav_bytes())) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        np.testing.assert_array_equal(np.frombuffer(wav.readframes(16000), dtype="<i2"), clip.audio)
