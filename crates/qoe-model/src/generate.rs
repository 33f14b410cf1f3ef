// SPDX-License-Identifier: MPL-2.0
//! Greedy generation with the decoder's KV cache (`decoder_generate`): LMM-VQA's answers and
//! the Assistant bundles' explanations.

use std::collections::HashMap;

use crate::bundle::{PartName, Role};
use crate::error::{Error, Result};
use crate::scorer::{Scorer, f32_tensor, i64_tensor};

impl Scorer {
    /// A prefill of `sequence` (embeddings), then one token per step, until an end token or
    /// `max_new_tokens`. Each step's logits go to `step_logits` if given.
    pub fn greedy(
        &self,
        sequence: Vec<f32>,
        max_new_tokens: usize,
        mut step_logits: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<Vec<u32>> {
        let eos = self
            .decoder()?
            .generation
            .as_ref()
            .map(|g| g.eos_token_ids.clone())
            .unwrap_or_default();
        let past_names = self.past_names(Role::DecoderGenerate)?;
        let mut past = self.empty_past(&past_names)?;
        let row_to_token: Option<HashMap<i64, u32>> = self
            .rows
            .as_ref()
            .map(|m| m.iter().map(|(t, r)| (*r, *t)).collect());
        let generate = PartName::own(Role::DecoderGenerate);
        let (mut embeds, mut start, mut out) = (sequence, 0usize, Vec::new());
        for _ in 0..max_new_tokens {
            let new = embeds.len() / self.hidden;
            let total = start + new;
            let mut inputs: Vec<(String, crate::runner::Input)> = vec![
                (
                    "inputs_embeds".into(),
                    f32_tensor(vec![1, new as i64, self.hidden as i64], embeds),
                ),
                (
                    "attention_mask".into(),
                    i64_tensor(vec![1, total as i64], vec![1; total]),
                ),
                (
                    "position_ids".into(),
                    i64_tensor(vec![1, new as i64], (start as i64..total as i64).collect()),
                ),
            ];
            for (name, (shape, data)) in past_names.iter().zip(past.drain(..)) {
                inputs.push((name.clone(), f32_tensor(shape, data)));
            }
            let mut outputs = self.run_all(&generate, inputs)?;
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
            let token = match &row_to_token {
                None => row as u32,
                Some(m) => *m.get(&(row as i64)).ok_or_else(|| {
                    Error::graph(
                        &generate,
                        format!("row {row} is not in the vocabulary subset"),
                    )
                })?,
            };
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
