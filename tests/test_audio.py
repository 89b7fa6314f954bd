"""Speech features and loading, blinks, the audio-to-expression model, lip-sync metrics."""
import os
import wave

import numpy as np
import pytest

from configs import audio2exp as a2e_config
from minerf_jax import models
from minerf_jax.audio import blinks
from minerf_jax.audio import features
from minerf_jax.data import sequences
from minerf_jax.data import synthetic
from minerf_jax.data import video
from minerf_jax.metrics import sync
from minerf_jax.train import loop

SR = 16000
MEDIA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                     "media")


def _write_wav(path, signal, rate=SR, channels=1):
  pcm = (np.clip(signal, -1, 1) * 32767).astype(np.int16)
  if channels > 1:
    pcm = np.repeat(pcm[:, None], channels, 1)
  with wave.open(str(path), "wb") as f:
    f.setnchannels(channels)
    f.setsampwidth(2)
    f.setframerate(rate)
    f.writeframes(pcm.tobytes())
  return str(path)


# ----------------------------------------------------------------------------------------------
# Features.


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_features_line_up_with_video_frames(fps):
  """A click inside video frame k's interval lands in the centre column of frame k's window."""
  n = 40
  for k in (0, 7, 23, n - 1):
    signal = np.zeros(int(round(n / fps * SR)), np.float32)
    centre = int(round((k + 0.5) / fps * SR))
    signal[centre - 40:centre + 40] = np.sin(np.arange(80) * 0.7)
    feats = features.features(signal, fps, n)
    assert feats.shape == (n, 16, 40)
    energy = feats.mean(-1)                               # [n, 16]
    centre_col = energy[:, 16 // 2]
    assert int(np.argmax(centre_col)) == k
    # the click sits at mel frame round((k + 0.5) / fps * 100): the middle of frame k's window
    assert int(np.argmax(energy[k])) in (7, 8, 9)


def test_features_shorter_and_longer_audio():
  fps, n = 25.0, 30
  rng = np.random.default_rng(0)
  exact = rng.normal(0, 0.1, int(n / fps * SR)).astype(np.float32)
  # Longer audio: frames see only their own context, so extra audio past the clip changes
  # nothing but the last frames' right context.
  longer = np.concatenate([exact, rng.normal(0, 0.1, SR).astype(np.float32)])
  a, b = features.features(exact, fps, n), features.features(longer, fps, n)
  np.testing.assert_allclose(a[:-2], b[:-2], atol=1e-5)
  # Shorter audio: the missing tail repeats the last mel frame.
  short = exact[:int(0.5 * len(exact))]
  s = features.features(short, fps, n)
  mel = features.log_mel(short, SR)
  np.testing.assert_array_equal(s[-1], np.repeat(mel[-1:], 16, 0))
  np.testing.assert_allclose(s[:5], a[:5], atol=1e-5)


def test_feature_settings_from_config_and_80_mels():
  config = a2e_config.get_config("test")
  config.audio.n_mels = 80
  settings = features.FeatureSettings.from_config(config.audio)
  feats = features.features(np.random.default_rng(0).normal(0, .1, SR).astype(np.float32), 25.0,
                            25, settings)
  assert feats.shape == (25, 16, 80)
  with pytest.raises(ValueError, match="unknown fields"):
    features.FeatureSettings.from_config({"n_mel": 80})


def test_load_speech_formats_and_errors(tmp_path):
  t = np.arange(int(1.5 * 44100)) / 44100
  tone = 0.3 * np.sin(2 * np.pi * 220 * t)
  stereo = _write_wav(tmp_path / "stereo44k.wav", tone, rate=44100, channels=2)
  signal = features.load_speech(stereo, fps=25.0)
  assert abs(len(signal) - 1.5 * SR) < 0.01 * SR          # resampled to 16 kHz mono
  assert 0.25 < np.abs(signal).max() < 0.35
  clip = video.write_video(str(tmp_path / "clip.mp4"), np.zeros((25, 16, 16, 3), np.uint8), 25.0,
                           audio=0.3 * np.sin(np.arange(SR) * 0.1).astype(np.float32))
  assert abs(len(features.load_speech(clip)) - SR) < 0.05 * SR   # the audio track of a video

  mute = video.write_video(str(tmp_path / "mute.mp4"), np.zeros((5, 16, 16, 3), np.uint8))
  silent = _write_wav(tmp_path / "silent.wav", np.zeros(SR))
  tiny = _write_wav(tmp_path / "tiny.wav", 0.3 * np.sin(np.arange(160)))
  junk = tmp_path / "junk.wav"
  junk.write_bytes(b"not audio at all" * 100)
  for path, message in ((mute, "no audio stream"), (silent, "silence only"),
                        (tiny, "less than one video frame"), (str(junk), "unreadable"),
                        (str(tmp_path / "missing.wav"), "no such file")):
    with pytest.raises(features.SpeechError, match=message) as err:
      features.load_speech(path, fps=25.0)
    assert "\n" not in str(err.value) and path in str(err.value)


# ----------------------------------------------------------------------------------------------
# Blinks.


def test_blink_basis_and_schedule():
  seq = synthetic.sample_sequence(0, 0, 3000)
  e = seq["expression"]
  basis = blinks.fit_basis([e], [e[:, 2:4]])
  np.testing.assert_allclose(basis, np.eye(5)[2:4], atol=0.1)    # the blink rows
  np.testing.assert_allclose(basis.sum(0), [0, 0, 1, 1, 0], atol=0.05)  # both-eye blinks
  stats = blinks.measure([e[:, 2:4]], 25.0)
  assert 0.15 < stats.rate_hz < 0.6                              # one per 2-5 s
  assert 0.4 < stats.profile.max() <= 1.0
  track = blinks.schedule(stats, 25 * 600, np.random.default_rng(1))
  rate = len(blinks.onsets(track)) / 600.0
  assert rate == pytest.approx(stats.rate_hz, rel=0.25)
  np.testing.assert_array_equal(blinks.schedule(stats, 100, np.random.default_rng(3)),
                                blinks.schedule(stats, 100, np.random.default_rng(3)))


# ----------------------------------------------------------------------------------------------
# The model.


def test_audio2exp_overfits_a_short_clip(tmp_path):
  config = a2e_config.get_config("test")
  config.total_steps = 300
  config.eval_every = 0
  config.optimizer.update(lr=3e-3, lr_end=3e-4)
  config.data.update(num_identities=1, speech_frames=60, test_fraction=0.2)
  data = sequences.SequenceData(config)
  model = models.build(config)
  assert models.batch_spec(config) == "sequences"
  params0, _, _ = loop.initial_variables(config, model, data)
  train_set = {"train": data.train_sequences}
  before = model.evaluate(params0, train_set)["train/mse"]
  state = loop.train_and_evaluate(config, str(tmp_path / "run"), model=model, data=data)
  after = model.evaluate(state.params, train_set)["train/mse"]
  assert after < before / 10, (before, after)


def test_audio2exp_overrides_change_the_model():
  config = a2e_config.get_config("test")
  data = sequences.SequenceData(config)
  batch = data.example_batch()
  assert batch["features"].shape == (16, 4 + 2 * 2, 16, 40)
  assert batch["expression"].shape == (16, 4, 5)
  counts = {}
  for temporal in ("attention", "conv", "none"):
    config.model.temporal = temporal
    params = models.build(config).init(__import__("jax").random.PRNGKey(0), batch)
    counts[temporal] = sum(np.size(v) for v in __import__("jax").tree.leaves(params["net"]))
  assert len(set(counts.values())) == 3
  config.model.temporal = "lstm"
  with pytest.raises(ValueError, match="config.model.temporal"):
    models.build(config)


# ----------------------------------------------------------------------------------------------
# Lip sync.


def test_sync_of_the_generator_peaks_at_zero_and_follows_a_shift():
  seq = synthetic.sample_sequence(0, 1000, 1000)
  jaw = seq["expression"][:, 0]
  r = sync.speech_sync(jaw, seq["audio"], SR, 25.0)
  assert r["sync_lag"] == 0 and r["sync_corr"] > 0.85
  late = np.concatenate([np.zeros(5 * SR // 25, np.float32), seq["audio"]])
  assert sync.speech_sync(jaw, late, SR, 25.0)["sync_lag"] == -5


def test_lagged_correlation_is_pearson_at_each_lag():
  rng = np.random.default_rng(0)
  x = rng.normal(size=200)
  lags, corr = sync.lagged_correlation(np.roll(x, 3), x, 5)
  assert lags[int(np.nanargmax(corr))] == 3
  assert corr[list(lags).index(3)] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.slow
def test_sync_of_a_real_clip_against_its_own_audio():
  """MediaPipe mouth opening of a real clip vs its own speech, and with the audio 5 frames late.

  Measured: the peak is at lag -3 (the mouth leads the sound energy by ~120 ms) on this clip
  and on lipnerf_al_pacino and tpsmm_driving; see metrics/sync.py.
  """
  path = os.path.join(MEDIA, "lipnerf_collateral_beauty.mp4")
  clip = video.read_video(path)
  from minerf_jax.data import face  # pylint: disable=g-import-not-at-top
  points = []
  with face.FaceMesh(tracking=True) as mesh:
    for frame in clip.frames:
      lm = mesh.landmarks(frame)
      points.append(np.full((478, 2), np.nan) if lm is None else lm[:, :2])
  mouth = sync.mouth_opening(np.stack(points))
  own = sync.speech_sync(mouth, clip.audio, SR, clip.fps)
  late = sync.speech_sync(mouth, np.concatenate([np.zeros(5 * SR // 25, np.float32), clip.audio]),
                          SR, clip.fps)
  assert own["sync_corr"] > 0.3
  assert abs(own["sync_lag"] - (-3)) <= 1, own["sync_lag"]
  assert abs(late["sync_lag"] - (own["sync_lag"] - 5)) <= 1, (own["sync_lag"], late["sync_lag"])


def test_written_video_keeps_audio_in_sync(tmp_path):
  """A click at 0.5 s in the muxed audio reads back at 0.5 s (the AAC priming is trimmed)."""
  a = np.zeros(SR, np.float32)
  a[8000:8100] = 0.5 * np.sin(np.arange(100) * 0.5)
  path = video.write_video(str(tmp_path / "click.mp4"), np.zeros((25, 16, 16, 3), np.uint8), 25.0,
                           audio=a)
  back = video.read_audio(path)
  assert abs(int(np.argmax(np.abs(back))) - 8050) < 80          # within 5 ms
