"""The pipeline (real Silero VAD + log-mel + onnxruntime) on espeak-ng speech, with a tiny recognizer.

Also: the recognizer refuses ONNX files whose metadata does not fit, and batching never changes answers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from speech_serving.pipeline import SILENCE, Recognizer, compute_window, load_pipeline
from tests.support.speech_fixtures import LABELS, synthesize_word, write_tiny_recognizer

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return write_tiny_recognizer(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(scope="module")
def pipeline(tiny_model):
    return load_pipeline(tiny_model)


def as_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / 32768.0


def test_recognizer_reads_labels_from_metadata(tiny_model):
    rec = Recognizer(tiny_model)
    assert rec.labels == LABELS
    probs = rec.compute_probabilities(np.zeros((3, 40, 98), dtype=np.float32))
    assert probs.shape == (3, 12)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_recognizer_rejects_missing_labels(tmp_path):
    path = write_tiny_recognizer(tmp_path / "m.onnx", labels=None)
    with pytest.raises(ValueError, match="ONNX metadata has no 'labels' entry"):
        Recognizer(path)


def test_recognizer_rejects_other_feature_config(tmp_path):
    other = json.dumps({"kind": "log-mel", "n_mels": 64})
    path = write_tiny_recognizer(tmp_path / "m.onnx", feature_config=other)
    with pytest.raises(ValueError, match="model was built for features"):
        Recognizer(path)


def test_recognizer_rejects_label_count_mismatch(tmp_path):
    path = write_tiny_recognizer(tmp_path / "m.onnx", labels=LABELS)
    import onnx

    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == "labels":
            prop.value = json.dumps(LABELS[:5])
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match="outputs 12 classes but its metadata lists 5 labels"):
        Recognizer(path)


def test_long_recording_without_speech_is_silence_without_running_the_recognizer(pipeline):
    noise = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.0005
    result, times = pipeline.run_batch([noise])
    assert result[0].label == SILENCE
    assert result[0].segments == ()
    assert result[0].speech_ratio == 0.0
    assert 0.5 < result[0].confidence <= 1.0
    assert result[0].duration_s == 2.0
    assert times.segments == 0 and times.recognize == 0.0


def test_short_clip_is_scored_whole_even_when_the_vad_hears_nothing(tmp_path):
    """Silero misses some high-pitched voices; a keyword-length clip's answer must not depend on it."""
    quiet = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.0005
    says_yes = load_pipeline(write_tiny_recognizer(tmp_path / "yes.onnx", always="yes"))
    result = says_yes.run_clip(quiet)
    assert result.speech_ratio == 0.0  # the VAD found nothing ...
    assert result.label == "yes" and result.confidence > 0.9  # ... and the recognizer still answered
    assert [(s.start_s, s.end_s, s.label) for s in result.segments] == [(0.0, 1.0, "yes")]
    says_silence = load_pipeline(write_tiny_recognizer(tmp_path / "sil.onnx", always=SILENCE))
    word = says_silence.run_clip(as_float(synthesize_word("up", pad_s=0.1)))
    assert word.speech_ratio > 0.2 and word.label == SILENCE and word.segments == ()


def test_short_clip_segment_spans_what_the_vad_found(tmp_path):
    says_no = load_pipeline(write_tiny_recognizer(tmp_path / "no.onnx", always="no"))
    clip = as_float(synthesize_word("no", pad_s=0.3))
    assert clip.shape[0] <= 1.5 * 16000
    (seg,) = says_no.run_clip(clip).segments
    assert 0.15 < seg.start_s < seg.end_s < clip.shape[0] / 16000 - 0.15


def test_three_words_give_three_ordered_segments(pipeline):
    gap = np.zeros(8000, dtype=np.int16)
    words = [synthesize_word(w, pad_s=0.1) for w in ("yes", "left", "stop")]
    clip = np.concatenate([words[0], gap, words[1], gap, words[2]])
    result = pipeline.run_clip(as_float(clip))
    assert len(result.segments) == 3
    starts = [s.start_s for s in result.segments]
    assert starts == sorted(starts)
    # each segment lies inside the word it came from
    edges = np.cumsum([0, len(words[0]), len(gap), len(words[1]), len(gap), len(words[2])]) / 16000
    for seg, (lo, hi) in zip(
        result.segments, [(edges[0], edges[1]), (edges[2], edges[3]), (edges[4], edges[5])], strict=True
    ):
        assert lo - 0.05 <= seg.start_s < seg.end_s <= hi + 0.05
        assert seg.label in LABELS
    best = max(result.segments, key=lambda s: s.confidence)
    assert (result.label, result.confidence) == (best.label, best.confidence)
    assert 0.2 < result.speech_ratio < 0.9


def test_batching_does_not_change_answers(pipeline):
    clips = [as_float(synthesize_word(w)) for w in ("up", "down", "go")]
    clips.append(np.zeros(12000, dtype=np.float32))
    clips.append(np.concatenate([clips[0], np.zeros(16000, np.float32), clips[1]]))  # long: per VAD segment
    batched, times = pipeline.run_batch(clips)
    single = [pipeline.run_clip(c) for c in clips]
    assert [(r.label, r.segments) for r in batched] == [(r.label, r.segments) for r in single]
    np.testing.assert_allclose([r.confidence for r in batched], [r.confidence for r in single], rtol=1e-5)
    assert times.segments == 6 and times.vad > 0 and times.features > 0 and times.recognize > 0


def test_window_is_one_second_centred_and_zero_padded():
    clip = np.arange(1, 20001, dtype=np.float32)
    w = compute_window(clip, 1000, 3000)  # centre 2000 → [-6000, 10000)
    assert w.shape == (16000,)
    np.testing.assert_array_equal(w[:6000], 0)
    np.testing.assert_array_equal(w[6000:], clip[:10000])
    long = compute_window(clip, 0, 18000)  # longer than 1 s: the segment itself
    np.testing.assert_array_equal(long, clip[:18000])


def shipped_slice(name: str):
    from speech_serving.clips import load_clip_arrays

    arrays = load_clip_arrays(name)
    return [as_float(a) for a in arrays.audio], [str(x) for x in arrays.labels]


@pytest.fixture(scope="module")
def shipped():
    from speech_serving.server.config import resolve_model_uri

    return {v: load_pipeline(resolve_model_uri(f"builtin:{v}")) for v in ("v1", "v2", "v4")}


def accuracy(pipe, clips, labels) -> float:
    results, _ = pipe.run_batch(clips)
    return sum(r.label == t for r, t in zip(results, labels, strict=True)) / len(labels)


def test_shipped_v2_through_the_server_pipeline_recognizes_known_clips(shipped):
    clips, labels = shipped_slice("clean")
    assert len(clips) >= 40
    assert accuracy(shipped["v2"], clips, labels) >= 0.9
    silence, truth = shipped_slice("silence")
    assert accuracy(shipped["v2"], silence, truth) == 1.0


def test_shipped_versions_keep_their_story_through_the_pipeline(shipped):
    """v1 fails on noise (answers _silence_), v2 does not; v4 (off-by-one labels) is confidently wrong."""
    noisy, truth = shipped_slice("noisy")
    v1_answers, _ = shipped["v1"].run_batch(noisy)
    assert sum(r.label == "_silence_" for r in v1_answers) / len(noisy) > 0.5
    assert accuracy(shipped["v2"], noisy, truth) - accuracy(shipped["v1"], noisy, truth) > 0.4
    clean, truth = shipped_slice("clean")
    v4_answers, _ = shipped["v4"].run_batch(clean)
    assert sum(r.label == t for r, t in zip(v4_answers, truth, strict=True)) / len(clean) < 0.1
    assert np.mean([r.confidence for r in v4_answers]) > 0.8


def test_keyword_clip_answer_is_the_recognizers_answer_on_the_whole_clip(shipped):
    from speech_serving import features

    clips, _ = shipped_slice("young")
    pipe = shipped["v2"]
    results, _ = pipe.run_batch(clips)
    probs = pipe.recognizer.compute_probabilities(features.compute_log_mel_batch(np.stack(clips)))
    expected = [pipe.recognizer.labels[i] for i in probs.argmax(axis=1)]
    assert [r.label for r in results] == expected
