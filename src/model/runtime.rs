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

/// A scored clip. `score` is `None` when a generated answer holds no number.
#[derive(Debug, Clone, Default)]
pub struct Scored {
    pub score: Option<f64>,
    pub probabilities: Vec<f64>,
    pub level_logits: Vec<f64>,
    pub sequence_length: usize,
    pub keyframe_embeds: Vec<f32>,
    pub motion_feat: Vec<f32>,
    /// CP-LLM: each keyframe's score.
    pub frame_scores: Vec<f32>,
    /// LMM-VQA: the generated answer.
    pub generated_ids: Vec<u32>,
}

/// A VQA²-family bundle opened on ONNX Runtime.
pub struct Scorer {
    bundle: Bundle,
    sessions: HashMap<String, Session>,
    tokenizer: tokenizers::Tokenizer,
    newline: Vec<f32>,
    /// Token id → embedding row, for vocabulary subsets.
    rows: Option<HashMap<u32, i64>>,
    hidden: usize,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("bundle", &self.bundle.manifest.name)
            .field("dir", &self.bundle.dir)
            .field("parts", &self.sessions.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Scorer {
    pub fn open(dir: &Path, threads: usize) -> Result<Scorer, String> {
        let bundle = Bundle::load(dir).map_err(|e| e.0)?;
        let mut sessions = HashMap::new();
        for role in bundle.manifest.parts.keys() {
            sessions.insert(role.clone(), open_session(&bundle, role, threads)?);
        }
        let tokenizer_path = bundle.path(&bundle.manifest.tokenizer);
        let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|e| {
            format!(
                "{}: the tokenizer does not load: {e}",
                tokenizer_path.display()
            )
        })?;
        let newline = match bundle.manifest.constants.contains_key("image_newline") {
            true => bundle.constant_f32("image_newline").map_err(|e| e.0)?,
            false => Vec::new(),
        };
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
        let hidden = bundle
            .manifest
            .decoder
            .as_ref()
            .map_or(0, |d| d.hidden_size);
        Ok(Scorer {
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
        role: &str,
        inputs: Vec<(&'static str, ort::value::DynValue)>,
    ) -> Result<(Vec<i64>, Vec<f32>), String> {
        let session = self
            .sessions
            .get_mut(role)
            .ok_or_else(|| format!("this bundle has no part {role}"))?;
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

    /// Preprocesses `frames` as `role` declares and runs it on their `pixel_values`.
    fn encode_pictures(
        &mut self,
        role: &str,
        frames: &[&RgbImage],
    ) -> Result<(Vec<i64>, Vec<f32>), String> {
        let (shape, data) = self.pixels(role, frames)?;
        self.run(role, vec![("pixel_values", f32_tensor(shape, data)?)])
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

    /// Scores a whole clip of RGB frames at `fps`, as the bundle's `score.mode` says.
    pub fn score(
        &mut self,
        frames: &[RgbImage],
        fps: f64,
        stall: Option<&StallFigures>,
    ) -> Result<Scored, String> {
        match self.bundle.manifest.score.mode.as_str() {
            "level-logits" => self.score_levels(frames, fps, stall),
            "quality-head" => self.score_with_head(frames, fps),
            "generated-number" => self.score_by_answer(frames, fps),
            other => Err(format!(
                "{}: this bundle does not score (score.mode {other})",
                self.bundle.dir.display()
            )),
        }
    }

    /// The embedded VQA² prompt: keyframe and motion blocks between the text segments.
    fn vqa2_sequence(
        &mut self,
        frames: &[RgbImage],
        fps: f64,
        stall: Option<&StallFigures>,
        question: &str,
    ) -> Result<(Vec<f32>, Scored), String> {
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

        let keyframes: Vec<&RgbImage> = kf.iter().map(|&i| &frames[i]).collect();
        let (_, keyframe_embeds) = self.encode_pictures("keyframe_encoder", &keyframes)?;
        let (shape, data) = self.pixels(
            "motion_encoder",
            &mo.iter().map(|&i| &frames[i]).collect::<Vec<_>>(),
        )?;
        // [T, 3, H, W] → [1, 3, T, H, W]
        let (t, hw) = (shape[0] as usize, (shape[2] * shape[3]) as usize);
        let clip = to_channels_first(&data, t, hw);
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
                        .replace("{question}", question)
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
        Ok((
            sequence,
            Scored {
                keyframe_embeds,
                motion_feat,
                ..Default::default()
            },
        ))
    }

    fn score_levels(
        &mut self,
        frames: &[RgbImage],
        fps: f64,
        stall: Option<&StallFigures>,
    ) -> Result<Scored, String> {
        let m = self.bundle.manifest.clone();
        let (mut sequence, stages) = self.vqa2_sequence(frames, fps, stall, "")?;
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
            score: Some(score),
            probabilities,
            level_logits: logits,
            sequence_length: length,
            ..stages
        })
    }

    /// CP-LLM: both encoders on each keyframe, the head's per-frame scores, their mean.
    fn score_with_head(&mut self, frames: &[RgbImage], fps: f64) -> Result<Scored, String> {
        let kf: Vec<&RgbImage> = keyframe_indices(frames.len(), fps)
            .into_iter()
            .map(|i| &frames[i])
            .collect();
        let high = self.encode_pictures("high_level_encoder", &kf)?;
        let low = self.encode_pictures("low_level_encoder", &kf)?;
        let (_, frame_scores) = self.run(
            "quality_head",
            vec![
                ("high_level", f32_tensor(high.0, high.1)?),
                ("low_level", f32_tensor(low.0, low.1)?),
            ],
        )?;
        let score = frame_scores.iter().map(|&v| v as f64).sum::<f64>() / frame_scores.len() as f64;
        Ok(Scored {
            score: Some(score),
            frame_scores,
            ..Default::default()
        })
    }

    /// LMM-VQA: CLIP tokens and per-second SlowFast chunk tokens fused into one visual block,
    /// then a generated answer whose first number is the score.
    fn score_by_answer(&mut self, frames: &[RgbImage], fps: f64) -> Result<Scored, String> {
        let m = self.bundle.manifest.clone();
        let count = m
            .sampling
            .keyframes
            .count
            .ok_or("sampling.keyframes.count is needed for a fused visual block")?;
        let mut kf = keyframe_indices(frames.len(), fps);
        kf.truncate(count);
        let last = *kf.last().expect("at least one keyframe");
        kf.resize(count, last);
        let motion = m
            .sampling
            .motion
            .as_ref()
            .ok_or("this bundle has no motion sampling")?;
        let chunk_frames = motion
            .chunk_frames
            .ok_or("sampling.motion.chunk_frames is missing")?;
        let r = (fps.round() as usize).max(1);
        let chunks: Vec<Vec<usize>> = (0..frames.len())
            .step_by(r)
            .map(|start| {
                (0..chunk_frames)
                    .map(|i| (start + i).min(frames.len() - 1))
                    .collect()
            })
            .collect();
        let keyframes: Vec<&RgbImage> = kf.iter().map(|&i| &frames[i]).collect();
        let (clip_shape, clip_tokens) = self.encode_pictures("keyframe_encoder", &keyframes)?;
        // Each chunk [T, 3, H, W] becomes [3, T, H, W]; stacked [chunks, 3, T, H, W].
        let (mut batch, mut size) = (Vec::new(), (0, 0));
        for chunk in &chunks {
            let (shape, data) = self.pixels(
                "motion_encoder",
                &chunk.iter().map(|&i| &frames[i]).collect::<Vec<_>>(),
            )?;
            batch.extend(to_channels_first(
                &data,
                shape[0] as usize,
                (shape[2] * shape[3]) as usize,
            ));
            size = (shape[2], shape[3]);
        }
        let chunk_shape = vec![chunks.len() as i64, 3, chunk_frames as i64, size.0, size.1];
        let (_, motion_tokens) = self.run(
            "motion_encoder",
            vec![("chunks", f32_tensor(chunk_shape, batch)?)],
        )?;
        let width = motion_tokens.len() / chunks.len();
        // Keyframe i takes the chunk of its second; padded keyframes the last chunk.
        let per_frame: Vec<f32> = (0..count)
            .flat_map(|i| motion_tokens[i.min(chunks.len() - 1) * width..][..width].to_vec())
            .collect();
        let (_, visual) = self.run(
            "visual_projector",
            vec![
                ("clip_tokens", f32_tensor(clip_shape, clip_tokens)?),
                (
                    "motion_tokens",
                    f32_tensor(vec![count as i64, width as i64], per_frame)?,
                ),
            ],
        )?;
        let prompt = m.prompt.as_ref().ok_or("this bundle has no prompt")?;
        let mut sequence = Vec::new();
        for segment in &prompt.segments {
            match segment {
                Segment::Embed { .. } => sequence.extend_from_slice(&visual),
                Segment::Text { text } => {
                    let ids = self
                        .tokenizer
                        .encode(text.as_str(), false)
                        .map_err(|e| e.to_string())?
                        .get_ids()
                        .to_vec();
                    sequence.extend(self.embed(&ids)?);
                }
            }
        }
        let generated_ids = self.greedy(sequence, m.score.max_new_tokens.unwrap_or(8), None)?;
        let text = self
            .tokenizer
            .decode(&generated_ids, false)
            .map_err(|e| e.to_string())?;
        let [low, high] = m.score.range.unwrap_or([0.0, 1.0]);
        let score = first_number(&text).map(|v| ((v - low) / (high - low)).clamp(0.0, 1.0));
        Ok(Scored {
            score,
            generated_ids,
            ..Default::default()
        })
    }

    /// A greedy answer about a clip to `question` (Assistant bundles): token ids and text.
    pub fn explain(
        &mut self,
        frames: &[RgbImage],
        fps: f64,
        question: &str,
        max_new_tokens: usize,
        step_logits: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<(Vec<u32>, String), String> {
        let (sequence, _) = self.vqa2_sequence(frames, fps, None, question)?;
        let ids = self.greedy(sequence, max_new_tokens, step_logits)?;
        let text = self
            .tokenizer
            .decode(&ids, true)
            .map_err(|e| e.to_string())?;
        Ok((ids, text))
    }

    /// Greedy decoding with the KV cache: a prefill, then one token per step, until an end
    /// token or `max_new_tokens`. Each step's logits go to `step_logits` if given.
    pub fn greedy(
        &mut self,
        sequence: Vec<f32>,
        max_new_tokens: usize,
        mut step_logits: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<Vec<u32>, String> {
        let decoder = self
            .bundle
            .manifest
            .decoder
            .clone()
            .ok_or("this bundle has no decoder")?;
        let eos = decoder
            .generation
            .map(|g| g.eos_token_ids)
            .unwrap_or_default();
        let part = self
            .bundle
            .part("decoder_generate")
            .map_err(|e| e.0)?
            .clone();
        let past_names: Vec<String> = part
            .inputs
            .iter()
            .filter(|i| i.name.starts_with("past_key_values."))
            .map(|i| i.name.clone())
            .collect();
        let empty = vec![1, decoder.kv_heads as i64, 0, decoder.head_dim as i64];
        let mut past: Vec<(Vec<i64>, Vec<f32>)> = past_names
            .iter()
            .map(|_| (empty.clone(), Vec::new()))
            .collect();
        let row_to_token: Option<HashMap<i64, u32>> = self
            .rows
            .as_ref()
            .map(|m| m.iter().map(|(t, r)| (*r, *t)).collect());
        let (mut embeds, mut start, mut out) = (sequence, 0usize, Vec::new());
        for _ in 0..max_new_tokens {
            let new = embeds.len() / self.hidden;
            let total = start + new;
            let mut inputs: Vec<(String, ort::value::DynValue)> = vec![
                (
                    "inputs_embeds".into(),
                    f32_tensor(vec![1, new as i64, self.hidden as i64], embeds)?,
                ),
                (
                    "attention_mask".into(),
                    i64_tensor(vec![1, total as i64], vec![1; total])?,
                ),
                (
                    "position_ids".into(),
                    i64_tensor(vec![1, new as i64], (start as i64..total as i64).collect())?,
                ),
            ];
            for (name, (shape, data)) in past_names.iter().zip(past.drain(..)) {
                inputs.push((name.clone(), f32_tensor(shape, data)?));
            }
            let (last, present) = {
                let session = self
                    .sessions
                    .get_mut("decoder_generate")
                    .expect("the part exists");
                let outputs = session
                    .run(inputs)
                    .map_err(|e| format!("decoder_generate: {e}"))?;
                let (shape, logits) = outputs[0]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| e.to_string())?;
                let vocab = shape[2] as usize;
                let last = logits[(new - 1) * vocab..][..vocab].to_vec();
                let mut present = Vec::with_capacity(past_names.len());
                for k in 0..past_names.len() {
                    let (shape, data) = outputs[1 + k]
                        .try_extract_tensor::<f32>()
                        .map_err(|e| e.to_string())?;
                    present.push((shape.to_vec(), data.to_vec()));
                }
                (last, present)
            };
            // The first maximum, as numpy's argmax takes it.
            let row = last
                .iter()
                .enumerate()
                .fold(0, |best, (i, v)| if *v > last[best] { i } else { best });
            if let Some(steps) = step_logits.as_deref_mut() {
                steps.push(last);
            }
            let token = row_to_token
                .as_ref()
                .map_or(row as u32, |m| m[&(row as i64)]);
            if eos.contains(&token) {
                break;
            }
            out.push(token);
            past = present;
            embeds = self.embed(&[token])?;
            start = total;
        }
        Ok(out)
    }
}

fn f32_tensor(shape: Vec<i64>, data: Vec<f32>) -> Result<ort::value::DynValue, String> {
    Tensor::from_array((shape, data))
        .map(|t| t.into_dyn())
        .map_err(|e| e.to_string())
}

fn i64_tensor(shape: Vec<i64>, data: Vec<i64>) -> Result<ort::value::DynValue, String> {
    Tensor::from_array((shape, data))
        .map(|t| t.into_dyn())
        .map_err(|e| e.to_string())
}

/// [T, 3, plane] frames → [3, T, plane] channels.
fn to_channels_first(data: &[f32], frames: usize, plane: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for f in 0..frames {
        for c in 0..3 {
            out[(c * frames + f) * plane..][..plane]
                .copy_from_slice(&data[(f * 3 + c) * plane..][..plane]);
        }
    }
    out
}

/// The first decimal number in `text` ("4", "3.25").
fn first_number(text: &str) -> Option<f64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let rest = &text[start..];
    let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut end = digits(rest);
    if rest[end..].starts_with('.') && rest[end + 1..].starts_with(|c: char| c.is_ascii_digit()) {
        end += 1 + digits(&rest[end + 1..]);
    }
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_rules() {
        assert_eq!(keyframe_indices(20, 8.0), vec![0, 8, 16]);
        assert_eq!(keyframe_indices(5, 30.0), vec![0]);
        assert_eq!(keyframe_indices(60, 29.97), vec![0, 30]);
        assert_eq!(motion_indices(23, 1, 1, 4), (0..20).collect::<Vec<_>>());
        assert_eq!(
            motion_indices(70, 8, 8, 4),
            vec![0, 8, 16, 24, 32, 40, 48, 56]
        );
    }

    #[test]
    fn numbers_in_answers() {
        assert_eq!(first_number("The score is 4.5."), Some(4.5));
        assert_eq!(first_number("quality8 quality"), Some(8.0));
        assert_eq!(first_number("3."), Some(3.0));
        assert_eq!(first_number("none"), None);
    }
}

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Cpu,
    Cuda,
    TensorRt,
    /// TensorRT, else CUDA, else CPU: the first that starts.
    Auto,
}

impl std::str::FromStr for Provider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Provider::Cpu),
            "cuda" => Ok(Provider::Cuda),
            "tensorrt" => Ok(Provider::TensorRt),
            "auto" => Ok(Provider::Auto),
            other => Err(format!(
                "execution provider \"{other}\" is not one of cpu, cuda, tensorrt, auto"
            )),
        }
    }
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
            Provider::Auto => "auto",
        }
    }

    /// The provider that will actually run. This build runs on the CPU only: an explicit
    /// GPU provider is an error that says so (never a silent fallback), and `auto` settles
    /// on the CPU.
    pub fn resolve(self) -> Result<Provider, String> {
        match self {
            Provider::Cpu | Provider::Auto => Ok(Provider::Cpu),
            gpu => Err(format!(
                "execution provider {} is not available: this build of gst-qoe runs ONNX Runtime on the CPU only \
                 (GPU providers are not implemented yet)",
                gpu.as_str()
            )),
        }
    }
}

/// One scorer per bundle and provider in the process, shared by every element that uses it.
pub type SharedScorer = std::sync::Arc<std::sync::Mutex<Scorer>>;

/// Open scorers: bundle folder (canonical), provider, and a handle that does not keep it alive.
struct SharedEntry {
    dir: PathBuf,
    provider: Provider,
    scorer: std::sync::Weak<std::sync::Mutex<Scorer>>,
}

static SHARED: std::sync::Mutex<Vec<SharedEntry>> = std::sync::Mutex::new(Vec::new());

/// The process's scorer for the bundle in `dir` on `provider`, opened on first use (with
/// `threads` intra-op threads) and shared while anyone holds it. Returns it with the provider
/// actually in use.
pub fn shared_scorer(
    dir: &Path,
    provider: Provider,
    threads: usize,
) -> Result<(SharedScorer, Provider), String> {
    let provider = provider.resolve()?;
    let key = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut shared = SHARED.lock().unwrap();
    shared.retain(|entry| entry.scorer.strong_count() > 0);
    if let Some(scorer) = shared
        .iter()
        .find(|entry| entry.dir == key && entry.provider == provider)
        .and_then(|entry| entry.scorer.upgrade())
    {
        return Ok((scorer, provider));
    }
    let scorer = std::sync::Arc::new(std::sync::Mutex::new(Scorer::open(&key, threads)?));
    shared.push(SharedEntry {
        dir: key,
        provider,
        scorer: std::sync::Arc::downgrade(&scorer),
    });
    Ok((scorer, provider))
}
