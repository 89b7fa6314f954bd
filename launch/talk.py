r"""Speech in, talking head out: drive an MI-NeRF or LokiTalk identity with a speech file.

  python -m launch.talk --workdir=NERF_RUN --audio_model=A2E_RUN --audio=SPEECH \
      --identity=K --out=OUT.mp4 [--pose=still|from_video=VIDEO] [--expression_scale=1.0]
      [--blinks=schedule|video|none] [--scale=4] [--chunk=25]
  python -m launch.talk --workdir=LOKITALK_RUN --audio=SPEECH --identity=K --out=OUT.mp4

A LokiTalk run (``configs/lokitalk*.py``) is audio-driven itself: no ``--audio_model``; its lips
follow the speech features, ``--expression_scale`` scales its lip branch's input, and its
blinks follow the statistics of its own training frames.

SPEECH: any audio PyAV decodes (wav, mp3, m4a, a video's sound), resampled to 16 kHz mono. The
audio model (``configs/audio2exp*.py``) predicts the speech part of each frame's expression;
blinks follow the blink statistics measured on its training data (``--blinks=schedule``), the
reference video's eyes (``--blinks=video``, with ``--pose=from_video``) or none. The head is
held at the identity's first held-out pose (``--pose=still``) or follows a reference video's
tracked head poses (real-video runs only). Frames are rendered ``--chunk`` at a time and
streamed into OUT.mp4 at the dataset's fps with SPEECH muxed in. Bad inputs stop with one line
naming the problem, and nothing is written.
"""
from absl import flags

from launch import cli
from launch import talking

_WORKDIR = flags.DEFINE_string("workdir", None, "MI-NeRF or LokiTalk training run.",
                               required=True)
_AUDIO_MODEL = flags.DEFINE_string("audio_model", None,
                                   "Audio-to-expression run (MI-NeRF runs only).")
_AUDIO = flags.DEFINE_string("audio", None, "Speech file.", required=True)
_IDENTITY = flags.DEFINE_integer("identity", 0, "Identity of the run to drive.")
_OUT = flags.DEFINE_string("out", None, "Output .mp4.", required=True)
_POSE = flags.DEFINE_string("pose", "still", "still | from_video=VIDEO")
_SCALE_EXPR = flags.DEFINE_float("expression_scale", 1.0,
                                 "Scales the predicted speech motion about the mean expression.")
_BLINKS = flags.DEFINE_enum("blinks", "schedule", ["schedule", "video", "none"], "Eye blinks.")
_SCALE = flags.DEFINE_integer("scale", 4, "Nearest-neighbour upscaling of the output frames.")
_CHUNK = flags.DEFINE_integer("chunk", 25, "Frames rendered at a time.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the blink schedule.")


def main(argv):
  del argv
  result = talking.talk(_WORKDIR.value, _AUDIO_MODEL.value, _AUDIO.value, _IDENTITY.value,
                        _OUT.value, pose=_POSE.value, expression_scale=_SCALE_EXPR.value,
                        blinks=_BLINKS.value, scale=_SCALE.value, chunk=_CHUNK.value,
                        seed=_SEED.value)
  print(f"TALK frames={result['frames']} fps={result['fps']:g} "
        f"seconds={result['frames'] / result['fps']:.2f} audio={result['audio_seconds']:.2f} "
        f"prepare={result['prepare_seconds']:.1f}s render={result['render_seconds']:.1f}s "
        f"video={result['path']}")


if __name__ == "__main__":
  cli.run(main)
