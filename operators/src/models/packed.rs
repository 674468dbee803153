//! Packed, unpadded batches for decoder reward models, with prompt sharing.
//!
//! A packed batch concatenates token sequences with no padding (the "varlen" layout of
//! FlashAttention's `flash_attn_varlen` and text-embeddings-inference): every per-token
//! layer (norms, projections, MLP) runs over exactly the real tokens, and only attention
//! needs to know where one sequence ends and the next begins, which the batch records as
//! *groups*.
//!
//! A group is a shared prefix followed by branches. The chosen and the rejected sequence
//! of a pair are both `template(prompt + reply)`, so they begin with the same tokens; with
//! a causal model the hidden states of those tokens are the same in both sequences, so
//! they are computed once (the prefix) and each reply (a branch) attends to the prefix's
//! keys and values and to its own earlier tokens. The shared part is the longest common
//! token prefix of the sequences, found on the ids themselves: no assumption about where
//! the template puts the prompt, and a pair with an empty or a truncated prompt simply
//! shares less (possibly nothing). A branch token at offset j has the RoPE position
//! `prefix + j`, the position it has in its own unshared sequence, so every query sees
//! the same keys at the same positions as in the unshared computation.

/// One attention group: `prefix` shared tokens from `start`, then the branches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Packed index of the prefix's first token.
    pub start: usize,
    /// Tokens in the shared prefix (0: no sharing).
    pub prefix: usize,
    /// Each branch's first packed index and length (a branch may be empty, when its
    /// sequence is the prefix itself).
    pub branches: Vec<Segment>,
}

/// A run of packed tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: usize,
    pub len: usize,
}

impl Group {
    /// The packed index of position `pos` of the sequence that continues with `branch`
    /// (`None`: a prefix token's own sequence, only valid for `pos < prefix`).
    #[inline]
    pub fn token_at(&self, branch: Option<usize>, pos: usize) -> usize {
        if pos < self.prefix {
            self.start + pos
        } else {
            let b = branch.expect("a position past the prefix belongs to a branch");
            self.branches[b].start + (pos - self.prefix)
        }
    }

    /// The segments of queries of this group: the prefix (branch `None`), then each
    /// branch, with the position of their first token.
    pub fn query_segments(&self) -> impl Iterator<Item = (Option<usize>, Segment, usize)> + '_ {
        let prefix = Segment {
            start: self.start,
            len: self.prefix,
        };
        std::iter::once((None, prefix, 0)).chain(
            self.branches
                .iter()
                .enumerate()
                .map(|(b, s)| (Some(b), *s, self.prefix)),
        )
    }
}

/// Token ids of one packed batch, their RoPE positions, their attention groups, and per
/// output row the packed index of the token its reward is read at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackedBatch {
    pub ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub groups: Vec<Group>,
    /// Per output row (sequence, in the order pushed): the pooled token's packed index.
    pub pooled: Vec<usize>,
    /// Tokens the same sequences hold unshared: what a padding-free, sharing-free batch
    /// would compute (for the report).
    pub sequence_tokens: usize,
}

impl PackedBatch {
    /// Tokens computed: the length of the packed batch.
    pub fn tokens(&self) -> usize {
        self.ids.len()
    }

    /// Output rows (sequences) pushed so far.
    pub fn rows(&self) -> usize {
        self.pooled.len()
    }

    /// The tokens `seqs` would add if pushed with `push_shared`.
    pub fn shared_cost(seqs: &[&[u32]]) -> usize {
        // An empty sequence is one pad token and shares nothing (then p = 0).
        let p = common_prefix(seqs);
        p + seqs.iter().map(|s| s.len().max(1) - p).sum::<usize>()
    }

    /// Appends `seqs` as one group sharing their longest common prefix. `pooled_at(seq)`
    /// is the index within a sequence whose hidden state gives its output. An empty
    /// sequence counts as one `pad` token (as a padded batch would hold it).
    pub fn push_shared(&mut self, seqs: &[&[u32]], pad: u32, pooled_at: impl Fn(&[u32]) -> usize) {
        let pad_only = [pad];
        let seqs: Vec<&[u32]> = seqs
            .iter()
            .map(|s| if s.is_empty() { &pad_only[..] } else { *s })
            .collect();
        let prefix = common_prefix(&seqs);
        let start = self.ids.len();
        self.ids.extend_from_slice(&seqs[0][..prefix]);
        self.positions.extend(0..prefix as u32);
        let mut group = Group {
            start,
            prefix,
            branches: Vec::with_capacity(seqs.len()),
        };
        for s in &seqs {
            let rest = &s[prefix..];
            group.branches.push(Segment {
                start: self.ids.len(),
                len: rest.len(),
            });
            self.ids.extend_from_slice(rest);
            self.positions
                .extend(prefix as u32..(prefix + rest.len()) as u32);
        }
        for (b, s) in seqs.iter().enumerate() {
            self.pooled.push(group.token_at(Some(b), pooled_at(s)));
            self.sequence_tokens += s.len();
        }
        self.groups.push(group);
    }

    /// Appends one sequence on its own (a group whose prefix is the whole sequence).
    pub fn push_alone(&mut self, seq: &[u32], pad: u32, pooled_at: impl Fn(&[u32]) -> usize) {
        self.push_shared(&[seq], pad, pooled_at)
    }

    /// The sequences of the batch, unshared, in output-row order (for the eager path
    /// and for tests).
    pub fn sequences(&self) -> Vec<Vec<u32>> {
        let mut out = Vec::with_capacity(self.rows());
        for g in &self.groups {
            let prefix = &self.ids[g.start..g.start + g.prefix];
            for b in &g.branches {
                let mut s = prefix.to_vec();
                s.extend_from_slice(&self.ids[b.start..b.start + b.len]);
                out.push(s);
            }
        }
        out
    }
}

/// Length of the longest prefix all `seqs` share. A single sequence shares all of
/// itself (its group is one prefix and one empty branch).
pub fn common_prefix(seqs: &[&[u32]]) -> usize {
    let Some((first, rest)) = seqs.split_first() else {
        return 0;
    };
    rest.iter().fold(first.len(), |n, s| {
        first[..n]
            .iter()
            .zip(s.iter())
            .take_while(|(a, b)| a == b)
            .count()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(s: &[u32]) -> usize {
        s.len() - 1
    }

    #[test]
    fn shared_prefix_is_stored_once_and_positions_continue_it() {
        let mut b = PackedBatch::default();
        b.push_shared(&[&[1, 2, 3, 4], &[1, 2, 5]], 0, last);
        assert_eq!(b.ids, vec![1, 2, 3, 4, 5]);
        assert_eq!(b.positions, vec![0, 1, 2, 3, 2]);
        assert_eq!(b.pooled, vec![3, 4]);
        assert_eq!(b.sequence_tokens, 7);
        assert_eq!(b.sequences(), vec![vec![1, 2, 3, 4], vec![1, 2, 5]]);
        assert_eq!(PackedBatch::shared_cost(&[&[1, 2, 3, 4], &[1, 2, 5]]), 5);
    }

    #[test]
    fn no_common_prefix_identical_and_nested_sequences_and_empty_ones() {
        let mut b = PackedBatch::default();
        // Nothing shared (an empty prompt under a template-free tokenisation).
        b.push_shared(&[&[7, 8], &[9]], 0, last);
        // Identical: both branches empty, both pooled in the prefix.
        b.push_shared(&[&[4, 5], &[4, 5]], 0, last);
        // One the prefix of the other.
        b.push_shared(&[&[4, 5], &[4, 5, 6]], 0, last);
        // Empty: one pad token.
        b.push_alone(&[], 3, last);
        assert_eq!(b.ids, vec![7, 8, 9, 4, 5, 4, 5, 6, 3]);
        assert_eq!(b.positions, vec![0, 1, 0, 0, 1, 0, 1, 2, 0]);
        assert_eq!(b.pooled, vec![1, 2, 4, 4, 6, 7, 8]);
        assert_eq!(
            b.sequences(),
            vec![
                vec![7, 8],
                vec![9],
                vec![4, 5],
                vec![4, 5],
                vec![4, 5],
                vec![4, 5, 6],
                vec![3]
            ]
        );
    }
}
