// SPDX-License-Identifier: MPL-2.0
//! Reading a model bundle's `bundle.json` (documented in `onnx/README.md`): the manifest's
//! types, loading, and access to its parts; the checks made at load are in [`check`]. Errors
//! name the file and the field at fault.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result, Words};

mod check;

pub const FORMAT: &str = "gst-qoe-bundle";
/// The newest format this reader knows; it reads every version from 1. Version 2 adds
/// `ensemble`, which a version-1 reader would ignore and so score differently; version 3
/// adds `parts.*.batch`, whose decoders take an `attention_mask` that an older reader does
/// not feed.
pub const FORMAT_VERSION: u32 = 3;
/// The first format version with batching parts.
pub const BATCH_FORMAT_VERSION: u32 = 3;
pub const MANIFEST: &str = "bundle.json";

/// The largest picture side a bundle may ask for.
pub const MAX_PICTURE_SIDE: usize = 4096;
/// The largest decoder width a bundle may declare.
pub const MAX_HIDDEN_SIZE: usize = 65536;
/// The most frames any sampling count may name.
pub const MAX_FRAMES: usize = 4096;

fn err<T>(message: impl Into<String>) -> Result<T> {
    Err(Error::Bundle(message.into()))
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
    /// Whether the graph scores several rows (windows, of any streams) in one call: every
    /// input and output leads with the same named batch dimension, and a decoder takes an
    /// `attention_mask` so that left-padded rows of different lengths score as alone.
    #[serde(default)]
    pub batch: bool,
}

/// How frames are resized to an encoder's input. Only Pillow's bicubic filter, reproduced to
/// the byte ([`crate::preprocess`]), is implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ResizeFilter {
    #[serde(rename = "pillow-bicubic")]
    PillowBicubic,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Preprocess {
    pub size: [usize; 2],
    pub resize: ResizeFilter,
    pub rescale: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Clone, Deserialize)]
pub struct KeyframeSampling {
    pub per_second: u32,
    pub rule: KeyframeRule,
    pub count: Option<usize>,
}

/// Which frame of each second is a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyframeRule {
    /// The first frame of each second (VQA²'s reference: indices 0, R, 2R…).
    FirstFrameOfEachSecond,
    /// The first frame at or after the middle of each second. Streams cut into segments of
    /// whole seconds start every second or two with an intra frame, which shows no concealment
    /// damage and the least coding damage; mid-second frames show what viewers mostly see.
    MiddleFrameOfEachSecond,
}

impl KeyframeRule {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyframeRule::FirstFrameOfEachSecond => "first-frame-of-each-second",
            KeyframeRule::MiddleFrameOfEachSecond => "middle-frame-of-each-second",
        }
    }

    /// How far into each second the keyframe is due.
    pub fn phase(self) -> qoe_core::time::Nanos {
        match self {
            KeyframeRule::FirstFrameOfEachSecond => 0,
            KeyframeRule::MiddleFrameOfEachSecond => qoe_core::time::SECOND / 2,
        }
    }
}

/// How the motion branch takes frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MotionMode {
    /// VQA²: per-frame features (every `stride`-th frame).
    Frames,
    /// LMM-VQA: one token per second's chunk of `chunk_frames` frames.
    Chunks,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MotionSampling {
    pub mode: MotionMode,
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
    pub dtype: ConstantType,
}

/// The element type of a constant's raw little-endian file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConstantType {
    Float32,
    Float16,
    Int64,
}

impl ConstantType {
    pub fn bytes(self) -> usize {
        match self {
            ConstantType::Float32 => 4,
            ConstantType::Float16 => 2,
            ConstantType::Int64 => 8,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConstantType::Float32 => "float32",
            ConstantType::Float16 => "float16",
            ConstantType::Int64 => "int64",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Level {
    pub word: String,
    pub token_id: u32,
    pub weight: f64,
}

/// How a bundle turns features into a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreMode {
    /// VQA²: softmax over the level words' logits, then their weighted sum.
    LevelLogits,
    /// LMM-VQA: the first number of a generated answer.
    GeneratedNumber,
    /// CP-LLM: the mean of a quality head's per-keyframe scores.
    QualityHead,
    /// No score: the bundle only explains (VQA²-Assistant).
    None,
}

impl ScoreMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ScoreMode::LevelLogits => "level-logits",
            ScoreMode::GeneratedNumber => "generated-number",
            ScoreMode::QualityHead => "quality-head",
            ScoreMode::None => "none",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Score {
    pub mode: ScoreMode,
    pub part: Option<PartName>,
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
    Embed { embed: Block },
}

/// An embedding block of the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Block {
    /// VQA²: the keyframes' vision tokens (and the image newline).
    Keyframes,
    /// VQA²: the motion tokens.
    Motion,
    /// LMM-VQA: the fused CLIP and SlowFast tokens.
    Visual,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Prompt {
    pub blocks: BTreeMap<String, Vec<String>>,
    pub segments: Vec<Segment>,
    pub stall_format: String,
    #[serde(default)]
    pub stall_text: BTreeMap<String, String>,
}

/// Which rows of the embedding table the bundle carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VocabularyRows {
    All,
    /// Only the prompt's tokens; `rows_constant` maps rows to token ids.
    Subset,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Vocabulary {
    pub size: usize,
    pub rows: VocabularyRows,
    pub rows_constant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub name: String,
    pub family: Family,
    pub variant: String,
    pub precision: String,
    pub sampling: Sampling,
    pub parts: BTreeMap<PartName, Part>,
    pub preprocess: BTreeMap<Role, Preprocess>,
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
    /// The smallest picture side (pixels) worth scoring; smaller video is "too small to
    /// score" rather than given a level. Default [`DEFAULT_MIN_PICTURE_SIDE`].
    pub min_picture_side: Option<usize>,
}

/// Pictures with a side below this many pixels are too small to score, unless a bundle says.
pub const DEFAULT_MIN_PICTURE_SIDE: usize = 24;

/// The model family a bundle belongs to: which graphs it has and how they are chained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Family {
    /// VQA²: vision tokens per keyframe, motion features per frame, a decoder prefill.
    #[serde(rename = "vqa2")]
    Vqa2,
    /// LMM-VQA: CLIP tokens per keyframe, a SlowFast token per second, a generated answer.
    #[serde(rename = "lmm-vqa")]
    LmmVqa,
    /// CP-LLM: a quality head's score per keyframe from two encoders.
    #[serde(rename = "cp-llm")]
    CpLlm,
}

impl Family {
    /// The graphs every bundle of this family must have.
    pub fn required_roles(self) -> &'static [Role] {
        match self {
            Family::Vqa2 => &[
                Role::KeyframeEncoder,
                Role::MotionEncoder,
                Role::MotionProjector,
            ],
            Family::LmmVqa => &[
                Role::KeyframeEncoder,
                Role::MotionEncoder,
                Role::VisualProjector,
                Role::TokenEmbedding,
                Role::DecoderGenerate,
            ],
            Family::CpLlm => &[
                Role::HighLevelEncoder,
                Role::LowLevelEncoder,
                Role::QualityHead,
            ],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Vqa2 => "vqa2",
            Family::LmmVqa => "lmm-vqa",
            Family::CpLlm => "cp-llm",
        }
    }
}

/// A graph's job in a bundle: the key of `parts` (before any `@member`) and of `preprocess`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    KeyframeEncoder,
    MotionEncoder,
    MotionProjector,
    VisualProjector,
    TokenEmbedding,
    DecoderScore,
    DecoderGenerate,
    HighLevelEncoder,
    LowLevelEncoder,
    QualityHead,
}

impl Words for Role {
    const ALL: &'static [Role] = &[
        Role::KeyframeEncoder,
        Role::MotionEncoder,
        Role::MotionProjector,
        Role::VisualProjector,
        Role::TokenEmbedding,
        Role::DecoderScore,
        Role::DecoderGenerate,
        Role::HighLevelEncoder,
        Role::LowLevelEncoder,
        Role::QualityHead,
    ];

    fn word(self) -> &'static str {
        self.as_str()
    }
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::KeyframeEncoder => "keyframe_encoder",
            Role::MotionEncoder => "motion_encoder",
            Role::MotionProjector => "motion_projector",
            Role::VisualProjector => "visual_projector",
            Role::TokenEmbedding => "token_embedding",
            Role::DecoderScore => "decoder_score",
            Role::DecoderGenerate => "decoder_generate",
            Role::HighLevelEncoder => "high_level_encoder",
            Role::LowLevelEncoder => "low_level_encoder",
            Role::QualityHead => "quality_head",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The graphs each ensemble member has of its own.
pub const MEMBER_ROLES: [Role; 3] = [
    Role::KeyframeEncoder,
    Role::MotionEncoder,
    Role::MotionProjector,
];

/// A key of `parts`: a role, and for an ensemble member's own graph its name (`role@name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartName {
    pub role: Role,
    pub member: Option<String>,
}

impl PartName {
    /// The bundle's own graph for `role`.
    pub fn own(role: Role) -> PartName {
        PartName { role, member: None }
    }

    /// `role` of the model `member` (`None`: the bundle's own).
    pub fn of(role: Role, member: Option<&str>) -> PartName {
        PartName {
            role,
            member: member.map(str::to_owned),
        }
    }
}

impl std::fmt::Display for PartName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.member {
            None => f.write_str(self.role.as_str()),
            Some(member) => write!(f, "{}@{member}", self.role),
        }
    }
}

impl std::str::FromStr for PartName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let (role, member) = match s.split_once('@') {
            Some((role, member)) => (role, Some(member.to_owned())),
            None => (s, None),
        };
        let role = Role::from_word(role).ok_or_else(|| {
            Error::Bundle(format!(
                "part \"{s}\": \"{role}\" is not a known role ({})",
                Role::list()
            ))
        })?;
        Ok(PartName { role, member })
    }
}

impl<'de> Deserialize<'de> for PartName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A bundle folder with its checked manifest.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Bundle {
    /// Reads `dir/bundle.json` and checks that everything it names exists and fits.
    pub fn load(dir: &Path) -> Result<Bundle> {
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
            .map_err(|e| Error::Bundle(format!("{}: not JSON: {e}", path.display())))?;
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
        // The path of the field at fault leads the message ("score.mode: unknown variant").
        let reader = &mut serde_json::Deserializer::from_str(&text);
        let manifest: Manifest = serde_path_to_error::deserialize(reader)
            .map_err(|e| Error::Bundle(format!("{}: {e}", path.display())))?;
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

    /// The models scored: `None` for the bundle's own graphs, then each ensemble member's
    /// name.
    pub fn models(&self) -> Vec<Option<String>> {
        std::iter::once(None)
            .chain(self.manifest.ensemble.iter().cloned().map(Some))
            .collect()
    }

    /// Whether a `width`×`height` picture is big enough to score with this bundle.
    pub fn can_score_size(&self, width: usize, height: usize) -> bool {
        let min = self
            .manifest
            .min_picture_side
            .unwrap_or(DEFAULT_MIN_PICTURE_SIDE);
        width >= min && height >= min
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn part(&self, name: &PartName) -> Result<&Part> {
        self.manifest.parts.get(name).ok_or_else(|| {
            Error::Bundle(format!(
                "{}: no part \"{name}\"",
                self.manifest_path().display()
            ))
        })
    }

    pub fn preprocess(&self, role: Role) -> Result<&Preprocess> {
        self.manifest.preprocess.get(&role).ok_or_else(|| {
            Error::Bundle(format!(
                "{}: no preprocess.{role}",
                self.manifest_path().display()
            ))
        })
    }

    /// A float32 constant.
    pub fn constant_f32(&self, name: &str) -> Result<Vec<f32>> {
        let c = self.constant(name, ConstantType::Float32)?;
        Ok(c.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// An int64 constant.
    pub fn constant_i64(&self, name: &str) -> Result<Vec<i64>> {
        let c = self.constant(name, ConstantType::Int64)?;
        Ok(c.chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("chunks of 8")))
            .collect())
    }

    fn constant(&self, name: &str, dtype: ConstantType) -> Result<Vec<u8>> {
        let here = self.manifest_path();
        let c = self
            .manifest
            .constants
            .get(name)
            .ok_or_else(|| Error::Bundle(format!("{}: no constants.{name}", here.display())))?;
        if c.dtype != dtype {
            return err(format!(
                "{}: constants.{name}.dtype is {}, expected {}",
                here.display(),
                c.dtype.as_str(),
                dtype.as_str()
            ));
        }
        let file = self.dir.join(&c.file);
        std::fs::read(&file).map_err(|e| Error::Bundle(format!("{}: {e}", file.display())))
    }
}
