//! A model's tokenizer (the checkpoint's own `tokenizer.json`, through the `tokenizers` crate),
//! set up for the model's sequence length. A leaf under [`Model`](crate::Model): the text helpers
//! in `text` use it through the model.

use crate::contract::ContractError;
use crate::error::Error;
use tokenizers::{Encoding, Tokenizer, TruncationParams};

/// A model's tokenizer, set up for its sequence length: no padding (the contract pads), and
/// truncation to S only when asked for.
#[derive(Clone)]
pub(crate) struct Text {
    pub(crate) tokenizer: Tokenizer,
    pub(crate) truncating: Tokenizer,
    pub(crate) seq_len: usize,
    pub(crate) pad_id: i32,
    pub(crate) mask_id: Option<u32>,
}

impl Text {
    pub(crate) fn from_bytes(bytes: &[u8], seq_len: usize) -> Result<Text, Error> {
        let mut tokenizer = Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json does not load: {e}")))?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| {
                ["[PAD]", "<pad>"]
                    .iter()
                    .find_map(|t| tokenizer.token_to_id(t))
            })
            .unwrap_or(0) as i32;
        let mask_id = ["[MASK]", "<mask>"]
            .iter()
            .find_map(|t| tokenizer.token_to_id(t));
        tokenizer.with_padding(None);
        let mut truncating = tokenizer.clone();
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        truncating
            .with_truncation(Some(TruncationParams {
                max_length: seq_len,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Text {
            tokenizer,
            truncating,
            seq_len,
            pad_id,
            mask_id,
        })
    }

    /// Tokenize with special tokens and character offsets; fails on texts longer than S unless
    /// `truncate`.
    pub(crate) fn encode(&self, text: &str, truncate: bool) -> Result<Encoding, Error> {
        let t = if truncate {
            &self.truncating
        } else {
            &self.tokenizer
        };
        let enc = t
            .encode_char_offsets(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        if enc.get_ids().len() > self.seq_len {
            return Err(ContractError::TooLong {
                tokens: enc.get_ids().len(),
                seq_len: self.seq_len,
            }
            .into());
        }
        Ok(enc)
    }
}
