"""What the micro VQA² bundle is, in one place (no PyTorch, no Pillow): sizes, sampling, prompt
and levels, shared by data.py, towers.py, train.py and bundle.py."""

import math

KEYFRAME_WIDTH, KEYFRAME_HEIGHT = 320, 180  # keyframes resized to 320x180 (the clips' own size)
# Which frame of each second is a keyframe (the manifest's sampling.keyframes.rule), and how far
# into the second it is due. Streams cut into segments of whole seconds put an intra frame at each
# second's start, which shows neither concealment damage nor the coding damage of the frames after
# it; the middle of the second does. The micro bundles keep VQA²'s first frame: sampled at the
# middle without retraining, the default's figures moved within noise (#30, twenty-fifth session).
KEYFRAME_PHASES = {"first-frame-of-each-second": 0.0, "middle-frame-of-each-second": 0.5}
KEYFRAME_RULE = "first-frame-of-each-second"
SECOND_TOLERANCE = 0.002  # as the element: a frame this close before its due time counts as due


def keyframe_offset(fps: float, rule: str) -> int:
    """The index, within each second's frames, of the keyframe `rule` takes at a constant `fps`:
    the first frame at or after its phase, as the element's sampler picks it by stream time."""
    return max(0, math.ceil((KEYFRAME_PHASES[rule] - SECOND_TOLERANCE) * fps))


MOTION_SIZE = 64  # motion frames resized to 64x64
MOTION_STRIDE = 2  # every 2nd frame feeds the motion branch
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # BT.601 luma of RGB: the graphs', the data's and the baselines'
MOTION_LUMA_SIZE = 128  # the data also keeps each motion frame's luma at 128x128 (a finer motion input)
MOTION_FEATURES = 48  # per-frame feature of the motion branch
MOTION_CONTEXT = 4  # frames of context the motion branch needs (4 before, 3 after)
KEYFRAME_FEATURES = 704  # per-keyframe feature of the vision tower (5 stages' mean and std)

LEVEL_WORDS = [" high", " good", " fair", " poor", " low"]
LEVEL_WEIGHTS = [1.0, 0.75, 0.5, 0.25, 0.0]
PREFIX = "<|im_start|>user\nHow would you evaluate the quality of this video?\n"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\nThe quality of this video is"
STALL_TEXT = " The playback stalled {count} times, {total} seconds in total, after {initial} seconds of initial buffering."
