// SPDX-License-Identifier: MPL-2.0
//! Scoring with a bundle on ONNX Runtime (the `ort` crate, loading the runtime library at
//! run time): the Rust twin of `onnx/qoe_onnx/ort_pipeline.py`, checked against the committed
//! golden outputs of the PyTorch reference.
//!
//! Every stage is its own method so that the element can cache features per keyframe and per
//! frame ([`super::stream`]) and run only the decoder per window; [`Scorer::score`] chains the
//! same stages over a whole clip, which is what the golden tests check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

use super::bundle::{Bundle, Segment};
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

fn open_session(
    bundle: &Bundle,
    role: &str,
    provider: Provider,
    options: &SessionOptions,
) -> Result<Session, String> {
    let part = bundle.part(role).map_err(|e| e.0)?;
    let path = bundle.path(&part.file);
    let mut builder = Session::builder(environment()?)
        .and_then(|b| b.with_intra_threads(options.threads).map_err(Into::into))
        .map_err(|e| format!("cannot configure ONNX Runtime: {e}"))?;
    builder = with_provider(builder, provider, options, &path)?;
    let session = builder
        .commit_from_file(&path)
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

/// Adds `provider` to a session builder. Registration failures are errors, never a silent
/// fall back to the CPU.
fn with_provider(
    builder: ort::session::builder::SessionBuilder,
    provider: Provider,
    options: &SessionOptions,
    model: &Path,
) -> Result<ort::session::builder::SessionBuilder, String> {
    use ort::ep;
    let dispatch = match provider {
        Provider::Cpu | Provider::Auto => return Ok(builder),
        Provider::Cuda => ep::CUDA::default()
            .with_device_id(options.device_id)
            .build()
            .error_on_failure(),
        Provider::TensorRt => {
            let mut trt = ep::TensorRT::default().with_device_id(options.device_id);
            if let Some(root) = &options.tensorrt_cache {
                let dir = root.join(tensorrt_cache_key(model, options.device_id)?);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("TensorRT engine cache {}: {e}", dir.display()))?;
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir.display())
                    .with_timing_cache(true)
                    .with_timing_cache_path(dir.display());
            }
            trt.build().error_on_failure()
        }
    };
    let name = dispatch.name();
    builder
        .with_execution_providers([dispatch])
        .map_err(|e| format!("{name} cannot start for {}: {e}", model.display()))
}

/// The TensorRT engine cache folder name for `model`: its content hash, the ONNX Runtime
/// library, the GPU and the precision, so that a change of any of them builds new engines.
pub fn tensorrt_cache_key(model: &Path, device_id: i32) -> Result<String, String> {
    let bytes = std::fs::read(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let ort = library_path()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "ort".into());
    let gpu = gpu_name(device_id).unwrap_or_else(|| format!("gpu{device_id}"));
    let clean = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>()
    };
    Ok(format!(
        "{:016x}_{}_{}_fp32",
        fnv1a(&bytes),
        clean(&ort),
        clean(&gpu)
    ))
}

/// The NVIDIA driver's name for GPU `device_id`, if the driver says.
fn gpu_name(device_id: i32) -> Option<String> {
    let mut dirs: Vec<_> = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    let info = std::fs::read_to_string(dirs.get(device_id as usize)?.join("information")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Model:"))
        .map(|m| m.trim().to_owned())
}

/// 64-bit FNV-1a: a stable content hash (std's hasher may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
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

/// How sessions are opened: where they run and with how many threads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionOptions {
    pub provider: Provider,
    /// Intra-op threads per session; 0 lets ONNX Runtime choose.
    pub threads: usize,
    /// GPU ordinal for CUDA and TensorRT.
    pub device_id: i32,
    /// Folder for TensorRT engines (a key folder per model, ORT version, GPU and precision
    /// inside); `None`: engines are rebuilt on every start.
    pub tensorrt_cache: Option<PathBuf>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            provider: Provider::Cpu,
            threads: 0,
            device_id: 0,
            tensorrt_cache: None,
        }
    }
}

/// A model bundle opened on ONNX Runtime. Every method takes `&self`: each graph has its own
/// lock, so the encoders of one stream and the decoder of another run at the same time.
pub struct Scorer {
    bundle: Bundle,
    provider: Provider,
    sessions: HashMap<String, Mutex<Session>>,
    /// Part-name suffix per model scored ([`Bundle::models`]): `[""]` but for ensembles.
    models: Vec<String>,
    tokenizer: tokenizers::Tokenizer,
    newline: Vec<f32>,
    /// Token id → embedding row, for vocabulary subsets.
    rows: Option<HashMap<u32, i64>>,
    hidden: usize,
    /// Embedded prompt text by text: constant segments are embedded once per process.
    text_cache: Mutex<HashMap<String, Arc<Vec<f32>>>>,
    /// The decoder's keys and values for the prompt's constant opening (the text before the
    /// first embedded block) with that opening's embeddings, for decoders that take a past:
    /// each window then prefills only its own tokens.
    prefix_cache: Mutex<Option<PrefixPast>>,
}

/// A tensor's shape and values.
type Values = (Vec<i64>, Vec<f32>);

/// A prompt opening's embeddings and the decoder's past for it.
type PrefixPast = (Vec<f32>, Arc<Vec<Values>>);

/// Prompt texts kept embedded; the stall sentence varies, so the cache is emptied when full.
const TEXT_CACHE_ENTRIES: usize = 64;

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("bundle", &self.bundle.manifest.name)
            .field("dir", &self.bundle.dir)
            .field("provider", &self.provider)
            .field("parts", &self.sessions.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What a bundle's encoders compute, and so what the element caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// VQA²: vision tokens per keyframe, motion features per frame.
    KeyframesAndFrames,
    /// LMM-VQA: CLIP tokens per keyframe, a SlowFast token per second's chunk.
    KeyframesAndChunks,
    /// CP-LLM: a score per keyframe from two encoders and a head.
    FrameScores,
}

/// Features of one window, assembled from caches (see [`super::stream`]). For an ensemble
/// each item holds every model's block, one after another in [`Bundle::models`] order.
#[derive(Debug, Clone, Default)]
pub struct WindowFeatures {
    /// Per keyframe: vision tokens (VQA²), CLIP tokens (LMM-VQA) or the frame's score
    /// (CP-LLM, one value).
    pub keyframes: Vec<Arc<Vec<f32>>>,
    /// VQA²: per-frame motion features, concatenated. LMM-VQA: one motion token per keyframe.
    pub motion: Vec<Arc<Vec<f32>>>,
    pub stall: Option<StallFigures>,
}

impl Scorer {
    /// Opens every graph of the bundle in `dir` on the CPU with `threads` intra-op threads.
    pub fn open(dir: &Path, threads: usize) -> Result<Scorer, String> {
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
    pub fn open_with(dir: &Path, options: &SessionOptions) -> Result<Scorer, String> {
        let bundle = Bundle::load(dir).map_err(|e| e.0)?;
        check_preprocess(&bundle)?;
        let (provider, sessions) = match options.provider {
            Provider::Auto => {
                let mut why = Vec::new();
                let mut opened = None;
                for provider in [Provider::TensorRt, Provider::Cuda, Provider::Cpu] {
                    match open_sessions(&bundle, provider, options) {
                        Ok(sessions) => {
                            opened = Some((provider, sessions));
                            break;
                        }
                        Err(e) => why.push(format!("{}: {e}", provider.as_str())),
                    }
                }
                opened.ok_or_else(|| why.join("; "))?
            }
            provider => (provider, open_sessions(&bundle, provider, options)?),
        };
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
                let name = v.rows_constant.as_deref().ok_or_else(|| {
                    format!(
                        "{}: vocabulary.rows_constant missing",
                        bundle.dir.join(super::bundle::MANIFEST).display()
                    )
                })?;
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
            models: bundle.models(),
            bundle,
            provider,
            sessions,
            tokenizer,
            newline,
            rows,
            hidden,
            text_cache: Mutex::new(HashMap::new()),
            prefix_cache: Mutex::new(None),
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
    pub fn mode(&self) -> &str {
        &self.bundle.manifest.score.mode
    }

    /// Which features this bundle's graphs compute.
    pub fn layout(&self) -> Layout {
        let parts = &self.bundle.manifest.parts;
        if parts.contains_key("quality_head") {
            Layout::FrameScores
        } else if parts.contains_key("visual_projector") {
            Layout::KeyframesAndChunks
        } else {
            Layout::KeyframesAndFrames
        }
    }

    /// Which of a stream's frames feed the motion graphs: every `n`-th (from the first) for
    /// `Some(n)`: the manifest's stride for a per-frame motion branch, 1 for a chunked one;
    /// `None` where there is no motion branch.
    pub fn motion_stride(&self) -> Option<u64> {
        match self.layout() {
            Layout::FrameScores => None,
            Layout::KeyframesAndChunks => Some(1),
            Layout::KeyframesAndFrames => Some(
                self.bundle
                    .manifest
                    .sampling
                    .motion
                    .as_ref()
                    .filter(|m| m.mode == "frames")
                    .map_or(1, |m| m.stride.max(1)) as u64,
            ),
        }
    }

    /// Runs picture or motion graph `role` of every model (one, but for ensembles) with
    /// `inputs`, returning `items` blocks, each every model's output for that item in turn.
    fn run_models(
        &self,
        role: &str,
        items: usize,
        inputs: impl Fn() -> Result<Vec<(&'static str, ort::value::DynValue)>, String>,
    ) -> Result<Vec<Arc<Vec<f32>>>, String> {
        if self.models.len() == 1 {
            return Ok(split(self.run(role, inputs()?)?.1, items));
        }
        let mut blocks = vec![Vec::new(); items];
        for model in &self.models {
            let (_, out) = self.run(&format!("{role}{model}"), inputs()?)?;
            for (block, item) in blocks.iter_mut().zip(split(out, items)) {
                block.extend_from_slice(&item);
            }
        }
        Ok(blocks.into_iter().map(Arc::new).collect())
    }

    /// Model `model`'s block of an item of [`WindowFeatures`].
    fn model_block<'a>(&self, item: &'a [f32], model: usize) -> &'a [f32] {
        let each = item.len() / self.models.len();
        &item[model * each..(model + 1) * each]
    }

    /// Runs graph `role`; returns its first output.
    fn run(
        &self,
        role: &str,
        inputs: Vec<(&'static str, ort::value::DynValue)>,
    ) -> Result<(Vec<i64>, Vec<f32>), String> {
        let inputs = inputs.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
        let mut outputs = self.run_all(role, inputs)?;
        Ok(outputs.swap_remove(0))
    }

    /// Runs graph `role`; returns all its outputs.
    fn run_all(
        &self,
        role: &str,
        inputs: Vec<(String, ort::value::DynValue)>,
    ) -> Result<Vec<Values>, String> {
        let mut session = self
            .sessions
            .get(role)
            .ok_or_else(|| format!("this bundle has no part {role}"))?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let outputs = session.run(inputs).map_err(|e| format!("{role}: {e}"))?;
        (0..outputs.len())
            .map(|k| {
                let (shape, data) = outputs[k]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| format!("{role}: {e}"))?;
                Ok((shape.to_vec(), data.to_vec()))
            })
            .collect()
    }

    /// `image` resized as graph `role` expects (the manifest's size and filter).
    pub fn prepare(&self, role: &str, image: &RgbImage) -> Result<RgbImage, String> {
        let [w, h] = self.bundle.preprocess(role).map_err(|e| e.0)?.size;
        Ok(if image.width == w && image.height == h {
            image.clone()
        } else {
            resize_bicubic(image, w, h)
        })
    }

    /// Normalised pixels of prepared frames, `[N, 3, H, W]`.
    fn pixels(&self, role: &str, prepared: &[&RgbImage]) -> Result<(Vec<i64>, Vec<f32>), String> {
        let pre = self.bundle.preprocess(role).map_err(|e| e.0)?;
        let [w, h] = pre.size;
        let mut data = Vec::with_capacity(prepared.len() * 3 * w * h);
        for frame in prepared {
            if (frame.width, frame.height) != (w, h) {
                return Err(format!(
                    "{role}: a {}×{} picture where {w}×{h} is expected",
                    frame.width, frame.height
                ));
            }
            normalise_into(frame, pre.mean, pre.std, &mut data);
        }
        Ok((vec![prepared.len() as i64, 3, h as i64, w as i64], data))
    }

    /// Runs picture encoder `role` on prepared frames: one output block per frame.
    pub fn encode_pictures(
        &self,
        role: &str,
        prepared: &[&RgbImage],
    ) -> Result<Vec<Arc<Vec<f32>>>, String> {
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let (shape, data) = self.pixels(role, prepared)?;
        self.run_models(role, prepared.len(), || {
            Ok(vec![(
                "pixel_values",
                f32_tensor(shape.clone(), data.clone())?,
            )])
        })
    }

    /// VQA² fast pathway over consecutive prepared frames (zero-padded at both ends): one
    /// feature vector per frame.
    pub fn motion_features(&self, prepared: &[&RgbImage]) -> Result<Vec<Arc<Vec<f32>>>, String> {
        let (shape, data) = self.pixels("motion_encoder", prepared)?;
        // [T, 3, H, W] → [1, 3, T, H, W]
        let (t, hw) = (shape[0] as usize, (shape[2] * shape[3]) as usize);
        let clip = to_channels_first(&data, t, hw);
        self.run_models("motion_encoder", t, || {
            Ok(vec![(
                "frames",
                f32_tensor(vec![1, 3, t as i64, shape[2], shape[3]], clip.clone())?,
            )])
        })
    }

    /// LMM-VQA: one SlowFast token per chunk of prepared frames.
    pub fn chunk_tokens(&self, chunks: &[Vec<&RgbImage>]) -> Result<Vec<Arc<Vec<f32>>>, String> {
        let (mut batch, mut size, mut frames) = (Vec::new(), (0, 0), 0);
        for chunk in chunks {
            let (shape, data) = self.pixels("motion_encoder", chunk)?;
            frames = shape[0];
            batch.extend(to_channels_first(
                &data,
                shape[0] as usize,
                (shape[2] * shape[3]) as usize,
            ));
            size = (shape[2], shape[3]);
        }
        let shape = vec![chunks.len() as i64, 3, frames, size.0, size.1];
        let (_, tokens) = self.run(
            "motion_encoder",
            vec![("chunks", f32_tensor(shape, batch)?)],
        )?;
        Ok(split(tokens, chunks.len()))
    }

    /// CP-LLM: each keyframe's score from its two encodings.
    pub fn frame_scores(
        &self,
        high: &[&RgbImage],
        low: &[&RgbImage],
    ) -> Result<Vec<Arc<Vec<f32>>>, String> {
        let h = self.pixels("high_level_encoder", high)?;
        let h = self.run(
            "high_level_encoder",
            vec![("pixel_values", f32_tensor(h.0, h.1)?)],
        )?;
        let l = self.pixels("low_level_encoder", low)?;
        let l = self.run(
            "low_level_encoder",
            vec![("pixel_values", f32_tensor(l.0, l.1)?)],
        )?;
        let (_, scores) = self.run(
            "quality_head",
            vec![
                ("high_level", f32_tensor(h.0, h.1)?),
                ("low_level", f32_tensor(l.0, l.1)?),
            ],
        )?;
        Ok(split(scores, high.len()))
    }

    /// Embeds prompt text, from the cache when it was embedded before.
    fn embed_text(&self, text: &str) -> Result<Arc<Vec<f32>>, String> {
        if let Some(hit) = self.text_cache.lock().unwrap().get(text) {
            return Ok(hit.clone());
        }
        let ids = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| e.to_string())?
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

    fn embed(&self, ids: &[u32]) -> Result<Vec<f32>, String> {
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
        Ok(self
            .run(
                "token_embedding",
                vec![("rows", i64_tensor(vec![n], rows)?)],
            )?
            .1)
    }

    /// Scores a whole clip of RGB frames at `fps`, as the bundle's `score.mode` says: the
    /// reference's computation, through the same stages the element caches.
    pub fn score(
        &self,
        frames: &[RgbImage],
        fps: f64,
        stall: Option<&StallFigures>,
    ) -> Result<Scored, String> {
        let features = self.clip_features(frames, fps)?;
        let features = WindowFeatures {
            stall: stall.cloned(),
            ..features
        };
        self.score_window(&features)
    }

    /// The features of a whole clip, computed in one go.
    pub fn clip_features(&self, frames: &[RgbImage], fps: f64) -> Result<WindowFeatures, String> {
        let m = &self.bundle.manifest;
        let prepare = |role: &str, idx: &[usize]| -> Result<Vec<RgbImage>, String> {
            idx.iter()
                .map(|&i| self.prepare(role, &frames[i]))
                .collect()
        };
        let kf = keyframe_indices(frames.len(), fps);
        match self.layout() {
            Layout::KeyframesAndFrames => {
                let motion = m
                    .sampling
                    .motion
                    .as_ref()
                    .ok_or("this bundle has no motion sampling")?;
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
                let keyframes = prepare("keyframe_encoder", &kf)?;
                let dense = prepare("motion_encoder", &mo)?;
                Ok(WindowFeatures {
                    keyframes: self.encode_pictures("keyframe_encoder", &refs(&keyframes))?,
                    motion: self.motion_features(&refs(&dense))?,
                    stall: None,
                })
            }
            Layout::FrameScores => {
                let high = prepare("high_level_encoder", &kf)?;
                let low = prepare("low_level_encoder", &kf)?;
                Ok(WindowFeatures {
                    keyframes: self.frame_scores(&refs(&high), &refs(&low))?,
                    ..Default::default()
                })
            }
            Layout::KeyframesAndChunks => {
                let chunk_frames = self.chunk_frames()?;
                let r = (fps.round() as usize).max(1);
                let chunks: Vec<Vec<RgbImage>> = (0..frames.len())
                    .step_by(r)
                    .map(|start| {
                        let idx: Vec<usize> = (0..chunk_frames)
                            .map(|i| (start + i).min(frames.len() - 1))
                            .collect();
                        prepare("motion_encoder", &idx)
                    })
                    .collect::<Result<_, _>>()?;
                let chunks: Vec<Vec<&RgbImage>> = chunks.iter().map(|c| refs(c)).collect();
                let keyframes = prepare("keyframe_encoder", &kf)?;
                Ok(WindowFeatures {
                    keyframes: self.encode_pictures("keyframe_encoder", &refs(&keyframes))?,
                    motion: self.chunk_tokens(&chunks)?,
                    stall: None,
                })
            }
        }
    }

    /// LMM-VQA: frames per SlowFast chunk.
    pub fn chunk_frames(&self) -> Result<usize, String> {
        self.bundle
            .manifest
            .sampling
            .motion
            .as_ref()
            .and_then(|m| m.chunk_frames)
            .ok_or_else(|| "sampling.motion.chunk_frames is missing".into())
    }

    /// Scores one window from its features: the only work that is not cached.
    pub fn score_window(&self, features: &WindowFeatures) -> Result<Scored, String> {
        match self.mode() {
            "level-logits" => self.score_levels(features),
            "quality-head" => {
                let frame_scores: Vec<f32> = features
                    .keyframes
                    .iter()
                    .flat_map(|s| s.iter())
                    .copied()
                    .collect();
                if frame_scores.is_empty() {
                    return Err("no keyframe in the window".into());
                }
                let score =
                    frame_scores.iter().map(|&v| v as f64).sum::<f64>() / frame_scores.len() as f64;
                Ok(Scored {
                    score: Some(score),
                    frame_scores,
                    ..Default::default()
                })
            }
            "generated-number" => self.score_by_answer(features),
            other => Err(format!(
                "{}: this bundle does not score (score.mode {other})",
                self.bundle.dir.display()
            )),
        }
    }

    /// The embedded VQA² prompt of model `model` (an index into [`Bundle::models`]):
    /// keyframe and motion blocks between the text segments.
    fn vqa2_sequence(
        &self,
        features: &WindowFeatures,
        question: &str,
        model: usize,
    ) -> Result<(Vec<f32>, Scored, usize), String> {
        let m = &self.bundle.manifest;
        let (k, t) = (features.keyframes.len(), features.motion.len());
        if k == 0 || t == 0 {
            return Err(format!(
                "{k} keyframes and {t} motion frames: nothing to score"
            ));
        }
        let keyframe_embeds: Vec<f32> = features
            .keyframes
            .iter()
            .flat_map(|v| self.model_block(v, model))
            .copied()
            .collect();
        let motion_feat: Vec<f32> = features
            .motion
            .iter()
            .flat_map(|v| self.model_block(v, model))
            .copied()
            .collect();
        let feat_len = motion_feat.len() / t;
        let mut inputs = vec![(
            "motion_feat",
            f32_tensor(vec![t as i64, feat_len as i64], motion_feat.clone())?,
        )];
        // VQA²'s projector adds position embeddings; the micro bundle's pools over time.
        let projector = format!("motion_projector{}", self.models[model]);
        let part = self.bundle.part(&projector).map_err(|e| e.0)?;
        if part.inputs.iter().any(|i| i.name == "positions") {
            inputs.push((
                "positions",
                i64_tensor(vec![t as i64], (0..t as i64).collect())?,
            ));
        }
        let (_, motion_embeds) = self.run(&projector, inputs)?;
        let prompt = m.prompt.as_ref().ok_or("this bundle has no prompt")?;
        let stall_sentence = stall_text(
            &prompt.stall_format,
            &prompt.stall_text,
            &features.stall.clone().unwrap_or_default(),
        );
        let mut sequence: Vec<f32> = Vec::new();
        let mut prefix = None;
        for segment in &prompt.segments {
            match segment {
                Segment::Embed { embed } => {
                    prefix.get_or_insert(sequence.len() / self.hidden);
                    match embed.as_str() {
                        "keyframes" => {
                            sequence.extend_from_slice(&keyframe_embeds);
                            sequence.extend_from_slice(&self.newline);
                        }
                        "motion" => sequence.extend_from_slice(&motion_embeds),
                        other => return Err(format!("prompt block \"{other}\" is not known")),
                    }
                }
                Segment::Text { text } => {
                    let filled = text
                        .replace("{K}", &k.to_string())
                        .replace("{T}", &t.to_string())
                        .replace("{question}", question)
                        .replace("{stall}", &stall_sentence);
                    sequence.extend_from_slice(&self.embed_text(&filled)?);
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
            prefix.unwrap_or(0),
        ))
    }

    /// Level probabilities (averaged over an ensemble's models) and the weighted score.
    fn score_levels(&self, features: &WindowFeatures) -> Result<Scored, String> {
        let mut first: Option<Scored> = None;
        let mut mean = Vec::new();
        for model in 0..self.models.len() {
            let scored = self.model_levels(features, model)?;
            mean.resize(scored.probabilities.len(), 0.0);
            for (m, p) in mean.iter_mut().zip(&scored.probabilities) {
                *m += p / self.models.len() as f64;
            }
            first.get_or_insert(scored);
        }
        let first = first.ok_or("this bundle has no model")?;
        if self.models.len() == 1 {
            return Ok(first);
        }
        Ok(Scored {
            score: Some(self.weighted_score(&mean)),
            level_logits: mean.iter().map(|p| p.ln()).collect(),
            probabilities: mean,
            ..first
        })
    }

    /// One model's level probabilities and score.
    fn model_levels(&self, features: &WindowFeatures, model: usize) -> Result<Scored, String> {
        let m = &self.bundle.manifest;
        let (mut sequence, stages, prefix) = self.vqa2_sequence(features, "", model)?;
        let length = sequence.len() / self.hidden;
        let position = m.score.logit_position.unwrap_or(-1);
        // Under a causal mask nothing after the logit position affects it.
        let keep = (length as i64 + position + 1).max(1) as usize;
        sequence.truncate(keep * self.hidden);
        let past_names = self.past_names("decoder_score")?;
        let cached = m.decoder.as_ref().is_some_and(|d| d.prefix_cache)
            && !past_names.is_empty()
            && 0 < prefix
            && prefix < keep;
        let (embeds, past) = if cached {
            let rest = sequence.split_off(prefix * self.hidden);
            (rest, self.prefix_past(sequence, &past_names)?)
        } else {
            (sequence, Arc::new(self.empty_past(&past_names)?))
        };
        let inputs = self.prefill_inputs(embeds, &past_names, past.iter().cloned())?;
        let logits = self.run_all("decoder_score", inputs)?.swap_remove(0).1;
        let logits: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = exp.iter().sum();
        let probabilities: Vec<f64> = exp.iter().map(|e| e / total).collect();
        Ok(Scored {
            score: Some(self.weighted_score(&probabilities)),
            probabilities,
            level_logits: logits,
            sequence_length: length,
            ..stages
        })
    }

    /// The score of level probabilities: their sum weighted by the levels' weights.
    fn weighted_score(&self, probabilities: &[f64]) -> f64 {
        probabilities
            .iter()
            .zip(&self.bundle.manifest.score.levels)
            .map(|(p, level)| p * level.weight)
            .sum()
    }

    /// The `past_key_values.*` inputs of graph `role`, in the manifest's order.
    fn past_names(&self, role: &str) -> Result<Vec<String>, String> {
        Ok(self
            .bundle
            .part(role)
            .map_err(|e| e.0)?
            .inputs
            .iter()
            .filter(|i| i.name.starts_with("past_key_values."))
            .map(|i| i.name.clone())
            .collect())
    }

    /// An empty past (no tokens yet) for each of `past_names`.
    fn empty_past(&self, past_names: &[String]) -> Result<Vec<Values>, String> {
        let decoder = self
            .bundle
            .manifest
            .decoder
            .as_ref()
            .ok_or("this bundle has no decoder")?;
        let shape = vec![1, decoder.kv_heads as i64, 0, decoder.head_dim as i64];
        Ok(past_names
            .iter()
            .map(|_| (shape.clone(), Vec::new()))
            .collect())
    }

    /// A `decoder_score` prefill's inputs: `embeds` after `past` (one per `past_names`).
    fn prefill_inputs(
        &self,
        embeds: Vec<f32>,
        past_names: &[String],
        past: impl IntoIterator<Item = Values>,
    ) -> Result<Vec<(String, ort::value::DynValue)>, String> {
        let n = embeds.len() / self.hidden;
        let mut inputs = vec![(
            "inputs_embeds".to_owned(),
            f32_tensor(vec![1, n as i64, self.hidden as i64], embeds)?,
        )];
        for (name, (shape, data)) in past_names.iter().zip(past) {
            inputs.push((name.clone(), f32_tensor(shape, data)?));
        }
        Ok(inputs)
    }

    /// The decoder's keys and values for the prompt opening `prefix` (embeddings), computed
    /// once and kept while the opening stays the same.
    fn prefix_past(
        &self,
        prefix: Vec<f32>,
        past_names: &[String],
    ) -> Result<Arc<Vec<Values>>, String> {
        let mut cache = self.prefix_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((embeds, past)) = cache.as_ref()
            && *embeds == prefix
        {
            return Ok(past.clone());
        }
        let inputs =
            self.prefill_inputs(prefix.clone(), past_names, self.empty_past(past_names)?)?;
        let mut outputs = self.run_all("decoder_score", inputs)?;
        let past = Arc::new(outputs.split_off(1));
        *cache = Some((prefix, past.clone()));
        Ok(past)
    }

    /// LMM-VQA: CLIP tokens and per-second SlowFast chunk tokens fused into one visual block,
    /// then a generated answer whose first number is the score.
    fn score_by_answer(&self, features: &WindowFeatures) -> Result<Scored, String> {
        let m = &self.bundle.manifest;
        let count = m
            .sampling
            .keyframes
            .count
            .ok_or("sampling.keyframes.count is needed for a fused visual block")?;
        let (k, chunks) = (features.keyframes.len(), features.motion.len());
        if k == 0 || chunks == 0 {
            return Err(format!(
                "{k} keyframes and {chunks} motion chunks: nothing to score"
            ));
        }
        // The first `count` keyframes, the last repeated to fill; keyframe i takes the chunk
        // of its second, padded keyframes the last chunk.
        let pick = |i: usize| i.min(k - 1);
        let clip: Vec<f32> = (0..count)
            .flat_map(|i| features.keyframes[pick(i)].iter().copied())
            .collect();
        let width = features.motion[0].len();
        let motion: Vec<f32> = (0..count)
            .flat_map(|i| {
                features.motion[i.min(k - 1).min(chunks - 1)]
                    .iter()
                    .copied()
            })
            .collect();
        let per_clip = clip.len() / count;
        let clip_shape = self.token_shape("keyframe_encoder", count, per_clip)?;
        let (_, visual) = self.run(
            "visual_projector",
            vec![
                ("clip_tokens", f32_tensor(clip_shape, clip)?),
                (
                    "motion_tokens",
                    f32_tensor(vec![count as i64, width as i64], motion)?,
                ),
            ],
        )?;
        let prompt = m.prompt.as_ref().ok_or("this bundle has no prompt")?;
        let mut sequence = Vec::new();
        for segment in &prompt.segments {
            match segment {
                Segment::Embed { .. } => sequence.extend_from_slice(&visual),
                Segment::Text { text } => sequence.extend_from_slice(&self.embed_text(text)?),
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

    /// The shape of `n` outputs of graph `role` holding `per_item` values each: the declared
    /// output shape with its first dimension set to `n`.
    fn token_shape(&self, role: &str, n: usize, per_item: usize) -> Result<Vec<i64>, String> {
        let part = self.bundle.part(role).map_err(|e| e.0)?;
        let mut shape = vec![n as i64];
        for dim in part.outputs[0].shape.iter().skip(1) {
            match dim {
                super::bundle::Dim::Fixed(d) => shape.push(*d),
                super::bundle::Dim::Named(name) => {
                    return Err(format!("{role}: output dimension {name} must be fixed"));
                }
            }
        }
        let declared: i64 = shape[1..].iter().product();
        if declared as usize != per_item {
            return Err(format!(
                "{role}: {per_item} values per item, the manifest declares {declared}"
            ));
        }
        Ok(shape)
    }

    /// A greedy answer about a clip to `question` (Assistant bundles): token ids and text.
    pub fn explain(
        &self,
        frames: &[RgbImage],
        fps: f64,
        question: &str,
        max_new_tokens: usize,
        step_logits: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<(Vec<u32>, String), String> {
        let features = self.clip_features(frames, fps)?;
        self.explain_window(&features, question, max_new_tokens, step_logits)
    }

    /// A greedy answer about a window's features to `question` (Assistant bundles).
    pub fn explain_window(
        &self,
        features: &WindowFeatures,
        question: &str,
        max_new_tokens: usize,
        step_logits: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<(Vec<u32>, String), String> {
        // An ensemble explains with its own model: a greedy answer cannot be averaged.
        let (sequence, _, _) = self.vqa2_sequence(features, question, 0)?;
        let ids = self.greedy(sequence, max_new_tokens, step_logits)?;
        let text = self
            .tokenizer
            .decode(&ids, true)
            .map_err(|e| e.to_string())?;
        Ok((ids, text))
    }

    /// Whether this bundle can generate text (it has a `decoder_generate` graph).
    pub fn can_generate(&self) -> bool {
        self.sessions.contains_key("decoder_generate")
    }

    /// Greedy decoding with the KV cache: a prefill, then one token per step, until an end
    /// token or `max_new_tokens`. Each step's logits go to `step_logits` if given.
    pub fn greedy(
        &self,
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
        let past_names = self.past_names("decoder_generate")?;
        let mut past = self.empty_past(&past_names)?;
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
            let mut outputs = self.run_all("decoder_generate", inputs)?;
            let present = outputs.split_off(1);
            let (shape, logits) = &outputs[0];
            let vocab = shape[2] as usize;
            let last = logits[(new - 1) * vocab..][..vocab].to_vec();
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

/// Resizing is implemented for Pillow's bicubic filter on 8-bit pictures scaled by 1/255.
fn check_preprocess(bundle: &Bundle) -> Result<(), String> {
    let here = bundle.dir.join(super::bundle::MANIFEST);
    for (role, pre) in &bundle.manifest.preprocess {
        if pre.resize != "pillow-bicubic" {
            return Err(format!(
                "{}: preprocess.{role}.resize is \"{}\"; gst-qoe implements \"pillow-bicubic\" only",
                here.display(),
                pre.resize
            ));
        }
        if (pre.rescale - 1.0 / 255.0).abs() > 1e-9 {
            return Err(format!(
                "{}: preprocess.{role}.rescale is {}; gst-qoe implements 1/255 only",
                here.display(),
                pre.rescale
            ));
        }
    }
    Ok(())
}

/// Opens every graph of `bundle` on `provider`.
fn open_sessions(
    bundle: &Bundle,
    provider: Provider,
    options: &SessionOptions,
) -> Result<HashMap<String, Mutex<Session>>, String> {
    let mut sessions = HashMap::new();
    for role in bundle.manifest.parts.keys() {
        sessions.insert(
            role.clone(),
            Mutex::new(open_session(bundle, role, provider, options)?),
        );
    }
    Ok(sessions)
}

/// References to each picture.
fn refs(pictures: &[RgbImage]) -> Vec<&RgbImage> {
    pictures.iter().collect()
}

/// `data` cut into `n` equal blocks.
fn split(data: Vec<f32>, n: usize) -> Vec<Arc<Vec<f32>>> {
    if n == 0 {
        return Vec::new();
    }
    let each = data.len() / n;
    data.chunks(each.max(1))
        .take(n)
        .map(|c| Arc::new(c.to_vec()))
        .collect()
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
}

/// One scorer per bundle and session options in the process, shared by every element that
/// uses it.
pub type SharedScorer = Arc<Scorer>;

/// Open scorers: bundle folder (canonical), options, and a handle that does not keep it alive.
struct SharedEntry {
    dir: PathBuf,
    options: SessionOptions,
    scorer: std::sync::Weak<Scorer>,
}

static SHARED: Mutex<Vec<SharedEntry>> = Mutex::new(Vec::new());

/// How many times each bundle folder (canonical) was opened by [`shared_scorer`].
static OPENED: Mutex<Vec<(PathBuf, usize)>> = Mutex::new(Vec::new());

/// How many times [`shared_scorer`] opened the bundle in `dir` in this process: one per
/// model in memory at a time, however many elements use it.
pub fn times_opened(dir: &Path) -> usize {
    let Ok(key) = std::fs::canonicalize(dir) else {
        return 0;
    };
    OPENED
        .lock()
        .unwrap()
        .iter()
        .find(|(d, _)| *d == key)
        .map_or(0, |(_, n)| *n)
}

/// The process's scorer for the bundle in `dir` opened with `options`, opened on first use
/// and shared while anyone holds it. (Threads count only at the first opening.)
pub fn shared_scorer(dir: &Path, options: &SessionOptions) -> Result<SharedScorer, String> {
    let key = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let requested = options;
    let options = SessionOptions {
        threads: 0,
        ..options.clone()
    };
    // Held while opening, so that elements starting together open the model once.
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    shared.retain(|entry| entry.scorer.strong_count() > 0);
    if let Some(scorer) = shared
        .iter()
        .find(|entry| entry.dir == key && entry.options == options)
        .and_then(|entry| entry.scorer.upgrade())
    {
        return Ok(scorer);
    }
    let scorer = Arc::new(Scorer::open_with(&key, requested)?);
    let mut opened = OPENED.lock().unwrap();
    match opened.iter_mut().find(|(d, _)| *d == key) {
        Some((_, n)) => *n += 1,
        None => opened.push((key.clone(), 1)),
    }
    drop(opened);
    shared.push(SharedEntry {
        dir: key,
        options,
        scorer: Arc::downgrade(&scorer),
    });
    Ok(scorer)
}
