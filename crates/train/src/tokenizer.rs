//! A word-level tokenizer for the captions of [`crate::compose`]: lower-cased words split on
//! whitespace, each word one token, framed as CLIP frames its tokens (`<|startoftext|>` words
//! `<|endoftext|>`, then padding to a fixed length) with a mask of 1 for the tokens and 0 for
//! the padding. The vocabulary is the captions' words, so it is tiny and every prompt in its
//! language is encoded exactly; a word outside it becomes `<|unknown|>` and is reported.
//!
//! Token ids: 0 `<|pad|>`, 1 `<|startoftext|>`, 2 `<|unknown|>`, 3 `<|endoftext|>` (not 2: with
//! `eos_token_id` 2 transformers pools at the largest id instead of at the end-of-text token),
//! then the words in sorted order.

use std::collections::BTreeMap;

use crate::data::DataError;
use crate::error::Result;

pub const PAD: &str = "<|pad|>";
pub const START: &str = "<|startoftext|>";
pub const UNKNOWN: &str = "<|unknown|>";
pub const END: &str = "<|endoftext|>";
pub const PAD_ID: usize = 0;
pub const START_ID: usize = 1;
pub const UNKNOWN_ID: usize = 2;
pub const END_ID: usize = 3;

/// A batch of encoded texts: `ids` rows of one length and the mask (1 token, 0 padding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<Vec<usize>>,
    pub mask: Vec<Vec<u8>>,
}

impl Encoded {
    /// The mask as `[B, S]` values (for a mask tensor).
    pub fn mask_values(&self) -> Vec<f64> {
        self.mask.iter().flatten().map(|&m| f64::from(m)).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WordTokenizer {
    vocabulary: Vec<String>,
    ids: BTreeMap<String, usize>,
    max_length: usize,
}

impl WordTokenizer {
    /// A tokenizer of `words` (special tokens first, then the words sorted and deduplicated)
    /// encoding to `max_length` tokens (at least 2: start and end).
    pub fn new(words: &[String], max_length: usize) -> Result<WordTokenizer> {
        if max_length < 2 {
            return Err(DataError::InvalidArgument {
                op: "WordTokenizer::new",
                msg: format!("max_length {max_length}: a text needs at least its start and end tokens"),
            }
            .into());
        }
        let mut sorted: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
        sorted.sort();
        sorted.dedup();
        let vocabulary: Vec<String> = [PAD, START, UNKNOWN, END]
            .iter()
            .map(|s| s.to_string())
            .chain(sorted.into_iter().filter(|w| !w.is_empty() && !w.contains(char::is_whitespace)))
            .collect();
        let ids = vocabulary.iter().enumerate().map(|(i, w)| (w.clone(), i)).collect();
        Ok(WordTokenizer { vocabulary, ids, max_length })
    }

    /// The tokenizer of the composed captions ([`crate::compose::caption_words`]), 16 tokens.
    pub fn for_captions() -> WordTokenizer {
        WordTokenizer::new(&crate::compose::caption_words(), 16).expect("16 tokens")
    }

    pub fn vocabulary(&self) -> &[String] {
        &self.vocabulary
    }

    pub fn vocab_size(&self) -> usize {
        self.vocabulary.len()
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The words of `text` not in the vocabulary.
    pub fn unknown_words(&self, text: &str) -> Vec<String> {
        text.to_lowercase().split_whitespace().filter(|w| !self.ids.contains_key(*w)).map(str::to_string).collect()
    }

    /// Encodes each text as `<|startoftext|>` its words `<|endoftext|>` padded to
    /// `max_length`; a text of more than `max_length − 2` words is an error naming it.
    pub fn encode(&self, texts: &[&str]) -> Result<Encoded> {
        let (mut ids, mut mask) = (Vec::with_capacity(texts.len()), Vec::with_capacity(texts.len()));
        for text in texts {
            let lower = text.to_lowercase();
            let words: Vec<&str> = lower.split_whitespace().collect();
            if words.len() + 2 > self.max_length {
                let msg = format!("{text:?} has {} words; at most {} fit in {} tokens", words.len(), self.max_length - 2, self.max_length);
                return Err(DataError::InvalidArgument { op: "WordTokenizer::encode", msg }.into());
            }
            let mut row = vec![START_ID];
            row.extend(words.iter().map(|w| self.ids.get(*w).copied().unwrap_or(UNKNOWN_ID)));
            row.push(END_ID);
            let used = row.len();
            row.resize(self.max_length, PAD_ID);
            mask.push((0..self.max_length).map(|i| u8::from(i < used)).collect());
            ids.push(row);
        }
        Ok(Encoded { ids, mask })
    }

    /// The words of a row of ids, without the special tokens.
    pub fn decode(&self, ids: &[usize]) -> String {
        ids.iter().filter(|&&id| id > END_ID).filter_map(|&id| self.vocabulary.get(id)).cloned().collect::<Vec<_>>().join(" ")
    }

    /// The vocabulary as a JSON object `{word: id}` (the layout of CLIP's `vocab.json`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.ids).expect("a map of strings serializes")
    }

    /// A tokenizer from [`WordTokenizer::to_json`]'s text: the ids must be the special tokens
    /// at 0..4 and then 4, 5, … without gaps.
    pub fn from_json(text: &str, max_length: usize) -> Result<WordTokenizer> {
        let invalid = |msg: String| DataError::InvalidArgument { op: "WordTokenizer::from_json", msg };
        let ids: BTreeMap<String, usize> = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut vocabulary = vec![String::new(); ids.len()];
        for (word, &id) in &ids {
            let slot = vocabulary.get_mut(id).ok_or_else(|| invalid(format!("id {id} of {word:?} is past the {} words", ids.len())))?;
            *slot = word.clone();
        }
        if vocabulary[..4.min(vocabulary.len())] != [PAD, START, UNKNOWN, END] {
            return Err(invalid(format!("the special tokens {PAD}, {START}, {UNKNOWN}, {END} must have ids 0 to 3")).into());
        }
        WordTokenizer::new(&vocabulary[4..], max_length)
            .and_then(|t| if t.vocabulary == vocabulary { Ok(t) } else { Err(invalid("the words' ids are not in sorted order".into()).into()) })
    }
}
