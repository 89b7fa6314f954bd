"""Writes notebooks/talk.ipynb: python notebooks/make_talk.py notebooks/talk.ipynb"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _nb  # noqa: E402
nb = _nb.Notebook()
nb.md("""
# minerf_jax: speech in, talking head out

Trains MI-NeRF on the synthetic talking heads and an audio-to-expression model on the
generator's speech, then drives one identity with a speech file (`launch.talk`), plots the
predicted mouth opening against the speech energy, and plays the video.

On Colab run the install cell first; locally `pip install -e .[video,notebooks]`.
""")
nb.code(_nb.INSTALL)

nb.code("""
# Parameters; the test-suite runs this notebook with the ':test' configs and tiny step counts.
import os
VARIANT = os.environ.get("MINERF_NOTEBOOK_VARIANT", "demo")      # configs/minerf.py:<VARIANT>
A2E_VARIANT = "test" if VARIANT == "test" else ""                 # configs/audio2exp.py:<...>
NERF_STEPS = int(os.environ.get("MINERF_NOTEBOOK_STEPS", "1000"))
A2E_STEPS = int(os.environ.get("MINERF_NOTEBOOK_A2E_STEPS", "3000"))
WORKDIR = os.environ.get("MINERF_NOTEBOOK_WORKDIR", "/tmp/minerf_talk")
SPEECH = os.environ.get("MINERF_NOTEBOOK_SPEECH", "")   # a wav/mp3/mp4; '' = new generator speech
SECONDS = float(os.environ.get("MINERF_NOTEBOOK_SECONDS", "4"))
""")
nb.code("""
import numpy as np
import matplotlib.pyplot as plt

from configs import audio2exp as a2e_config
from configs import minerf as minerf_config
from minerf_jax.train import loop

nerf_run, a2e_run = os.path.join(WORKDIR, "minerf"), os.path.join(WORKDIR, "a2e")
config = minerf_config.get_config(VARIANT)
config.total_steps = NERF_STEPS
config.eval_every = NERF_STEPS
loop.train_and_evaluate(config, nerf_run)

a2e = a2e_config.get_config(A2E_VARIANT or None)
a2e.total_steps = A2E_STEPS
a2e.eval_every = A2E_STEPS
a2e.data.update(num_identities=config.data.num_identities, seed=config.data.seed)
a2e_state = loop.train_and_evaluate(a2e, a2e_run)
""")
nb.code("""
# The speech: a file, or new speech from the generator (a speaker the audio model never heard).
import wave
from minerf_jax.data import synthetic
if not SPEECH:
  signal = synthetic.speech_audio(np.random.default_rng(7), int(SECONDS * 16000), 16000)
  SPEECH = os.path.join(WORKDIR, "speech.wav")
  with wave.open(SPEECH, "wb") as f:
    f.setnchannels(1); f.setsampwidth(2); f.setframerate(16000)
    f.writeframes((np.clip(signal, -1, 1) * 32767).astype(np.int16).tobytes())

from launch import talking
out = os.path.join(WORKDIR, "talk.mp4")
result = talking.talk(nerf_run, a2e_run, SPEECH, 0, out, scale=4)
print(f"{result['frames']} frames ({result['frames'] / result['fps']:.2f} s) -> {out}")
""")
nb.code("""
# Predicted mouth opening (jaw_open) against the speech energy, and the lip-sync score.
from minerf_jax.audio import features
from minerf_jax.metrics import sync
speech = features.load_speech(SPEECH)
jaw = result["expressions"][:, 0]
energy = sync.energy_envelope(speech, 16000, result["fps"], len(jaw))
score = sync.sync_offset(jaw, energy)
t = np.arange(len(jaw)) / result["fps"]
fig, ax = plt.subplots(1, 2, figsize=(12, 3))
ax[0].plot(t, (jaw - jaw.mean()) / (jaw.std() + 1e-9), label="predicted jaw_open")
ax[0].plot(t, (energy - energy.mean()) / (energy.std() + 1e-9), label="speech energy (dB)", alpha=0.7)
ax[0].set_xlabel("seconds"); ax[0].legend()
ax[1].plot(score["lags"], score["corr"], marker="o")
ax[1].set_xlabel("lag (frames; + = mouth follows sound)"); ax[1].set_ylabel("correlation")
ax[1].set_title(f"sync peak {score['sync_corr']:.2f} at lag {score['sync_lag']}")
plt.show()
""")
nb.code("""
try:
  from IPython.display import Video, display
  display(Video(out, embed=True, width=384))
except ImportError:   # plain Python (the test-suite): no notebook display
  print(f"video: {out}")
""")
nb.write(sys.argv[1])
