// SPDX-License-Identifier: MPL-2.0
//! Reading and checking a model bundle's `bundle.json` (documented in `onnx/README.md`).
//! Errors name the file and the field at fault.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const FORMAT: &str = "gst-qoe-bundle";
/// The newest format this reader knows; it reads every version from 1. Version 2 adds
/// `ensemble`, which a version-1 reader would ignore and so score differently.
pub const FORMAT_VERSION: u32 = 2;
pub const MANIFEST: &str = "bundle.json";

/// Why a bundle cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleError(pub String);

impl std::fmt::Display for BundleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BundleError {}

fn err<T>(message: impl Into<String>) -> Result<T, BundleError> {
    Err(BundleError(message.into()))
}

/// A graph input or output: a name, a shape with fixed or symbolic dimensions, a dtype.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<Dim>,
    pub dtype: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Dim {
    Fixed(i64),
    Named(String),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Part {
    pub file: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Preprocess {
    pub size: [usize; 2],
    pub resize: String,
    pub rescale: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Clone, Deserialize)]
pub struct KeyframeSampling {
    pub per_second: u32,
    pub rule: String,
    pub count: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MotionSampling {
    pub mode: String,
    #[serde(default = "one")]
    pub stride: usize,
    #[serde(default = "one")]
    pub trim_before_stride: usize,
    #[serde(default = "one")]
    pub multiple: usize,
    pub max_frames: Option<usize>,
    pub context_frames: Option<usize>,
    pub chunk_frames: Option<usize>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Deserialize)]
pub struct Sampling {
    pub keyframes: KeyframeSampling,
    pub motion: Option<MotionSampling>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Constant {
    pub file: String,
    pub shape: Vec<usize>,
    pub dtype: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Level {
    pub word: String,
    pub token_id: u32,
    pub weight: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Score {
    pub mode: String,
    pub part: Option<String>,
    pub logit_position: Option<i64>,
    #[serde(default)]
    pub levels: Vec<Level>,
    pub max_new_tokens: Option<usize>,
    pub range: Option<[f64; 2]>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Generation {
    pub eos_token_ids: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Decoder {
    pub architecture: String,
    pub hidden_size: usize,
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub generation: Option<Generation>,
    /// `decoder_score` takes a past: the prompt's opening is prefilled once and reused.
    #[serde(default)]
    pub prefix_cache: bool,
}

/// One prompt segment: text tokenised on its own, or an embedding block.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Segment {
    Text { text: String },
    Embed { embed: String },
}

#[derive(Debug, Clone, Deserialize)]
pub struct Prompt {
    pub blocks: BTreeMap<String, Vec<String>>,
    pub segments: Vec<Segment>,
    pub stall_format: String,
    #[serde(default)]
    pub stall_text: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Vocabulary {
    pub size: usize,
    pub rows: String,
    pub rows_constant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub name: String,
    pub family: String,
    pub variant: String,
    pub precision: String,
    pub sampling: Sampling,
    pub parts: BTreeMap<String, Part>,
    pub preprocess: BTreeMap<String, Preprocess>,
    pub vocabulary: Option<Vocabulary>,
    pub decoder: Option<Decoder>,
    #[serde(default)]
    pub constants: BTreeMap<String, Constant>,
    pub tokenizer: String,
    pub prompt: Option<Prompt>,
    pub score: Score,
    /// More models scored with this one (format version 2): member `name`'s graphs are the
    /// parts `keyframe_encoder@name`, `motion_encoder@name` and `motion_projector@name`; it
    /// shares the preprocessing, prompt and decoder. The level probabilities are averaged.
    #[serde(default)]
    pub ensemble: Vec<String>,
}

/// The graphs each ensemble member has of its own.
pub const MEMBER_ROLES: &[&str] = &["keyframe_encoder", "motion_encoder", "motion_projector"];

/// A bundle folder with its checked manifest.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

const SCORE_MODES: &[&str] = &["level-logits", "generated-number", "quality-head", "none"];

impl Bundle {
    /// Reads `dir/bundle.json` and checks that everything it names exists and fits.
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                return err(format!(
                    "{}: cannot read the bundle manifest: {e}",
                    path.display()
                ));
            }
        };
        // The format fields first, so that a newer bundle says so rather than failing on a
        // field this reader does not know.
        let head: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| BundleError(format!("{}: not JSON: {e}", path.display())))?;
        if head.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return err(format!(
                "{}: field format is {}, expected \"{FORMAT}\"",
                path.display(),
                head["format"]
            ));
        }
        if !head
            .get("format_version")
            .and_then(|v| v.as_u64())
            .is_some_and(|v| (1..=FORMAT_VERSION as u64).contains(&v))
        {
            return err(format!(
                "{}: field format_version is {}; this reader knows 1 to {FORMAT_VERSION}",
                path.display(),
                head["format_version"]
            ));
        }
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| BundleError(format!("{}: {e}", path.display())))?;
        let bundle = Bundle {
            dir: dir.to_owned(),
            manifest,
        };
        bundle.check()?;
        Ok(bundle)
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }

    fn check(&self) -> Result<(), BundleError> {
        let m = &self.manifest;
        let here = self.manifest_path();
        for (role, part) in &m.parts {
            if !self.dir.join(&part.file).is_file() {
                return err(format!(
                    "{}: parts.{role}.file \"{}\" does not exist",
                    here.display(),
                    part.file
                ));
            }
        }
        for (name, constant) in &m.constants {
            let file = self.dir.join(&constant.file);
            let size = match std::fs::metadata(&file) {
                Ok(meta) => meta.len() as usize,
                Err(_) => {
                    return err(format!(
                        "{}: constants.{name}.file \"{}\" does not exist",
                        here.display(),
                        constant.file
                    ));
                }
            };
            let width = match constant.dtype.as_str() {
                "float32" => 4,
                "float16" => 2,
                "int64" => 8,
                other => {
                    return err(format!(
                        "{}: constants.{name}.dtype \"{other}\" is not known",
                        here.display()
                    ));
                }
            };
            let expected = constant.shape.iter().product::<usize>() * width;
            if size != expected {
                return err(format!(
                    "{}: {size} bytes, but constants.{name} declares shape {:?} of {} ({expected} bytes)",
                    file.display(),
                    constant.shape,
                    constant.dtype
                ));
            }
        }
        if !SCORE_MODES.contains(&m.score.mode.as_str()) {
            return err(format!(
                "{}: score.mode \"{}\" is not known ({})",
                here.display(),
                m.score.mode,
                SCORE_MODES.join(", ")
            ));
        }
        if let Some(part) = &m.score.part
            && !m.parts.contains_key(part)
        {
            return err(format!(
                "{}: score.part \"{part}\" is not one of the parts",
                here.display()
            ));
        }
        if let Some(decoder) = &m.decoder
            && decoder.prefix_cache
            && !m.parts.get("decoder_score").is_some_and(|p| {
                p.inputs
                    .iter()
                    .any(|i| i.name.starts_with("past_key_values."))
            })
        {
            return err(format!(
                "{}: decoder.prefix_cache is true, but parts.decoder_score declares no past_key_values.* inputs",
                here.display()
            ));
        }
        self.check_ensemble()?;
        if !self.dir.join(&m.tokenizer).is_file() {
            return err(format!(
                "{}: tokenizer \"{}\" does not exist",
                here.display(),
                m.tokenizer
            ));
        }
        Ok(())
    }

    fn check_ensemble(&self) -> Result<(), BundleError> {
        let m = &self.manifest;
        let here = self.manifest_path();
        if m.ensemble.is_empty() {
            if let Some(role) = m.parts.keys().find(|r| r.contains('@')) {
                return err(format!(
                    "{}: parts.{role} names an ensemble member, but the manifest has no ensemble",
                    here.display()
                ));
            }
            return Ok(());
        }
        if m.format_version < 2 {
            return err(format!(
                "{}: ensemble needs format_version 2 (it is {})",
                here.display(),
                m.format_version
            ));
        }
        // Members are averaged over the VQA² level probabilities only.
        let vqa2 = ["quality_head", "visual_projector"]
            .iter()
            .all(|r| !m.parts.contains_key(*r));
        if m.score.mode != "level-logits" || !vqa2 {
            return err(format!(
                "{}: ensemble is for VQA² bundles scored by level-logits (score.mode is \"{}\")",
                here.display(),
                m.score.mode
            ));
        }
        for (i, name) in m.ensemble.iter().enumerate() {
            if name.is_empty() || name.contains(['@', '/']) || m.ensemble[..i].contains(name) {
                return err(format!(
                    "{}: ensemble[{i}] \"{name}\" must be a new, non-empty name without @ or /",
                    here.display()
                ));
            }
            for role in MEMBER_ROLES {
                let (Some(own), Some(member)) =
                    (m.parts.get(*role), m.parts.get(&format!("{role}@{name}")))
                else {
                    return err(format!(
                        "{}: ensemble member \"{name}\" needs parts.{role} and parts.{role}@{name}",
                        here.display()
                    ));
                };
                // The models' features are kept side by side and cut apart by equal widths.
                if (&own.inputs, &own.outputs) != (&member.inputs, &member.outputs) {
                    return err(format!(
                        "{}: parts.{role}@{name} must declare the inputs and outputs of parts.{role}",
                        here.display()
                    ));
                }
            }
        }
        for role in m.parts.keys() {
            if let Some((base, member)) = role.split_once('@')
                && (!MEMBER_ROLES.contains(&base) || !m.ensemble.iter().any(|n| n == member))
            {
                return err(format!(
                    "{}: parts.{role}: \"{member}\" is not in ensemble, or {base} is not one of a member's graphs ({})",
                    here.display(),
                    MEMBER_ROLES.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The part-name suffix of each model scored: `""` for the bundle's own graphs, then
    /// `"@name"` for each ensemble member.
    pub fn models(&self) -> Vec<String> {
        std::iter::once(String::new())
            .chain(self.manifest.ensemble.iter().map(|n| format!("@{n}")))
            .collect()
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn part(&self, role: &str) -> Result<&Part, BundleError> {
        self.manifest.parts.get(role).ok_or_else(|| {
            BundleError(format!(
                "{}: no part \"{role}\"",
                self.manifest_path().display()
            ))
        })
    }

    pub fn preprocess(&self, role: &str) -> Result<&Preprocess, BundleError> {
        self.manifest.preprocess.get(role).ok_or_else(|| {
            BundleError(format!(
                "{}: no preprocess.{role}",
                self.manifest_path().display()
            ))
        })
    }

    /// A float32 constant.
    pub fn constant_f32(&self, name: &str) -> Result<Vec<f32>, BundleError> {
        let c = self.constant(name, "float32")?;
        Ok(c.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// An int64 constant.
    pub fn constant_i64(&self, name: &str) -> Result<Vec<i64>, BundleError> {
        let c = self.constant(name, "int64")?;
        Ok(c.chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect())
    }

    fn constant(&self, name: &str, dtype: &str) -> Result<Vec<u8>, BundleError> {
        let here = self.manifest_path();
        let c = self
            .manifest
            .constants
            .get(name)
            .ok_or_else(|| BundleError(format!("{}: no constants.{name}", here.display())))?;
        if c.dtype != dtype {
            return err(format!(
                "{}: constants.{name}.dtype is {}, expected {dtype}",
                here.display(),
                c.dtype
            ));
        }
        std::fs::read(self.dir.join(&c.file))
            .map_err(|e| BundleError(format!("{}: {e}", self.dir.join(&c.file).display())))
    }
}
