// SPDX-License-Identifier: MPL-2.0
//! A bundle opened on ONNX Runtime: the Rust twin of `onnx/qoe_onnx/ort_pipeline.py`, checked
//! against the committed golden outputs of the PyTorch reference.
//!
//! This module holds what every family shares: the sessions, running a graph, resizing and
//! normalising pictures, embedding prompt text, and the dispatch on the bundle's [`Family`]
//! and [`ScoreMode`]. Each family's own stages live in [`crate::vqa2`], [`crate::lmm_vqa`] and
//! [`crate::cp_llm`]; greedy generation in [`crate::generate`].
//!
//! Every stage is its own method so that the element can cache features per keyframe and per
//! frame ([`crate::stream`]) and run only the decoder per window; [`Scorer::score`] chains the
//! same stages over a whole clip, which is what the golden tests check.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use qoe_core::sampling::SECOND_TOLERANCE;
use qoe_core::stall::WindowStalls;
use qoe_core::time::{Nanos, SECOND};

use crate::batch::{BatchCounts, Batcher};
use crate::bundle::{
    Bundle, Family, MANIFEST, PartName, ResizeFilter, Role, ScoreMode, VocabularyRows,
};
use crate::error::{Error, Result};
use crate::preprocess::{RgbImage, normalise_into, resize_bicubic};
use crate::runner::{Graphs, Input};
use crate::session::{Provider, SessionOptions, open_all};
use crate::vqa2::PrefillRow;

/// A tensor's shape and values.
pub(crate) type Values = (Vec<i64>, Vec<f32>);

/// A prompt opening's embeddings and the decoder's past for it.
type PrefixPast = (Vec<f32>, Arc<Vec<Values>>);

/// Prompt texts kept embedded; the stall sentence varies, so the cache is emptied when full.
const TEXT_CACHE_ENTRIES: usize = 64;

/// A scored clip. `score` is `None` when a generated answer holds no number. For an
/// ensemble, `probabilities` are the members' mean, `level_logits` their logarithms, and the
/// embeddings and motion features the bundle's own model's.
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

/// Features of one window, assembled from caches (see [`crate::stream`]). For an ensemble
/// each item holds every model's block, one after another in [`Bundle::models`] order.
#[derive(Debug, Clone, Default)]
pub struct WindowFeatures {
    /// Per keyframe: vision tokens (VQA²), CLIP tokens (LMM-VQA) or the frame's score
    /// (CP-LLM, one value).
    pub keyframes: Vec<Arc<Vec<f32>>>,
    /// VQA²: per-frame motion features, concatenated. LMM-VQA: one motion token per keyframe.
    pub motion: Vec<Arc<Vec<f32>>>,
    /// The window's stalls, for streaming prompts.
    pub stall: Option<WindowStalls>,
}

/// Faults a test asks for (cargo feature `test-faults`, which release builds never enable):
/// a slow or failing model without a broken bundle.
#[cfg(feature = "test-faults")]
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Every window's scoring takes this much longer.
    pub window_delay: Option<std::time::Duration>,
    /// Windows from this number on (1 is the first scored by this scorer) fail.
    pub fail_from_window: Option<u64>,
    /// Window this number panics (a bug in the model code, as a last line of defence).
    pub panic_at_window: Option<u64>,
    /// A decoder call fails when one of its rows holds more tokens than this: one stream's
    /// bad window inside a batch.
    pub fail_rows_over: Option<usize>,
}

/// A model bundle opened on ONNX Runtime. Every method takes `&self`: each graph has its own
/// lock, so the encoders of one stream and the decoder of another run at the same time.
pub struct Scorer {
    pub(crate) bundle: Bundle,
    provider: Provider,
    /// Every graph of the bundle, local or remote.
    graphs: Graphs,
    /// The models scored ([`Bundle::models`]): `[None]` but for ensembles.
    pub(crate) models: Vec<Option<String>>,
    pub(crate) tokenizer: tokenizers::Tokenizer,
    pub(crate) newline: Vec<f32>,
    /// Token id → embedding row, for vocabulary subsets.
    pub(crate) rows: Option<HashMap<u32, i64>>,
    pub(crate) hidden: usize,
    /// Embedded prompt text by text: constant segments are embedded once per process.
    text_cache: Mutex<HashMap<String, Arc<Vec<f32>>>>,
    /// The decoder's keys and values for the prompt's constant opening (the text before the
    /// first embedded block) with that opening's embeddings, for decoders that take a past:
    /// each window then prefills only its own tokens.
    pub(crate) prefix_cache: Mutex<Option<PrefixPast>>,
    /// Gathers the decoder prefills of every stream into batched calls, where the decoder
    /// batches and batching is on.
    pub(crate) prefills: Option<Batcher<PrefillRow, Vec<f32>>>,
    /// Whether `decoder_score` takes an `attention_mask` (batching decoders do).
    pub(crate) decoder_takes_mask: bool,
    #[cfg(feature = "test-faults")]
    pub(crate) faults: Faults,
    #[cfg(feature = "test-faults")]
    windows: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("bundle", &self.bundle.manifest.name)
            .field("dir", &self.bundle.dir)
            .field("provider", &self.provider)
            .field("parts", &self.graphs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Scorer {
    /// Opens every graph of the bundle in `dir` on the CPU with `threads` intra-op threads.
    pub fn open(dir: &Path, threads: usize) -> Result<Scorer> {
        Self::open_with(
            dir,
            &SessionOptions {
                threads,
                ..Default::default()
            },
        )
    }

    /// Opens every graph of the bundle in `dir` as `options` say. `auto` tries TensorRT,
    /// then CUDA, then the CPU; an explicit provider that cannot start is an error.
    pub fn open_with(dir: &Path, options: &SessionOptions) -> Result<Scorer> {
        let bundle = Bundle::load(dir)?;
        check_preprocess(&bundle)?;
        let (provider, graphs) = open_all(&bundle, options)?;
        let tokenizer_path = bundle.path(&bundle.manifest.tokenizer);
        let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|e| {
            Error::Bundle(format!(
                "{}: the tokenizer does not load: {e}",
                tokenizer_path.display()
            ))
        })?;
        let newline = match bundle.manifest.constants.contains_key("image_newline") {
            true => bundle.constant_f32("image_newline")?,
            false => Vec::new(),
        };
        if newline.iter().any(|v| !v.is_finite()) {
            return Err(Error::Bundle(format!(
                "{}: constants.image_newline holds values that are not finite numbers",
                bundle.dir.join(MANIFEST).display()
            )));
        }
        let rows = match &bundle.manifest.vocabulary {
            Some(v) if v.rows == VocabularyRows::Subset => {
                let name = v.rows_constant.as_deref().ok_or_else(|| {
                    Error::Bundle(format!(
                        "{}: vocabulary.rows_constant missing",
                        bundle.dir.join(MANIFEST).display()
                    ))
                })?;
                let ids = bundle.constant_i64(name)?;
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
        let decoder_score = bundle
            .manifest
            .parts
            .get(&PartName::own(Role::DecoderScore));
        let decoder_takes_mask =
            decoder_score.is_some_and(|p| p.inputs.iter().any(|i| i.name == "attention_mask"));
        let prefills = decoder_score
            .filter(|p| p.batch && options.batch.max_rows > 1)
            .map(|_| Batcher::new(options.batch));
        Ok(Scorer {
            prefills,
            decoder_takes_mask,
            models: bundle.models(),
            bundle,
            provider,
            graphs,
            tokenizer,
            newline,
            rows,
            hidden,
            text_cache: Mutex::new(HashMap::new()),
            prefix_cache: Mutex::new(None),
            #[cfg(feature = "test-faults")]
            faults: Faults::default(),
            #[cfg(feature = "test-faults")]
            windows: Default::default(),
        })
    }

    /// [`Scorer::open_with`], then `faults` on every window scored (tests only).
    #[cfg(feature = "test-faults")]
    pub fn open_with_faults(
        dir: &Path,
        options: &SessionOptions,
        faults: Faults,
    ) -> Result<Scorer> {
        Ok(Scorer {
            faults,
            ..Self::open_with(dir, options)?
        })
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The provider the sessions run on (never `Auto`).
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// How this bundle turns features into a score.
    pub fn mode(&self) -> ScoreMode {
        self.bundle.manifest.score.mode
    }

    /// Which family the bundle is, and so which features its graphs compute.
    pub fn family(&self) -> Family {
        self.bundle.manifest.family
    }

    /// How far into each second of stream time a keyframe is due (the manifest's
    /// `sampling.keyframes.rule`).
    pub fn keyframe_phase(&self) -> Nanos {
        self.bundle.manifest.sampling.keyframes.rule.phase()
    }

    /// Which of a stream's frames feed the motion graphs: every `n`-th (from the first) for
    /// `Some(n)`: the manifest's stride for a per-frame motion branch, 1 for a chunked one;
    /// `None` where there is no motion branch.
    pub fn motion_stride(&self) -> Option<u64> {
        match self.family() {
            Family::CpLlm => None,
            Family::LmmVqa => Some(1),
            Family::Vqa2 => Some(
                self.bundle
                    .manifest
                    .sampling
                    .motion
                    .as_ref()
                    .filter(|m| m.mode == crate::bundle::MotionMode::Frames)
                    .map_or(1, |m| m.stride.max(1)) as u64,
            ),
        }
    }

    /// Runs picture or motion graph `role` of every model (one, but for ensembles) with
    /// `inputs`, returning `items` blocks, each every model's output for that item in turn.
    pub(crate) fn run_models(
        &self,
        role: Role,
        items: usize,
        inputs: impl Fn() -> Result<Vec<(&'static str, Input)>>,
    ) -> Result<Vec<Arc<Vec<f32>>>> {
        if self.models.len() == 1 {
            return Ok(split(self.run(&PartName::own(role), inputs()?)?.1, items));
        }
        let mut blocks = vec![Vec::new(); items];
        for model in &self.models {
            let (_, out) = self.run(&PartName::of(role, model.as_deref()), inputs()?)?;
            for (block, item) in blocks.iter_mut().zip(split(out, items)) {
                block.extend_from_slice(&item);
            }
        }
        Ok(blocks.into_iter().map(Arc::new).collect())
    }

    /// Model `model`'s blocks of items of [`WindowFeatures`], one after another.
    pub(crate) fn model_blocks(&self, items: &[Arc<Vec<f32>>], model: usize) -> Vec<f32> {
        let n = self.models.len();
        items
            .iter()
            .flat_map(|item| {
                let each = item.len() / n;
                &item[model * each..(model + 1) * each]
            })
            .copied()
            .collect()
    }

    /// Runs graph `name`; returns its first output.
    pub(crate) fn run(
        &self,
        name: &PartName,
        inputs: Vec<(&'static str, Input)>,
    ) -> Result<Values> {
        let inputs = inputs.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
        let mut outputs = self.run_all(name, inputs)?;
        Ok(outputs.swap_remove(0))
    }

    /// Runs graph `name`; returns all its outputs.
    pub(crate) fn run_all(
        &self,
        name: &PartName,
        inputs: Vec<(String, Input)>,
    ) -> Result<Vec<Values>> {
        self.graphs
            .get(name)
            .ok_or_else(|| Error::Bundle(format!("this bundle has no part {name}")))?
            .run(inputs)
    }

    /// `image` resized as graph `role` expects (the manifest's size and filter).
    pub fn prepare(&self, role: Role, image: &RgbImage) -> Result<RgbImage> {
        let [w, h] = self.bundle.preprocess(role)?.size;
        Ok(if image.width == w && image.height == h {
            image.clone()
        } else {
            resize_bicubic(image, w, h)
        })
    }

    /// Normalised pixels of prepared frames, `[N, 3, H, W]`.
    pub(crate) fn pixels(&self, role: Role, prepared: &[&RgbImage]) -> Result<Values> {
        let pre = self.bundle.preprocess(role)?;
        let [w, h] = pre.size;
        let mut data = Vec::with_capacity(prepared.len() * 3 * w * h);
        for frame in prepared {
            if (frame.width, frame.height) != (w, h) {
                return Err(Error::Input(format!(
                    "{role}: a {}×{} picture where {w}×{h} is expected",
                    frame.width, frame.height
                )));
            }
            normalise_into(frame, pre.mean, pre.std, &mut data);
        }
        Ok((vec![prepared.len() as i64, 3, h as i64, w as i64], data))
    }

    /// Runs picture encoder `role` on prepared frames: one output block per frame.
    pub fn encode_pictures(
        &self,
        role: Role,
        prepared: &[&RgbImage],
    ) -> Result<Vec<Arc<Vec<f32>>>> {
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let (shape, data) = self.pixels(role, prepared)?;
        self.run_models(role, prepared.len(), || {
            Ok(vec![(
                "pixel_values",
                f32_tensor(shape.clone(), data.clone()),
            )])
        })
    }

    /// Embeds prompt text, from the cache when it was embedded before.
    pub(crate) fn embed_text(&self, text: &str) -> Result<Arc<Vec<f32>>> {
        if let Some(hit) = self.text_cache.lock().unwrap().get(text) {
            return Ok(hit.clone());
        }
        let ids = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Input(format!("cannot tokenise the prompt: {e}")))?
            .get_ids()
            .to_vec();
        let embeds = Arc::new(if ids.is_empty() {
            Vec::new()
        } else {
            self.embed(&ids)?
        });
        let mut cache = self.text_cache.lock().unwrap();
        if cache.len() >= TEXT_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(text.to_owned(), embeds.clone());
        Ok(embeds)
    }

    pub(crate) fn embed(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let rows: Vec<i64> = match &self.rows {
            None => ids.iter().map(|&i| i as i64).collect(),
            Some(map) => ids
                .iter()
                .map(|i| {
                    map.get(i).copied().ok_or_else(|| {
                        Error::Input(format!(
                            "token {i} is not in this bundle's vocabulary subset"
                        ))
                    })
                })
                .collect::<Result<_>>()?,
        };
        let n = rows.len() as i64;
        Ok(self
            .run(
                &PartName::own(Role::TokenEmbedding),
                vec![("rows", i64_tensor(vec![n], rows))],
            )?
            .1)
    }

    /// Decodes generated token ids to text.
    pub(crate) fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special)
            .map_err(|e| Error::Input(format!("cannot decode the answer's tokens: {e}")))
    }

    /// Scores a whole clip of RGB frames at `fps`, as the bundle's `score.mode` says: the
    /// reference's computation, through the same stages the element caches.
    pub fn score(
        &self,
        frames: &[RgbImage],
        fps: f64,
        stall: Option<&WindowStalls>,
    ) -> Result<Scored> {
        let features = self.clip_features(frames, fps)?;
        let features = WindowFeatures {
            stall: stall.cloned(),
            ..features
        };
        self.score_window(&features)
    }

    /// The features of a whole clip, computed in one go.
    pub fn clip_features(&self, frames: &[RgbImage], fps: f64) -> Result<WindowFeatures> {
        match self.family() {
            Family::Vqa2 => self.vqa2_clip_features(frames, fps),
            Family::LmmVqa => self.lmm_vqa_clip_features(frames, fps),
            Family::CpLlm => self.cp_llm_clip_features(frames, fps),
        }
    }

    /// `frames[i]` for each of `indices`, resized for graph `role`.
    pub(crate) fn prepare_each(
        &self,
        role: Role,
        frames: &[RgbImage],
        indices: &[usize],
    ) -> Result<Vec<RgbImage>> {
        indices
            .iter()
            .map(|&i| self.prepare(role, &frames[i]))
            .collect()
    }

    /// Scores one window from its features: the only work that is not cached.
    pub fn score_window(&self, features: &WindowFeatures) -> Result<Scored> {
        #[cfg(feature = "test-faults")]
        self.inject_faults()?;
        match self.mode() {
            ScoreMode::LevelLogits => self.score_levels(features),
            ScoreMode::QualityHead => self.score_by_head(features),
            ScoreMode::GeneratedNumber => self.score_by_answer(features),
            ScoreMode::None => Err(Error::Bundle(format!(
                "{}: this bundle does not score (score.mode none)",
                self.bundle.dir.display()
            ))),
        }
    }

    #[cfg(feature = "test-faults")]
    fn inject_faults(&self) -> Result<()> {
        let number = 1 + self
            .windows
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(delay) = self.faults.window_delay {
            std::thread::sleep(delay);
        }
        if self.faults.panic_at_window == Some(number) {
            panic!("test fault: window {number} panics");
        }
        if self
            .faults
            .fail_from_window
            .is_some_and(|from| number >= from)
        {
            return Err(Error::Input(format!("test fault: window {number} fails")));
        }
        Ok(())
    }

    /// Whether the decoder's prefills of the streams that share this scorer run batched.
    pub fn batches(&self) -> bool {
        self.prefills.is_some()
    }

    /// Decoder batches and rows run so far (`None` when the decoder does not batch).
    pub fn batch_counts(&self) -> Option<BatchCounts> {
        self.prefills.as_ref().map(Batcher::counts)
    }

    /// Counts a stream that scores with this scorer, until [`Scorer::stream_left`]: a batch
    /// stops waiting once every stream has handed in its window.
    pub fn stream_joined(&self) {
        if let Some(b) = &self.prefills {
            b.join();
        }
    }

    pub fn stream_left(&self) {
        if let Some(b) = &self.prefills {
            b.leave();
        }
    }

    /// Whether this bundle can generate text (it has a `decoder_generate` graph).
    pub fn can_generate(&self) -> bool {
        self.graphs
            .contains_key(&PartName::own(Role::DecoderGenerate))
    }

    /// The `past_key_values.*` inputs of graph `role`, in the manifest's order.
    pub(crate) fn past_names(&self, role: Role) -> Result<Vec<String>> {
        Ok(self
            .bundle
            .part(&PartName::own(role))?
            .inputs
            .iter()
            .filter(|i| i.name.starts_with("past_key_values."))
            .map(|i| i.name.clone())
            .collect())
    }

    /// An empty past (no tokens yet) for each of `past_names`.
    pub(crate) fn empty_past(&self, past_names: &[String]) -> Result<Vec<Values>> {
        let decoder = self.decoder()?;
        let shape = vec![1, decoder.kv_heads as i64, 0, decoder.head_dim as i64];
        Ok(past_names
            .iter()
            .map(|_| (shape.clone(), Vec::new()))
            .collect())
    }

    pub(crate) fn decoder(&self) -> Result<&crate::bundle::Decoder> {
        self.bundle.manifest.decoder.as_ref().ok_or_else(|| {
            Error::Bundle(format!(
                "{}: this bundle has no decoder",
                self.manifest_path()
            ))
        })
    }

    pub(crate) fn prompt(&self) -> Result<&crate::bundle::Prompt> {
        self.bundle.manifest.prompt.as_ref().ok_or_else(|| {
            Error::Bundle(format!(
                "{}: this bundle has no prompt",
                self.manifest_path()
            ))
        })
    }

    pub(crate) fn manifest_path(&self) -> String {
        self.bundle.dir.join(MANIFEST).display().to_string()
    }
}

/// The keyframes of a clip at a constant `fps`, as the element's sampler picks them: the first
/// frame at or after `phase` into every (possibly partial) second. A clip too short for any
/// gives its last frame (`[0]` for clips under a second with no phase).
pub fn keyframe_indices(frames: usize, fps: f64, phase: Nanos) -> Vec<usize> {
    let r = (fps.round() as usize).max(1);
    let due = phase.saturating_sub(SECOND_TOLERANCE) as f64 / SECOND as f64;
    let offset = (due * fps).ceil() as usize;
    let picked: Vec<usize> = (0..frames)
        .step_by(r)
        .map(|start| start + offset)
        .filter(|&i| i < frames)
        .collect();
    if picked.is_empty() {
        vec![offset.min(frames.saturating_sub(1))]
    } else {
        picked
    }
}

/// All frames, or every `stride`-th after trimming to `trim_before`, trimmed to a `multiple`.
pub fn motion_indices(
    frames: usize,
    stride: usize,
    trim_before: usize,
    multiple: usize,
) -> Vec<usize> {
    let idx: Vec<usize> = (0..frames / trim_before.max(1) * trim_before.max(1))
        .step_by(stride.max(1))
        .collect();
    let keep = idx.len() / multiple.max(1) * multiple.max(1);
    idx[..keep].to_vec()
}

/// Resizing is implemented for Pillow's bicubic filter on 8-bit pictures scaled by 1/255.
fn check_preprocess(bundle: &Bundle) -> Result<()> {
    let here = bundle.dir.join(MANIFEST);
    for (role, pre) in &bundle.manifest.preprocess {
        let ResizeFilter::PillowBicubic = pre.resize;
        if (pre.rescale - 1.0 / 255.0).abs() > 1e-9 {
            return Err(Error::Bundle(format!(
                "{}: preprocess.{role}.rescale is {}; gst-qoe implements 1/255 only",
                here.display(),
                pre.rescale
            )));
        }
    }
    Ok(())
}

/// References to each picture.
pub(crate) fn refs(pictures: &[RgbImage]) -> Vec<&RgbImage> {
    pictures.iter().collect()
}

/// `data` cut into `n` equal blocks.
pub(crate) fn split(data: Vec<f32>, n: usize) -> Vec<Arc<Vec<f32>>> {
    if n == 0 {
        return Vec::new();
    }
    let each = data.len() / n;
    data.chunks(each.max(1))
        .take(n)
        .map(|c| Arc::new(c.to_vec()))
        .collect()
}

pub(crate) fn f32_tensor(shape: Vec<i64>, data: Vec<f32>) -> Input {
    Input::F32 { shape, data }
}

pub(crate) fn i64_tensor(shape: Vec<i64>, data: Vec<i64>) -> Input {
    Input::I64 { shape, data }
}

/// [T, 3, plane] frames → [3, T, plane] channels.
pub(crate) fn to_channels_first(data: &[f32], frames: usize, plane: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for f in 0..frames {
        for c in 0..3 {
            out[(c * frames + f) * plane..][..plane]
                .copy_from_slice(&data[(f * 3 + c) * plane..][..plane]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_rules() {
        assert_eq!(keyframe_indices(20, 8.0, 0), vec![0, 8, 16]);
        assert_eq!(keyframe_indices(5, 30.0, 0), vec![0]);
        assert_eq!(keyframe_indices(60, 29.97, 0), vec![0, 30]);
        // Half a second in, as `KeyframeSampler::with_phase` and `spec.keyframe_offset` pick.
        let half = SECOND / 2;
        assert_eq!(keyframe_indices(90, 30.0, half), vec![15, 45, 75]);
        assert_eq!(keyframe_indices(60, 25.0, half), vec![13, 38]);
        assert_eq!(keyframe_indices(20, 8.0, half), vec![4, 12]);
        assert_eq!(keyframe_indices(5, 30.0, half), vec![4]);
        assert_eq!(motion_indices(23, 1, 1, 4), (0..20).collect::<Vec<_>>());
        assert_eq!(
            motion_indices(70, 8, 8, 4),
            vec![0, 8, 16, 24, 32, 40, 48, 56]
        );
    }
}
