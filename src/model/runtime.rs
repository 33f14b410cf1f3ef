// SPDX-License-Identifier: MPL-2.0
//! Scoring with a bundle on ONNX Runtime (the `ort` crate, loading the runtime library at
//! run time): the Rust twin of `onnx/qoe_onnx/ort_pipeline.py`, checked against the committed
//! golden outputs of the PyTorch reference.
//!
//! Covers VQA²-family bundles (`score.mode` `level-logits`) on whole clips. Not wired into the
//! element yet: rolling windows, feature reuse, the worker thread and the other families'
//! score modes are still to come.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

use super::bundle::{Bundle, BundleError, Segment};
use crate::preprocess::{RgbImage, normalise_into, resize_bicubic};

/// The process's one ONNX Runtime environment.
static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Where the ONNX Runtime library is: `ORT_DYLIB_PATH`.
pub fn library_path() -> Result<PathBuf, String> {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(path) if Path::new(&path).is_file() => Ok(PathBuf::from(path)),
        Some(path) => Err(format!(
            "ORT_DYLIB_PATH={} is not a file",
            Path::new(&path).display()
        )),
        None => Err(
            "ORT_DYLIB_PATH is not set: point it at libonnxruntime.so (the onnxruntime wheel's \
                     onnxruntime/capi/libonnxruntime.so.1.31.1)"
                .into(),
        ),
    }
}

/// The ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static Environment, String> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = library_path()?;
            ort::init_from(&path)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?
                .with_name("gst-qoe")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
        })
        .as_ref()
        .map_err(|e| e.clone())
}

fn open_session(bundle: &Bundle, role: &str, threads: usize) -> Result<Session, String> {
    let part = bundle.part(role).map_err(|e| e.0)?;
    let path = bundle.path(&part.file);
    let session = Session::builder(environment()?)
        .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
        .and_then(|mut b| b.commit_from_file(&path))
        .map_err(|e| format!("{}: not a usable ONNX model: {e}", path.display()))?;
    let names = |outlets: &[ort::value::Outlet]| {
        outlets
            .iter()
            .map(|o| o.name().to_owned())
            .collect::<Vec<_>>()
    };
    let declared = |specs: &[super::bundle::TensorSpec]| {
        specs.iter().map(|s| s.name.clone()).collect::<Vec<_>>()
    };
    for (what, got, want) in [
        ("inputs", names(session.inputs()), declared(&part.inputs)),
        ("outputs", names(session.outputs()), declared(&part.outputs)),
    ] {
        if got != want {
            return Err(format!(
                "{}: {what} are {got:?}, the manifest declares {want:?}",
                path.display()
            ));
        }
    }
    Ok(session)
}

/// The first frame of every (possibly partial) second; `[0]` for clips under a second.
pub fn keyframe_indices(frames: usize, fps: f64) -> Vec<usize> {
    let r = (fps.round() as usize).max(1);
    if frames >= r {
        (0..frames).step_by(r).collect()
    } else {
        vec![0]
    }
}

/// All frames, or every `stride`-th after trimming to `trim_before`, trimmed to a `multiple`.
pub fn motion_indices(
    frames: usize,
    stride: usize,
    trim_before: usize,
    multiple: usize,
) -> Vec<usize> {
    let idx: Vec<usize> = (0..frames / trim_before * trim_before)
        .step_by(stride.max(1))
        .collect();
    let keep = idx.len() / multiple * multiple;
    idx[..keep].to_vec()
}

/// The figures of a streaming prompt's stall sentence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StallFigures {
    pub count: u64,
    pub total: f64,
    pub durations: Vec<f64>,
    pub initial: f64,
    pub ratio: f64,
    pub since: f64,
    pub sequence: Vec<u8>,
}

/// Fills a bundle's stall template (`prompt.stall_text`), as the reference does.
pub fn stall_text(
    format: &str,
    templates: &std::collections::BTreeMap<String, String>,
    s: &StallFigures,
) -> String {
    let Some(template) = templates.get(format) else {
        return String::new();
    };
    let durations = if s.durations.is_empty() {
        "none".to_owned()
    } else {
        s.durations
            .iter()
            .map(|d| format!("{d:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sequence = s
        .sequence
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    template
        .replace("{count}", &s.count.to_string())
        .replace("{total}", &format!("{:.1}", s.total))
        .replace("{durations}", &durations)
        .replace("{initial}", &format!("{:.1}", s.initial))
        .replace("{ratio}", &format!("{:.1}", 100.0 * s.ratio))
        .replace("{since}", &format!("{:.1}", s.since))
        .replace("{sequence}", &sequence)
}

/// A scored clip.
#[derive(Debug, Clone)]
pub struct Scored {
    pub score: f64,
    pub probabilities: Vec<f64>,
    pub level_logits: Vec<f64>,
    pub sequence_length: usize,
    pub keyframe_embeds: Vec<f32>,
    pub motion_feat: Vec<f32>,
}

/// A VQA²-family bundle opened on ONNX Runtime.
pub struct Vqa2Scorer {
    bundle: Bundle,
    sessions: HashMap<&'static str, Session>,
    tokenizer: tokenizers::Tokenizer,
    newline: Vec<f32>,
    /// Token id → embedding row, for vocabulary subsets.
    rows: Option<HashMap<u32, i64>>,
    hidden: usize,
}

const PARTS: [&str; 5] = [
    "keyframe_encoder",
    "motion_encoder",
    "motion_projector",
    "token_embedding",
    "decoder_score",
];

impl Vqa2Scorer {
    pub fn open(dir: &Path, threads: usize) -> Result<Vqa2Scorer, String> {
        let bundle = Bundle::load(dir).map_err(|e| e.0)?;
        if bundle.manifest.score.mode != "level-logits" {
            return Err(format!(
                "{}: score.mode {} is not supported here yet",
                dir.display(),
                bundle.manifest.score.mode
            ));
        }
        let mut sessions = HashMap::new();
        for role in PARTS {
            sessions.insert(role, open_session(&bundle, role, threads)?);
        }
        let tokenizer_path = bundle.path(&bundle.manifest.tokenizer);
        let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|e| {
            format!(
                "{}: the tokenizer does not load: {e}",
                tokenizer_path.display()
            )
        })?;
        let newline = bundle.constant_f32("image_newline").map_err(|e| e.0)?;
        let rows = match &bundle.manifest.vocabulary {
            Some(v) if v.rows == "subset" => {
                let name = v
                    .rows_constant
                    .as_deref()
                    .ok_or_else(|| BundleError("vocabulary.rows_constant missing".into()).0)?;
                let ids = bundle.constant_i64(name).map_err(|e| e.0)?;
                Some(
                    ids.iter()
                        .enumerate()
                        .map(|(row, id)| (*id as u32, row as i64))
                        .collect(),
                )
            }
            _ => None,
        };
        let hidden = newline.len();
        Ok(Vqa2Scorer {
            bundle,
            sessions,
            tokenizer,
            newline,
            rows,
            hidden,
        })
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    fn run(
        &mut self,
        role: &'static str,
        inputs: Vec<(&'static str, ort::value::DynValue)>,
    ) -> Result<(Vec<i64>, Vec<f32>), String> {
        let session = self.sessions.get_mut(role).expect("opened");
        let outputs = session.run(inputs).map_err(|e| format!("{role}: {e}"))?;
        let (shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("{role}: {e}"))?;
        Ok((shape.to_vec(), data.to_vec()))
    }

    fn pixels(&self, role: &str, frames: &[&RgbImage]) -> Result<(Vec<i64>, Vec<f32>), String> {
        let pre = self.bundle.preprocess(role).map_err(|e| e.0)?;
        let [w, h] = pre.size;
        let mut data = Vec::with_capacity(frames.len() * 3 * w * h);
        for frame in frames {
            normalise_into(&resize_bicubic(frame, w, h), pre.mean, pre.std, &mut data);
        }
        Ok((vec![frames.len() as i64, 3, h as i64, w as i64], data))
    }

    fn embed(&mut self, ids: &[u32]) -> Result<Vec<f32>, String> {
        let rows: Vec<i64> = match &self.rows {
            None => ids.iter().map(|&i| i as i64).collect(),
            Some(map) => ids
                .iter()
                .map(|i| {
                    map.get(i).copied().ok_or_else(|| {
                        format!("token {i} is not in this bundle's vocabulary subset")
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let n = rows.len() as i64;
        let input = Tensor::from_array((vec![n], rows))
            .map_err(|e| e.to_string())?
            .into_dyn();
        Ok(self.run("token_embedding", vec![("rows", input)])?.1)
    }

    /// Scores a whole clip of RGB frames at `fps`.
    pub fn score(
        &mut self,
        frames: &[RgbImage],
        fps: f64,
        stall: Option<&StallFigures>,
    ) -> Result<Scored, String> {
        let m = self.bundle.manifest.clone();
        let motion = m
            .sampling
            .motion
            .as_ref()
            .ok_or("this bundle has no motion sampling")?;
        let kf = keyframe_indices(frames.len(), fps);
        let mo = motion_indices(
            frames.len(),
            motion.stride,
            motion.trim_before_stride,
            motion.multiple,
        );
        if mo.is_empty() {
            return Err(format!(
                "{} frames give no motion frames under this bundle's sampling",
                frames.len()
            ));
        }
        let f32_tensor = |shape: Vec<i64>, data: Vec<f32>| {
            Tensor::from_array((shape, data))
                .map(|t| t.into_dyn())
                .map_err(|e| e.to_string())
        };

        let (shape, data) = self.pixels(
            "keyframe_encoder",
            &kf.iter().map(|&i| &frames[i]).collect::<Vec<_>>(),
        )?;
        let (_, keyframe_embeds) = self.run(
            "keyframe_encoder",
            vec![("pixel_values", f32_tensor(shape, data)?)],
        )?;
        let (shape, data) = self.pixels(
            "motion_encoder",
            &mo.iter().map(|&i| &frames[i]).collect::<Vec<_>>(),
        )?;
        // [T, 3, H, W] → [1, 3, T, H, W]
        let (t, hw) = (shape[0] as usize, (shape[2] * shape[3]) as usize);
        let mut clip = vec![0f32; data.len()];
        for f in 0..t {
            for c in 0..3 {
                clip[(c * t + f) * hw..][..hw].copy_from_slice(&data[(f * 3 + c) * hw..][..hw]);
            }
        }
        let (_, motion_feat) = self.run(
            "motion_encoder",
            vec![(
                "frames",
                f32_tensor(vec![1, 3, t as i64, shape[2], shape[3]], clip)?,
            )],
        )?;
        let positions = Tensor::from_array((vec![t as i64], (0..t as i64).collect::<Vec<_>>()))
            .map_err(|e| e.to_string())?
            .into_dyn();
        let feat_len = motion_feat.len() / t;
        let (_, motion_embeds) = self.run(
            "motion_projector",
            vec![
                (
                    "motion_feat",
                    f32_tensor(vec![t as i64, feat_len as i64], motion_feat.clone())?,
                ),
                ("positions", positions),
            ],
        )?;

        let prompt = m.prompt.as_ref().ok_or("this bundle has no prompt")?;
        let stall_sentence = stall_text(
            &prompt.stall_format,
            &prompt.stall_text,
            &stall.cloned().unwrap_or_default(),
        );
        let mut sequence: Vec<f32> = Vec::new();
        for segment in &prompt.segments {
            match segment {
                Segment::Embed { embed } => match embed.as_str() {
                    "keyframes" => {
                        sequence.extend_from_slice(&keyframe_embeds);
                        sequence.extend_from_slice(&self.newline);
                    }
                    "motion" => sequence.extend_from_slice(&motion_embeds),
                    other => return Err(format!("prompt block \"{other}\" is not known")),
                },
                Segment::Text { text } => {
                    let filled = text
                        .replace("{K}", &kf.len().to_string())
                        .replace("{T}", &mo.len().to_string())
                        .replace("{question}", "")
                        .replace("{stall}", &stall_sentence);
                    let ids = self
                        .tokenizer
                        .encode(filled.as_str(), false)
                        .map_err(|e| e.to_string())?
                        .get_ids()
                        .to_vec();
                    if !ids.is_empty() {
                        let embeds = self.embed(&ids)?;
                        sequence.extend_from_slice(&embeds);
                    }
                }
            }
        }
        let length = sequence.len() / self.hidden;
        let position = m.score.logit_position.unwrap_or(-1);
        // Under a causal mask nothing after the logit position affects it.
        let keep = (length as i64 + position + 1).max(1) as usize;
        sequence.truncate(keep * self.hidden);
        let (_, logits) = self.run(
            "decoder_score",
            vec![(
                "inputs_embeds",
                f32_tensor(vec![1, keep as i64, self.hidden as i64], sequence)?,
            )],
        )?;
        let logits: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = exp.iter().sum();
        let probabilities: Vec<f64> = exp.iter().map(|e| e / total).collect();
        let score = probabilities
            .iter()
            .zip(&m.score.levels)
            .map(|(p, level)| p * level.weight)
            .sum();
        Ok(Scored {
            score,
            probabilities,
            level_logits: logits,
            sequence_length: length,
            keyframe_embeds,
            motion_feat,
        })
    }
}
