//! Text in, answers out: the per-head helpers of [`Model`] (`fill_mask`, `classify`, `tag`,
//! `embed`, `hidden`), through the checkpoint's own `tokenizer.json` (the `tokenizers` crate).

use crate::contract::HeadKind;
use crate::error::Error;
use crate::metrics;
use crate::model::Model;
use crate::tokenizer::Text;
use tokenizers::Encoding;

/// A tokenized text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids, special tokens included.
    pub ids: Vec<i32>,
    /// Character offsets of each token in the text (`(0, 0)` for special tokens).
    pub offsets: Vec<(usize, usize)>,
}

/// One candidate for a `[MASK]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fill {
    /// Vocabulary id.
    pub token_id: u32,
    /// The token decoded to text (e.g. `" Paris"`).
    pub token: String,
    /// Softmax probability.
    pub probability: f32,
}

impl std::fmt::Display for Fill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>6.2}%  {:?}", 100.0 * self.probability, self.token)
    }
}

/// The predictions for one `[MASK]` of a text.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskPrediction {
    /// Token position of the mask.
    pub position: usize,
    /// Character offsets of the mask in the text.
    pub start: usize,
    /// End (exclusive) character offset.
    pub end: usize,
    /// Candidates, most probable first.
    pub candidates: Vec<Fill>,
}

impl MaskPrediction {
    /// The `k` most probable candidates.
    pub fn top(&self, k: usize) -> &[Fill] {
        &self.candidates[..k.min(self.candidates.len())]
    }
}

/// A label for one token of a text (token classification).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLabel {
    /// The token as it appears in the text.
    pub text: String,
    /// Character offsets in the text.
    pub start: usize,
    /// End (exclusive) character offset.
    pub end: usize,
    /// The most probable label.
    pub label: String,
    /// Its softmax probability.
    pub score: f32,
}

fn softmax(x: &[f32]) -> Vec<f32> {
    metrics::log_softmax(x)
        .into_iter()
        .map(|v| v.exp() as f32)
        .collect()
}

impl Model {
    fn text(&self) -> Result<&Text, Error> {
        self.tokenizer.as_ref().ok_or_else(|| {
            Error::Tokenizer(
                "the model has no tokenizer (the checkpoint had no tokenizer.json); \
                 tokenize yourself and call run_ids()"
                    .into(),
            )
        })
    }

    fn expect_head(&self, helper: &'static str, expected: HeadKind) -> Result<(), Error> {
        let fill = |h| matches!(h, HeadKind::MaskedLm | HeadKind::FillMask);
        let same = self.info().head == expected || (fill(expected) && fill(self.info().head));
        if !same {
            return Err(Error::WrongHead {
                helper,
                expected: expected.name(),
                actual: self.info().head.name(),
            });
        }
        Ok(())
    }

    /// The padding token id the text helpers pad with.
    pub fn pad_id(&self) -> i32 {
        self.tokenizer.as_ref().map_or(0, |t| t.pad_id)
    }

    /// The mask token id, when the tokenizer has one.
    pub fn mask_id(&self) -> Option<u32> {
        self.tokenizer.as_ref().and_then(|t| t.mask_id)
    }

    /// Tokenize `text` as the model expects: token ids (with special tokens) and their character
    /// offsets. Fails when longer than the sequence length unless the model truncates.
    pub fn tokenize(&self, text: &str) -> Result<Tokens, Error> {
        let enc = self.text()?.encode(text, self.truncates())?;
        Ok(Tokens {
            ids: enc.get_ids().iter().map(|&i| i as i32).collect(),
            offsets: enc.get_offsets().to_vec(),
        })
    }

    fn run_text(&self, text: &str) -> Result<(Encoding, Vec<Vec<f32>>), Error> {
        let (mut encs, mut outs) = self.run_texts(&[text])?;
        Ok((encs.swap_remove(0), outs.swap_remove(0)))
    }

    /// Tokenize and run several texts ([`Model::run_batch`]): encodings and output rows, in order.
    #[allow(clippy::type_complexity)]
    fn run_texts<S: AsRef<str>>(
        &self,
        texts: &[S],
    ) -> Result<(Vec<Encoding>, Vec<Vec<Vec<f32>>>), Error> {
        let t = self.text()?;
        let encs = texts
            .iter()
            .map(|s| t.encode(s.as_ref(), self.truncates()))
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<Vec<i32>> = encs
            .iter()
            .map(|e| e.get_ids().iter().map(|&i| i as i32).collect())
            .collect();
        let refs: Vec<&[i32]> = ids.iter().map(Vec::as_slice).collect();
        let outs = self.run_batch(&refs, t.pad_id)?;
        Ok((encs, outs.into_iter().map(|o| o.rows).collect()))
    }

    /// Fill every `[MASK]` of `text` (mlm head): the 5 most probable tokens per mask.
    pub fn fill_mask(&self, text: &str) -> Result<Vec<MaskPrediction>, Error> {
        self.fill_mask_top(text, 5)
    }

    /// Fill every `[MASK]` of `text` with the `k` most probable tokens (mlm head).
    pub fn fill_mask_top(&self, text: &str, k: usize) -> Result<Vec<MaskPrediction>, Error> {
        self.expect_head("fill_mask", HeadKind::MaskedLm)?;
        let t = self.text()?;
        let mask_id = t
            .mask_id
            .ok_or_else(|| Error::Tokenizer("the tokenizer has no [MASK] / <mask> token".into()))?;
        let enc = t.encode(text, self.truncates())?;
        let ids: Vec<i32> = enc.get_ids().iter().map(|&i| i as i32).collect();
        let masks: Vec<usize> = (0..enc.get_ids().len())
            .filter(|&i| enc.get_ids()[i] == mask_id)
            .collect();
        if masks.is_empty() {
            return Err(Error::Tokenizer(format!(
                "the text has no mask token; write {} where a word should be filled in",
                t.tokenizer
                    .id_to_token(mask_id)
                    .unwrap_or_else(|| "[MASK]".into())
            )));
        }
        // The fill-mask head computes the masks' rows only; mlm computes every row.
        let rows: Vec<Vec<f32>> = if self.info().head == HeadKind::FillMask {
            self.run_positions(&ids, t.pad_id, &masks)?
        } else {
            let all = self.run_ids(&ids, t.pad_id)?.rows;
            masks.iter().map(|&p| all[p].clone()).collect()
        };
        masks
            .into_iter()
            .zip(rows)
            .map(|(pos, row)| {
                let probs = softmax(&row);
                let candidates = metrics::top_k(&row, k)
                    .into_iter()
                    .map(|id| {
                        Ok(Fill {
                            token_id: id as u32,
                            token: t
                                .tokenizer
                                .decode(&[id as u32], false)
                                .map_err(|e| Error::Tokenizer(e.to_string()))?,
                            probability: probs[id],
                        })
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
                let (start, end) = enc.get_offsets()[pos];
                Ok(MaskPrediction {
                    position: pos,
                    start,
                    end,
                    candidates,
                })
            })
            .collect()
    }

    /// Classify `text` (sequence-classification head): every label with its softmax score, most
    /// probable first.
    pub fn classify(&self, text: &str) -> Result<Vec<(String, f32)>, Error> {
        Ok(self.classify_batch(&[text])?.swap_remove(0))
    }

    /// Classify several texts (sequence-classification head), in input order; a packed model runs
    /// them in as few calls as fit.
    pub fn classify_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
    ) -> Result<Vec<Vec<(String, f32)>>, Error> {
        self.expect_head("classify", HeadKind::SequenceClassification)?;
        let (_, outs) = self.run_texts(texts)?;
        Ok(outs
            .into_iter()
            .map(|rows| {
                let probs = softmax(&rows[0]);
                let mut out: Vec<(String, f32)> =
                    self.info().labels.iter().cloned().zip(probs).collect();
                out.sort_by(|a, b| b.1.total_cmp(&a.1));
                out
            })
            .collect())
    }

    /// Label every token of `text` (token-classification head), special tokens left out.
    pub fn tag(&self, text: &str) -> Result<Vec<TokenLabel>, Error> {
        Ok(self.tag_batch(&[text])?.swap_remove(0))
    }

    /// Label the tokens of several texts (token-classification head), in input order; a packed
    /// model runs them in as few calls as fit.
    pub fn tag_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<TokenLabel>>, Error> {
        self.expect_head("tag", HeadKind::TokenClassification)?;
        let (encs, outs) = self.run_texts(texts)?;
        let labels = &self.info().labels;
        Ok(texts
            .iter()
            .zip(encs.iter().zip(outs))
            .map(|(text, (enc, rows))| {
                let chars: Vec<char> = text.as_ref().chars().collect();
                let mut out = Vec::new();
                for (i, row) in rows.iter().enumerate() {
                    if enc.get_special_tokens_mask()[i] == 1 {
                        continue;
                    }
                    let (start, end) = enc.get_offsets()[i];
                    let best = metrics::argmax(row);
                    out.push(TokenLabel {
                        text: chars[start.min(chars.len())..end.min(chars.len())]
                            .iter()
                            .collect(),
                        start,
                        end,
                        label: labels
                            .get(best)
                            .cloned()
                            .unwrap_or_else(|| format!("LABEL_{best}")),
                        score: softmax(row)[best],
                    });
                }
                out
            })
            .collect())
    }

    /// The sentence embedding of `text` (embedding head).
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, Error> {
        Ok(self.embed_batch(&[text])?.swap_remove(0))
    }

    /// Embeddings of several texts (embedding head), in input order; a packed model runs them in
    /// as few calls as fit (each text's embedding is the one it gets alone).
    pub fn embed_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, Error> {
        self.expect_head("embed", HeadKind::Embedding)?;
        let (_, outs) = self.run_texts(texts)?;
        Ok(outs
            .into_iter()
            .map(|mut rows| rows.swap_remove(0))
            .collect())
    }

    /// The last hidden state of every token of `text`, special tokens included (hidden head).
    pub fn hidden(&self, text: &str) -> Result<Vec<Vec<f32>>, Error> {
        self.expect_head("hidden", HeadKind::Hidden)?;
        Ok(self.run_text(text)?.1)
    }
}
