//! Rewards of an imported benchmark's comparisons with every distinct (prompt, reply)
//! computed once: a best-of-4 set of RewardBench 2 is three comparisons but four
//! replies, so it costs four forward passes, not six, and an RM-Bench matrix (nine
//! comparisons) costs six.
//!
//! The model boundary scores pairs (`RewardModel::score` gives r(x, y_w) and
//! r(x, y_l), each a function of its own prompt and reply), so the distinct replies of
//! a prompt are paired two by two in first-seen order; an odd one out is paired with
//! the prompt's first reply (one extra pass). Each scoring pair shares its prompt, which
//! the packed decoder path computes once.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use synpref_engine::hashing::{content_hash, derived_pair_id, pair_key};
use synpref_engine::model::{Conversation, PreferencePair, RowKey};
use synpref_engine::Result;
use synpref_operators::models::RewardModel;

use super::BenchRow;

/// What scoring an imported set took.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplyCount {
    /// Comparisons in the set (rows).
    pub comparisons: u64,
    /// Distinct (prompt, reply) texts: the forward passes an ideal scorer needs.
    pub distinct_replies: u64,
    /// Sequences sent to the model (distinct replies, plus one per prompt with an odd
    /// number of them).
    pub sequences_scored: u64,
}

type TextKey = u128;

/// The hash of a sequence of texts (a prompt; a prompt and a reply).
fn text_key(parts: &[&Conversation]) -> TextKey {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for c in parts {
        c.hash_into(&mut h);
    }
    h.digest128()
}

/// (r_chosen, r_rejected) of every row, in order.
pub fn row_rewards(
    rows: &[BenchRow],
    model: &dyn RewardModel,
    chunk_pairs: usize,
) -> Result<(Vec<(f32, f32)>, ReplyCount)> {
    // Distinct replies per prompt, in first-seen order, and each row's two keys.
    let mut prompts: Vec<(Conversation, Vec<Conversation>)> = Vec::new();
    let mut prompt_index: HashMap<u128, usize> = HashMap::new();
    let mut seen: HashSet<TextKey> = HashSet::new();
    let mut row_keys = Vec::with_capacity(rows.len());
    for row in rows {
        let prompt = row.prompt.conversation();
        let p = *prompt_index.entry(text_key(&[&prompt])).or_insert_with(|| {
            prompts.push((prompt.clone(), Vec::new()));
            prompts.len() - 1
        });
        let mut keys = [0u128; 2];
        for (k, reply) in [&row.chosen, &row.rejected].into_iter().enumerate() {
            let reply = reply.conversation();
            keys[k] = text_key(&[&prompt, &reply]);
            if seen.insert(keys[k]) {
                prompts[p].1.push(reply);
            }
        }
        row_keys.push(keys);
    }
    let mut scoring = Vec::new();
    for (prompt, replies) in &prompts {
        for two in replies.chunks(2) {
            let second = two.get(1).unwrap_or(&replies[0]);
            scoring.push(scoring_pair(scoring.len() as u64, prompt, &two[0], second));
        }
    }
    let mut reward: HashMap<TextKey, f32> = HashMap::with_capacity(seen.len());
    for chunk in scoring.chunks(chunk_pairs.max(1)) {
        let refs: Vec<&PreferencePair> = chunk.iter().collect();
        let scored = model.score(&refs).map_err(|e| e.for_setting("--model"))?;
        for (pair, (a, b)) in chunk.iter().zip(scored) {
            reward
                .entry(text_key(&[&pair.prompt, &pair.chosen]))
                .or_insert(a);
            reward
                .entry(text_key(&[&pair.prompt, &pair.rejected]))
                .or_insert(b);
        }
    }
    let count = ReplyCount {
        comparisons: rows.len() as u64,
        distinct_replies: seen.len() as u64,
        sequences_scored: 2 * scoring.len() as u64,
    };
    let out = row_keys
        .iter()
        .map(|[c, r]| (reward[c], reward[r]))
        .collect();
    Ok((out, count))
}

fn scoring_pair(
    i: u64,
    prompt: &Conversation,
    a: &Conversation,
    b: &Conversation,
) -> PreferencePair {
    let hash = content_hash(prompt, a, b);
    let pair_id = derived_pair_id(hash);
    PreferencePair {
        key: RowKey::new(0, i),
        row: i,
        pair_key: pair_key(&pair_id),
        content_hash: hash,
        dedup_hash: hash,
        ..PreferencePair::outside_pool(pair_id, prompt.clone(), a.clone(), b.clone())
    }
}
