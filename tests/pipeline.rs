// SPDX-License-Identifier: MPL-2.0
//! `qoemonitor` in real pipelines on real encoded video.
//! The test video is described at `common::test_video`.

use gst::prelude::*;

mod common;
use common::*;

fn check_hole_and_freeze(messages: &[gst::Structure]) {
    let stalls = named(messages, "qoe-stall");
    assert_eq!(stalls.len(), 2, "one stall, start and end: {stalls:?}");
    assert_eq!(stalls[0].get::<&str>("event").unwrap(), "start");
    assert_eq!(stalls[1].get::<&str>("event").unwrap(), "end");
    assert_eq!(stalls[1].get::<&str>("cause").unwrap(), "timestamp-gap");
    assert_near("stall start", t(stalls[1], "start"), STALL_START, FRAME);
    assert_near(
        "stall duration",
        t(stalls[1], "duration"),
        STALL_DURATION,
        FRAME,
    );

    let freezes = named(messages, "qoe-freeze");
    assert_eq!(freezes.len(), 2, "one freeze, start and end: {freezes:?}");
    assert_eq!(freezes[0].get::<&str>("event").unwrap(), "start");
    assert_near("freeze start", t(freezes[0], "start"), FREEZE_START, FRAME);
    // Reported once the picture has been still for freeze-min-duration (1 s).
    assert_near(
        "freeze reported at",
        t(freezes[0], "stream-time"),
        FREEZE_START,
        FRAME,
    );
    assert_near(
        "freeze duration",
        t(freezes[1], "duration"),
        FREEZE_DURATION,
        FRAME,
    );
    assert_near(
        "freeze end",
        t(freezes[1], "stream-time"),
        FREEZE_START + FREEZE_DURATION,
        FRAME,
    );

    let stats = named(messages, "qoe-stats");
    let last = stats.last().expect("final qoe-stats at EOS");
    assert_eq!(last.get::<u64>("frames").unwrap(), VIDEO_FRAMES);
    assert_eq!(last.get::<u64>("stalls").unwrap(), 1);
    assert_eq!(last.get::<u64>("freezes").unwrap(), 1);
    assert_near("stall time", t(last, "stall-time"), STALL_DURATION, FRAME);
    // 1.5 s of 9.5 s watched.
    let ratio = last.get::<f64>("stall-ratio").unwrap();
    assert!((ratio - 1.5 / 9.5).abs() < 0.01, "stall ratio {ratio}");
    assert!(!last.get::<bool>("live").unwrap());
    // Periodic stats every second of stream time, then the final one.
    assert!(stats.len() >= 9, "{} stats messages", stats.len());
}

#[test]
fn matroska_hole_and_freeze_are_found_at_the_right_times() {
    let video = test_video("mkv");
    let messages = run(&format!(
        "filesrc location={} ! decodebin ! qoemonitor ! fakesink",
        video.display()
    ));
    check_hole_and_freeze(&messages);
}

#[test]
fn mp4_hole_is_found_although_the_frame_before_it_is_stretched() {
    // MP4 has no holes: the frame before one simply lasts 1.53 s. The caps' frame rate
    // reveals it.
    let video = test_video("mp4");
    let messages = run(&format!(
        "filesrc location={} ! decodebin ! qoemonitor ! fakesink",
        video.display()
    ));
    check_hole_and_freeze(&messages);
}

#[test]
fn stream_time_follows_a_seek_segment() {
    // Played from 1 s on: stream times stay those of the file.
    init();
    let video = test_video("mkv");
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! qoemonitor ! fakesink",
        video.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    pipeline.set_state(gst::State::Paused).unwrap();
    pipeline.state(gst::ClockTime::from_seconds(10)).0.unwrap();
    pipeline
        .seek_simple(
            gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
            gst::ClockTime::from_seconds(1),
        )
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut stalls = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Element(e)
                if e.structure().is_some_and(|s| s.name() == "qoe-stall") =>
            {
                stalls.push(e.structure().unwrap().to_owned())
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(stalls.len(), 2, "{stalls:?}");
    assert_near(
        "stall start (stream time)",
        t(&stalls[1], "start"),
        STALL_START,
        FRAME,
    );
    assert_near(
        "stall running time",
        t(&stalls[1], "running-time"),
        STALL_START + STALL_DURATION - 1_000 * MS,
        FRAME,
    );
}

#[test]
fn gst_launch_prints_the_messages_as_a_user_sees_them() {
    let video = test_video("mkv");
    let location = format!("location={}", video.display());
    let (stdout, _) = gst_launch(&[
        "-m",
        "filesrc",
        &location,
        "!",
        "decodebin",
        "!",
        "qoemonitor",
        "stream-id=lobby-cam",
        "!",
        "fakesink",
    ]);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains("qoe-")).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("qoe-stall, event=(string)start, cause=(string)timestamp-gap")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("qoe-freeze, event=(string)end")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains("stream-id=(string)lobby-cam")),
        "{lines:#?}"
    );
    assert!(stdout.contains("Got EOS from element"), "{stdout}");
}

/// Every accepted raw format: moving pictures never freeze, a still picture does, a black
/// picture is black, and frames are counted.
#[test]
fn every_accepted_format_is_read_without_conversion() {
    let formats = [
        "I420",
        "YV12",
        "NV12",
        "NV21",
        "Y41B",
        "Y42B",
        "Y444",
        "NV16",
        "NV24",
        "A420",
        "GRAY8",
        "YUY2",
        "YVYU",
        "UYVY",
        "VYUY",
        "AYUV",
        "RGB",
        "BGR",
        "RGBA",
        "BGRA",
        "ARGB",
        "ABGR",
        "RGBx",
        "BGRx",
        "xRGB",
        "xBGR",
        "I420_10LE",
        "I422_10LE",
        "Y444_10LE",
        "I420_12LE",
        "P010_10LE",
        "GRAY16_LE",
    ];
    for format in formats {
        for (pattern, frozen, black) in [
            // A ball on gray: the default black background would be a black picture.
            ("ball background-color=0xff808080", false, false),
            ("colors", true, false),
            ("black", true, true),
        ] {
            // Odd sizes exercise strides and subsampled chroma.
            let messages = run(&format!(
                "videotestsrc pattern={pattern} num-buffers=45 ! video/x-raw,format={format},width=322,height=242,framerate=30/1 \
                 ! qoemonitor black-min-duration=1000000000 ! fakesink"
            ));
            let last = named(&messages, "qoe-stats")
                .last()
                .map(|s| (*s).clone())
                .expect("final stats");
            assert_eq!(last.get::<u64>("frames").unwrap(), 45, "{format}");
            assert_eq!(
                last.get::<u64>("freezes").unwrap(),
                frozen as u64,
                "{format} {pattern}"
            );
            // Black in every format, full range (RGB) and limited (YUV) alike.
            assert_eq!(
                last.get::<u64>("blacks").unwrap(),
                black as u64,
                "{format} {pattern}"
            );
        }
    }
}

#[test]
fn heavy_compression_still_is_a_freeze_and_motion_is_not() {
    // CRF 40 leaves coding noise on still pictures; the default threshold must absorb it
    // while moving content stays unfrozen.
    init();
    let path = clip(
        "crf40.mkv",
        "testsrc2=size=640x360:rate=30:duration=6",
        &[
            "-filter_complex",
            "[0]split[a][b];[a][b]freezeframes=first=60:last=119:replace=59[v]",
            "-map",
            "[v]",
            "-c:v",
            "libx264",
            "-crf",
            "40",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let messages = run(&format!(
        "filesrc location={} ! decodebin ! qoemonitor ! fakesink",
        path.display()
    ));
    let freezes = named(&messages, "qoe-freeze");
    assert_eq!(freezes.len(), 2, "{freezes:?}");
    assert_near("freeze start", t(freezes[1], "start"), 59 * FRAME, FRAME);
    assert_near(
        "freeze duration",
        t(freezes[1], "duration"),
        61 * FRAME,
        2 * FRAME,
    );
}

/// What gst-inspect-1.0 tells a user is current: the description names every message the
/// element posts, the origin is no placeholder, and the property enums are plugin API.
#[test]
fn gst_inspect_describes_every_message() {
    init();
    let output = std::process::Command::new("gst-inspect-1.0")
        .env("GST_PLUGIN_PATH", plugin_dir())
        .arg("qoemonitor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    for message in [
        "qoe-stall",
        "qoe-freeze",
        "qoe-black",
        "qoe-rendition",
        "qoe-stats",
        "qoe-quality",
        "qoe-explanation",
    ] {
        assert!(text.contains(message), "{message} not in:\n{text}");
    }
    assert!(
        !text.contains("(soon)") && !text.contains("example.invalid"),
        "{text}"
    );
    for name in [
        "GstQoeExplain",
        "GstQoeExecutionProvider",
        "GstQoeModelPriority",
    ] {
        let ty = gst::glib::Type::from_name(name).unwrap_or_else(|| panic!("{name}"));
        assert!(
            ty.plugin_api_flags().is_some(),
            "{name} is not marked as plugin API"
        );
    }
}
