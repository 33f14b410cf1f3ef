// SPDX-License-Identifier: MPL-2.0
//! The checks a manifest passes when a bundle loads, each failure naming the file and field:
//! paths that stay inside the bundle folder, sizes and counts within bounds, the graphs a
//! family needs, constants that fit their files, and the ensemble rules.

use std::path::{Path, PathBuf};

use super::*;

impl Bundle {
    /// `file`, named by manifest field `field`, as a path inside the bundle folder: relative
    /// and without `..`, so that a manifest cannot reach files outside it. (Symbolic links
    /// placed inside the folder are the bundle author's choice and are followed.)
    fn contained(&self, field: &str, file: &str) -> Result<PathBuf> {
        let path = Path::new(file);
        let escapes = path.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
        if file.is_empty() || escapes {
            return err(format!(
                "{}: {field} \"{file}\" must be a relative path inside the bundle folder (no leading /, no ..)",
                self.manifest_path().display()
            ));
        }
        Ok(self.dir.join(path))
    }

    /// Sizes and counts a scorer allocates from: non-zero and within sane bounds, so that a
    /// hostile manifest is refused here rather than exhausting memory or dividing by zero.
    fn check_values(&self) -> Result<()> {
        let m = &self.manifest;
        let here = self.manifest_path();
        let bad = |field: String, value: String, want: &str| {
            err(format!("{}: {field} is {value}; {want}", here.display()))
        };
        for (role, pre) in &m.preprocess {
            if pre
                .size
                .iter()
                .any(|side| !(1..=MAX_PICTURE_SIDE).contains(side))
            {
                return bad(
                    format!("preprocess.{role}.size"),
                    format!("{:?}", pre.size),
                    &format!("each side must be 1 to {MAX_PICTURE_SIDE}"),
                );
            }
            if pre.std.iter().any(|v| !v.is_finite() || *v == 0.0)
                || pre.mean.iter().any(|v| !v.is_finite())
            {
                return bad(
                    format!("preprocess.{role}.mean/std"),
                    format!("{:?}/{:?}", pre.mean, pre.std),
                    "they must be finite, and std non-zero",
                );
            }
        }
        if let Some(d) = &m.decoder {
            for (field, value, max) in [
                ("hidden_size", d.hidden_size, MAX_HIDDEN_SIZE),
                ("layers", d.layers, 1024),
                ("kv_heads", d.kv_heads, 1024),
                ("head_dim", d.head_dim, 4096),
                ("vocab_size", d.vocab_size, 1 << 24),
            ] {
                if !(1..=max).contains(&value) {
                    return bad(
                        format!("decoder.{field}"),
                        value.to_string(),
                        &format!("it must be 1 to {max}"),
                    );
                }
            }
        }
        if let Some(motion) = &m.sampling.motion {
            for (field, value) in [
                ("stride", Some(motion.stride)),
                ("trim_before_stride", Some(motion.trim_before_stride)),
                ("multiple", Some(motion.multiple)),
                ("max_frames", motion.max_frames),
                ("chunk_frames", motion.chunk_frames),
            ] {
                if let Some(v) = value
                    && !(1..=MAX_FRAMES).contains(&v)
                {
                    return bad(
                        format!("sampling.motion.{field}"),
                        v.to_string(),
                        &format!("it must be 1 to {MAX_FRAMES}"),
                    );
                }
            }
        }
        if let Some(count) = m.sampling.keyframes.count
            && !(1..=MAX_FRAMES).contains(&count)
        {
            return bad(
                "sampling.keyframes.count".into(),
                count.to_string(),
                &format!("it must be 1 to {MAX_FRAMES}"),
            );
        }
        // LMM-VQA's motion chunks and CP-LLM's frames start where each second does.
        if m.sampling.keyframes.rule != KeyframeRule::FirstFrameOfEachSecond
            && m.family != Family::Vqa2
        {
            return bad(
                "sampling.keyframes.rule".into(),
                m.sampling.keyframes.rule.as_str().into(),
                &format!(
                    "a {} bundle takes the first frame of each second (first-frame-of-each-second)",
                    m.family.as_str()
                ),
            );
        }
        // Decoder families need their prompt and decoder; level-logits its levels.
        if m.family != Family::CpLlm {
            if m.prompt.is_none() {
                return err(format!(
                    "{}: prompt is missing: every {} bundle has one",
                    here.display(),
                    m.family.as_str()
                ));
            }
            if m.decoder.is_none() {
                return err(format!(
                    "{}: decoder is missing: every {} bundle has one",
                    here.display(),
                    m.family.as_str()
                ));
            }
        }
        if m.score.mode == ScoreMode::LevelLogits && m.score.levels.is_empty() {
            return err(format!(
                "{}: score.levels is empty: level-logits scores need the level words",
                here.display()
            ));
        }
        Ok(())
    }

    pub(super) fn check(&self) -> Result<()> {
        let m = &self.manifest;
        let here = self.manifest_path();
        for (name, part) in &m.parts {
            self.contained(&format!("parts.{name}.file"), &part.file)?;
        }
        for (name, constant) in &m.constants {
            self.contained(&format!("constants.{name}.file"), &constant.file)?;
        }
        self.contained("tokenizer", &m.tokenizer)?;
        self.check_values()?;
        for (name, part) in &m.parts {
            if !self.dir.join(&part.file).is_file() {
                return err(format!(
                    "{}: parts.{name}.file \"{}\" does not exist",
                    here.display(),
                    part.file
                ));
            }
        }
        for role in m.family.required_roles() {
            if !m.parts.contains_key(&PartName::own(*role)) {
                return err(format!(
                    "{}: parts.{role} is missing: every {} bundle has it",
                    here.display(),
                    m.family.as_str()
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
            let expected = constant
                .shape
                .iter()
                .try_fold(constant.dtype.bytes(), |n, d| n.checked_mul(*d));
            let Some(expected) = expected else {
                return err(format!(
                    "{}: constants.{name}.shape {:?} is too large",
                    here.display(),
                    constant.shape
                ));
            };
            if size != expected {
                return err(format!(
                    "{}: {size} bytes, but constants.{name} declares shape {:?} of {} ({expected} bytes)",
                    file.display(),
                    constant.shape,
                    constant.dtype.as_str()
                ));
            }
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
            && !m
                .parts
                .get(&PartName::own(Role::DecoderScore))
                .is_some_and(|p| {
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
        for (name, part) in &m.parts {
            if part.batch {
                if m.format_version < BATCH_FORMAT_VERSION {
                    return err(format!(
                        "{}: parts.{name}.batch needs format_version {BATCH_FORMAT_VERSION} or later (it is {}): older readers would not feed the attention mask",
                        here.display(),
                        m.format_version
                    ));
                }
                check_batch(&here.display().to_string(), name, part)?;
            }
        }
        if !self.dir.join(&m.tokenizer).is_file() {
            return err(format!(
                "{}: tokenizer \"{}\" does not exist",
                here.display(),
                m.tokenizer
            ));
        }
        Ok(())
    }

    fn check_ensemble(&self) -> Result<()> {
        let m = &self.manifest;
        let here = self.manifest_path();
        if m.ensemble.is_empty() {
            if let Some(name) = m.parts.keys().find(|p| p.member.is_some()) {
                return err(format!(
                    "{}: parts.{name} names an ensemble member, but the manifest has no ensemble",
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
        if m.score.mode != ScoreMode::LevelLogits || m.family != Family::Vqa2 {
            return err(format!(
                "{}: ensemble is for VQA² bundles scored by level-logits (score.mode is \"{}\")",
                here.display(),
                m.score.mode.as_str()
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
                let (Some(own), Some(member)) = (
                    m.parts.get(&PartName::own(role)),
                    m.parts.get(&PartName::of(role, Some(name))),
                ) else {
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
        for name in m.parts.keys() {
            if let Some(member) = &name.member
                && (!MEMBER_ROLES.contains(&name.role) || !m.ensemble.contains(member))
            {
                return err(format!(
                    "{}: parts.{name}: \"{member}\" is not in ensemble, or {} is not one of a member's graphs ({})",
                    here.display(),
                    name.role,
                    MEMBER_ROLES.map(Role::as_str).join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// A part that says it batches: every tensor leads with one named dimension, and a decoder
/// takes the attention mask that makes padding harmless.
fn check_batch(here: &str, name: &PartName, part: &super::Part) -> Result<()> {
    let mut batch_dim: Option<&str> = None;
    for (kind, specs) in [("inputs", &part.inputs), ("outputs", &part.outputs)] {
        for spec in specs.iter() {
            match spec.shape.first() {
                Some(super::Dim::Named(dim)) if batch_dim.is_none_or(|b| b == dim) => {
                    batch_dim = Some(dim)
                }
                other => {
                    return err(format!(
                        "{here}: parts.{name}.batch is true, but its {kind} \"{}\" leads with {} where every tensor must lead with the batch dimension \"{}\"",
                        spec.name,
                        match other {
                            Some(super::Dim::Fixed(n)) => n.to_string(),
                            Some(super::Dim::Named(d)) => format!("\"{d}\""),
                            None => "no dimension".into(),
                        },
                        batch_dim.unwrap_or("batch")
                    ));
                }
            }
        }
    }
    if name.role == Role::DecoderScore && !part.inputs.iter().any(|i| i.name == "attention_mask") {
        return err(format!(
            "{here}: parts.{name}.batch is true, but it has no \"attention_mask\" input: a batched decoder needs it to pad rows"
        ));
    }
    Ok(())
}
