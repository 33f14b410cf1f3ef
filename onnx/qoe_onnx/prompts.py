"""Prompts of the VQA² models (spec section 8), as bundle segments.

Each ``text`` segment is tokenised on its own, as LLaVA's ``preprocess_qwen`` does (role
headers, newlines and the pieces between ``<image>`` placeholders separately; no BOS);
``embed`` segments take the keyframe or motion block. ``{K}``, ``{T}``, ``{question}`` and
``{stall}`` are filled at run time.
"""

from __future__ import annotations

SYSTEM = [
    {"text": "<|im_start|>system"},
    {"text": "\n"},
    {"text": "You are a helpful assistant."},
    {"text": "<|im_end|>"},
    {"text": "\n"},
]
USER = [{"text": "<|im_start|>user"}, {"text": "\n"}]
END_TURN = [{"text": "<|im_end|>"}, {"text": "\n"}]
ASSISTANT = [{"text": "<|im_start|>assistant"}, {"text": "\n"}]

LEVELS = [" high", " good", " fair", " poor", " low"]
WEIGHTS_CURRENT = [1.0, 0.8, 0.6, 0.4, 0.2]
WEIGHTS_2411 = [1.0, 0.75, 0.5, 0.25, 0.0]

# The released streaming script carries no stalling information (spec 8.3, UNKNOWN); these
# are gst-qoe's two formats, used when a bundle asks for them.
STALL_TEXT = {
    "summary": (
        " The playback stalled {count} times, {total} seconds in total (stalls of {durations} seconds), "
        "after {initial} seconds of initial buffering; the stall ratio is {ratio} percent and the last "
        "stall ended {since} seconds before the end."
    ),
    "per-frame": " The stalling state of each frame, 1 for stalled, is: {sequence}.",
}

ASSISTANT_INTRO = (
    "You will receive {K} distinct frames that have been uniformly sampled in each second from a video "
    "sequence, arranged in the same temporal order as they appear in the video. In addition, you will "
    "also obtain motion features extracted from all {T} frames of the the video.  Please analyze these "
    "images and answer the questions based on your observations."
)


def variant(name: str, stall_format: str = "none") -> dict:
    """The prompt, score and motion-sampling settings of a VQA² variant."""
    if stall_format not in ("none", *STALL_TEXT):
        raise ValueError(f"unknown stall format {stall_format!r} (none, summary, per-frame)")
    if name == "ugc":  # 8.1, current official script
        segments = SYSTEM + USER + [{"embed": "keyframes"}, {"embed": "motion"}] + END_TURN + ASSISTANT + END_TURN
        return dict(segments=segments, weights=WEIGHTS_CURRENT, logit_position=-3, motion_stride=1, motion_trim=4)
    if name == "ugc-2411":  # 8.2, Nov-2024 script
        segments = (
            SYSTEM
            + USER
            + [
                {"text": "The key frames of this video are:\n"},
                {"embed": "keyframes"},
                {"text": ". And the motion feature of the video is\n"},
                {"embed": "motion"},
                {"text": ". How would you rate the quality of this video?"},
            ]
            + END_TURN
            + ASSISTANT
            + [{"text": "The quality of the video is"}]
            + END_TURN
        )
        return dict(segments=segments, weights=WEIGHTS_2411, logit_position=-3, motion_stride=8, motion_trim=4)
    if name == "streaming":  # 8.3: one placeholder, keyframes only
        stall = [] if stall_format == "none" else [{"text": "{stall}"}]
        segments = (
            SYSTEM
            + USER
            + [{"text": "How would you rate the quality of this video?\n"}, {"embed": "keyframes"}]
            + stall
            + END_TURN
            + ASSISTANT
            + [{"text": "The quality of the video is"}]
            + END_TURN
        )
        return dict(
            segments=segments,
            weights=WEIGHTS_2411,
            logit_position=-3,
            motion_stride=1,
            motion_trim=4,
            stall_format=stall_format,
        )
    if name == "assistant":  # 8.4, open assistant turn, generation
        segments = (
            SYSTEM
            + USER
            + [
                {"text": ASSISTANT_INTRO + "\nThe video frames:"},
                {"embed": "keyframes"},
                {"text": "\nThe video motion features:"},
                {"embed": "motion"},
                {"text": "\n.{question}"},
            ]
            + END_TURN
            + ASSISTANT
        )
        return dict(segments=segments, weights=WEIGHTS_2411, logit_position=-1, motion_stride=1, motion_trim=4)
    raise ValueError(f"unknown variant {name!r} (ugc, ugc-2411, streaming, assistant)")
