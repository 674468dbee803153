//! `near_duplicates`: routes every row of a near-duplicate component but its first
//! (input order) away as `near_duplicate`, with `duplicate_of` naming the kept row's
//! pair id (DESIGN §4).
//!
//! The components are decided once, at the end of the survey, identically on every
//! worker (`NearDuplicates::resolve`): the candidate edges of every worker's band index
//! (`index_bands`), optionally checked against the exact similarity
//! (`minhash::similarity`, `--near-dup-verify`), joined by union–find; each
//! component's root is its least row. The kept row's pair id and, for the check, the
//! candidates' shingles come from `RowSpill`: what each worker wrote to local disk as
//! it read its rows in the survey, so nothing per pair stays in memory. The curate pass
//! then decides each row on the worker that reads it, from this table alone, so a
//! resumed run decides the same.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use synpref_engine::model::{PreferencePair, Reason, RowKey};
use synpref_engine::output::OutputRow;
use synpref_engine::{Error, Result};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;

use crate::minhash::{similarity, PairShingles};
use crate::{routed, Rows};

/// Every row of a near-duplicate component that is not its root, with its root, and
/// each root's pair id.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NearDuplicates {
    /// (row, its component's root), sorted by row.
    members: Vec<(RowKey, RowKey)>,
    /// (root, its pair id), sorted by root.
    roots: Vec<(RowKey, String)>,
    /// Candidate edges found by the bands, and those the exact check dropped.
    pub candidate_edges: u64,
    pub rejected_edges: u64,
    /// The band index over all workers: entries, and what it spilled to disk.
    #[serde(default)]
    pub band_index: BandIndexFigures,
}

/// The band index of a run, summed over its workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandIndexFigures {
    /// (band key, row) entries: the bands of every valid row.
    pub entries: u64,
    /// Sorted runs written to `--spill-dir` under `--memory-budget` (0: held in memory).
    pub spilled_runs: u64,
    pub spilled_bytes: u64,
}

/// What the near-duplicate search found and what it cost (`report.json`
/// `near_duplicates`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NearDupFigures {
    pub candidate_edges: u64,
    /// Candidate edges the exact check (`--near-dup-verify`) dropped.
    pub rejected_edges: u64,
    /// Components of two or more rows; each keeps its first row.
    pub components: u64,
    /// Rows that are a component's member, not its kept row (routed to
    /// `near_duplicate` unless an earlier stage routed them first).
    pub members: u64,
    pub band_index: BandIndexFigures,
    /// `--memory-budget` of the process that reports (bytes).
    pub memory_budget_bytes: u64,
}

/// One edge of a near-duplicate candidate: the first row of a band group and another.
pub type Edge = (RowKey, RowKey);

impl NearDuplicates {
    /// The components of `edges` (every worker's, in any order) with their roots'
    /// pair ids: `components`, then `name_roots`.
    pub fn resolve(
        edges: Vec<Edge>,
        keep: impl FnMut(RowKey, RowKey) -> bool,
        id_of: impl Fn(RowKey) -> Option<String>,
    ) -> Result<NearDuplicates> {
        let mut near = NearDuplicates::components(edges, keep);
        near.name_roots(id_of)?;
        Ok(near)
    }

    /// The components of `edges` (every worker's, in any order), roots not yet named.
    /// `keep(a, b)`, the exact check, decides whether a candidate edge joins.
    pub fn components(
        mut edges: Vec<Edge>,
        mut keep: impl FnMut(RowKey, RowKey) -> bool,
    ) -> NearDuplicates {
        edges.sort_unstable();
        edges.dedup();
        let candidate_edges = edges.len() as u64;
        edges.retain(|&(a, b)| keep(a, b));
        let rejected_edges = candidate_edges - edges.len() as u64;
        // Union–find over the rows the edges name, with the least row as each root.
        let mut nodes: Vec<RowKey> = edges.iter().flat_map(|&(a, b)| [a, b]).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let index = |r: RowKey| nodes.binary_search(&r).expect("a node of an edge");
        let mut parent: Vec<usize> = (0..nodes.len()).collect();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        for &(a, b) in &edges {
            let (ra, rb) = (find(&mut parent, index(a)), find(&mut parent, index(b)));
            // Nodes are sorted, so the smaller index is the earlier row.
            let (low, high) = (ra.min(rb), ra.max(rb));
            parent[high] = low;
        }
        let mut members = Vec::new();
        let mut roots = Vec::new();
        for i in 0..nodes.len() {
            let root = find(&mut parent, i);
            if root == i {
                roots.push((nodes[i], String::new()));
            } else {
                members.push((nodes[i], nodes[root]));
            }
        }
        NearDuplicates {
            members,
            roots,
            candidate_edges,
            rejected_edges,
            band_index: BandIndexFigures::default(),
        }
    }

    /// Each component's root (kept) row, sorted: the rows whose pair ids
    /// `name_roots` needs.
    pub fn root_rows(&self) -> Vec<RowKey> {
        self.roots.iter().map(|r| r.0).collect()
    }

    /// Names each root by its pair id (`id_of`, from the workers' spills).
    pub fn name_roots(&mut self, id_of: impl Fn(RowKey) -> Option<String>) -> Result<()> {
        for (row, id) in &mut self.roots {
            *id = id_of(*row).ok_or_else(|| {
                Error::other(
                    "near-duplicates",
                    format!("no pair id recorded for row key {}", row.0),
                )
            })?;
        }
        Ok(())
    }

    /// The report's figures, with the process's `--memory-budget`.
    pub fn figures(&self, memory_budget_bytes: u64) -> NearDupFigures {
        NearDupFigures {
            candidate_edges: self.candidate_edges,
            rejected_edges: self.rejected_edges,
            components: self.roots.len() as u64,
            members: self.members.len() as u64,
            band_index: self.band_index,
            memory_budget_bytes,
        }
    }

    /// The rows that `resolve` needs from the spills: every row an edge names.
    pub fn nodes(edges: &[Edge]) -> Vec<RowKey> {
        let mut nodes: Vec<RowKey> = edges.iter().flat_map(|&(a, b)| [a, b]).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// The pair id of the root of `row`'s component, if `row` is a member (not a root).
    pub fn kept_instead(&self, row: RowKey) -> Option<&str> {
        let i = self.members.binary_search_by_key(&row, |m| m.0).ok()?;
        let root = self.members[i].1;
        let j = self.roots.binary_search_by_key(&root, |r| r.0).ok()?;
        Some(&self.roots[j].1)
    }

    /// Rows routed away as near-duplicates.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Components (each keeps its root).
    pub fn component_count(&self) -> usize {
        self.roots.len()
    }
}

/// What a worker writes for each row it reads in the survey: the row's key, its pair id
/// and (with the exact check) its shingles, in a local temporary file that is deleted
/// when dropped.
pub struct RowSpill {
    writer: Option<BufWriter<std::fs::File>>,
    file: tempfile::NamedTempFile,
    shingles: bool,
    failed: Option<std::io::Error>,
}

impl RowSpill {
    /// A spill in `dir` (the system's temporary directory when `None`).
    pub fn new(dir: Option<&std::path::Path>, shingles: bool) -> Result<RowSpill> {
        let file = match dir {
            Some(d) => tempfile::NamedTempFile::new_in(d),
            None => tempfile::NamedTempFile::new(),
        }
        .map_err(|e| Error::other("near-duplicates", format!("temporary file: {e}")))?;
        let writer = BufWriter::with_capacity(
            1 << 20,
            file.reopen()
                .map_err(|e| Error::other("near-duplicates", format!("temporary file: {e}")))?,
        );
        Ok(RowSpill {
            writer: Some(writer),
            file,
            shingles,
            failed: None,
        })
    }

    /// Records one row (an I/O error is kept and reported by `finish`).
    pub fn record(&mut self, pair: &PreferencePair, shingles: Option<&PairShingles>) {
        if self.failed.is_some() {
            return;
        }
        let w = self.writer.as_mut().expect("open until finish");
        let mut write = || -> std::io::Result<()> {
            w.write_all(&pair.key.0.to_le_bytes())?;
            w.write_all(&(pair.pair_id.len() as u32).to_le_bytes())?;
            w.write_all(pair.pair_id.as_bytes())?;
            if self.shingles {
                for side in shingles.expect("shingles recorded with the check") {
                    w.write_all(&(side.len() as u32).to_le_bytes())?;
                    for h in side {
                        w.write_all(&h.to_le_bytes())?;
                    }
                }
            }
            Ok(())
        };
        if let Err(e) = write() {
            self.failed = Some(e);
        }
    }

    /// The id (and shingles) of each of `rows` (sorted) that this spill holds.
    #[allow(clippy::type_complexity)]
    pub fn lookup(
        &mut self,
        rows: &[RowKey],
    ) -> Result<Vec<(RowKey, String, Option<PairShingles>)>> {
        let io = |e: std::io::Error| Error::other("near-duplicates", format!("spill: {e}"));
        if let Some(e) = self.failed.take() {
            return Err(io(e));
        }
        if let Some(mut w) = self.writer.take() {
            w.flush().map_err(io)?;
        }
        let mut r = BufReader::with_capacity(1 << 20, self.file.reopen().map_err(io)?);
        let mut found = Vec::new();
        let u32_at = |r: &mut BufReader<std::fs::File>| -> std::io::Result<u32> {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)?;
            Ok(u32::from_le_bytes(b))
        };
        let mut key = [0u8; 8];
        let mut id = Vec::new();
        loop {
            if r.fill_buf().map_err(io)?.is_empty() {
                break;
            }
            r.read_exact(&mut key).map_err(io)?;
            let row = RowKey(u64::from_le_bytes(key));
            let len = u32_at(&mut r).map_err(io)? as usize;
            id.resize(len, 0);
            r.read_exact(&mut id).map_err(io)?;
            let wanted = rows.binary_search(&row).is_ok();
            let mut shingles: Option<PairShingles> = None;
            if self.shingles {
                let mut sides: PairShingles = Default::default();
                for side in sides.iter_mut() {
                    let n = u32_at(&mut r).map_err(io)? as usize;
                    let mut b = vec![0u8; 8 * n];
                    r.read_exact(&mut b).map_err(io)?;
                    if wanted {
                        *side = b
                            .chunks_exact(8)
                            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                            .collect();
                    }
                }
                shingles = Some(sides);
            }
            if wanted {
                let id = String::from_utf8(id.clone()).map_err(|e| {
                    Error::other("near-duplicates", format!("spill holds a bad id: {e}"))
                })?;
                found.push((row, id, shingles));
            }
        }
        Ok(found)
    }
}

/// The exact check of a candidate edge: both rows' shingles are known (every node's
/// were looked up) and their similarity reaches `threshold`.
pub fn similar_enough(
    shingles: &FxHashMap<RowKey, PairShingles>,
    threshold: f64,
) -> impl FnMut(RowKey, RowKey) -> bool + '_ {
    move |a, b| match (shingles.get(&a), shingles.get(&b)) {
        (Some(x), Some(y)) => similarity(x, y) >= threshold,
        _ => false,
    }
}

pub trait RouteNearDuplicates<'scope> {
    /// Passes on every pair that is not a near-duplicate member (or that decides a
    /// conflicting comparison) and routes the others away as `near_duplicate` with
    /// `duplicate_of` set.
    fn near_duplicates(
        self,
        near: std::rc::Rc<NearDuplicates>,
    ) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>);
}

impl<'scope> RouteNearDuplicates<'scope> for Rows<'scope, PreferencePair> {
    fn near_duplicates(
        self,
        near: std::rc::Rc<NearDuplicates>,
    ) -> (Rows<'scope, PreferencePair>, Rows<'scope, OutputRow>) {
        // The row that decides a conflicting comparison (`dedup`) stays: its swapped
        // copy has the same bands but is the conflict stage's, not a near-duplicate.
        let route = move |pair: PreferencePair| match near.kept_instead(pair.key) {
            _ if pair.conflict => Ok(pair),
            None => Ok(pair),
            Some(kept) => {
                let kept = kept.to_string();
                let message = format!(
                    "a near-duplicate of pair `{kept}` (prompt and both replies alike, \
                     by MinHash bands), which is kept instead"
                );
                let mut row = routed(pair, Reason::NearDuplicate, Some(message));
                row.duplicate_of = Some(kept);
                Err(row)
            }
        };
        // A named operator (not a bare `ok_err`), so the printed graph says what it is.
        type Checked = std::result::Result<PreferencePair, OutputRow>;
        let checked: Rows<'scope, Checked> = self.unary(Pipeline, "NearDuplicates", move |_, _| {
            move |input, output| {
                input.for_each(|time, data| {
                    let mut session = output.session(&time);
                    for pair in data.drain(..) {
                        session.give(route(pair));
                    }
                });
            }
        });
        checked.ok_err(|r| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_keep_their_least_row_and_the_check_can_split_them() {
        let id = |r: RowKey| Some(format!("id{}", r.0));
        // 1–4–7 and 2–9 (edges in any order, one repeated), 5–6 rejected by the check.
        let edges = vec![
            (RowKey(4), RowKey(7)),
            (RowKey(1), RowKey(4)),
            (RowKey(2), RowKey(9)),
            (RowKey(1), RowKey(4)),
            (RowKey(5), RowKey(6)),
        ];
        let near = NearDuplicates::resolve(edges, |a, _| a != RowKey(5), id).expect("resolves");
        assert_eq!(near.kept_instead(RowKey(7)), Some("id1"));
        assert_eq!(near.kept_instead(RowKey(4)), Some("id1"));
        assert_eq!(near.kept_instead(RowKey(9)), Some("id2"));
        assert_eq!(near.kept_instead(RowKey(1)), None);
        assert_eq!(near.kept_instead(RowKey(6)), None);
        assert_eq!((near.member_count(), near.component_count()), (3, 2));
        assert_eq!((near.candidate_edges, near.rejected_edges), (4, 1));
    }

    #[test]
    fn a_spill_gives_back_the_ids_and_shingles_of_the_rows_asked() {
        let mut spill = RowSpill::new(None, true).unwrap();
        let mut pair = crate::minhash::tests_support::pair("p", "a", "b");
        for (k, id) in [(3u64, "three"), (1, "one"), (8, "eight")] {
            pair.key = RowKey(k);
            pair.pair_id = id.into();
            let sh: PairShingles = [vec![k], vec![k, k + 1], vec![]];
            spill.record(&pair, Some(&sh));
        }
        let found = spill.lookup(&[RowKey(1), RowKey(8)]).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].0, RowKey(1));
        assert_eq!(found[0].1, "one");
        assert_eq!(found[1].2.as_ref().unwrap()[1], vec![8, 9]);
    }
}
