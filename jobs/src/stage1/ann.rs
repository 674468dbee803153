//! Nearest-neighbour search over a worker's part of the pool for stage1 retrieval:
//! an exact scan, or approximate HNSW graphs (the `hnsw_rs` crate) for pools whose
//! exact scan costs too much per gold pair.
//!
//! With an index (`--index auto|hnsw`) the pool is cut into a fixed number of shards by
//! pair key (`--index-shards`, 64 by default), and a timely worker owns whole shards
//! (shard mod workers). Each shard is searched on its own — by a scan when it is small
//! (`auto`), by its HNSW graph otherwise — and the leader keeps the k best of every
//! shard's k best. A shard's graph is built single-threaded from its rows in pair-id
//! order with `hnsw_rs`'s fixed level seed, so it is the same graph on any worker or
//! process count: the approximate answer, like the exact one, does not depend on how
//! the run is spread.
//!
//! A graph node stands for all of a shard's pairs with the same embedding (repeated
//! prompts are common), expanded in pool order when found, so equally similar pairs
//! rank as in the scan.
//!
//! Pairs leave the candidates as they become gold or labelled. A graph is built once
//! over all of its shard's pairs and searched for k neighbours, the excluded ones
//! dropped, and searched again for twice as many while fewer than k remain; once the
//! ask nears a quarter of the shard, the shard is scanned instead.
//!
//! Recall is measured, not assumed: each iteration, for up to `--index-recall-queries`
//! gold pairs, every worker also scans its shards exactly and the leader reports the
//! share of the exact k nearest that the index found.

use std::time::Instant;

use hnsw_rs::prelude::{Distance, Hnsw};
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use synpref_engine::{Error, Result};

use super::retrieve;

/// How retrieval finds the nearest pool pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// Scan every candidate: recall 1, cost rows × gold pairs per iteration.
    Exact,
    /// Shards; a shard above `auto_exact_max_rows` rows gets an HNSW graph, the rest
    /// are scanned.
    Auto,
    /// Shards, each with an HNSW graph.
    Hnsw,
}

impl IndexKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IndexKind::Exact => "exact",
            IndexKind::Auto => "auto",
            IndexKind::Hnsw => "hnsw",
        }
    }

    pub fn parse(s: &str) -> Option<IndexKind> {
        match s {
            "exact" => Some(IndexKind::Exact),
            "auto" => Some(IndexKind::Auto),
            "hnsw" => Some(IndexKind::Hnsw),
            _ => None,
        }
    }
}

/// The index knobs, their defaults and what each does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexSettings {
    /// `--index`: exact, auto or hnsw (default auto).
    pub kind: IndexKind,
    /// `--index-shards`: shards of the pool by pair key (default 64). The most workers
    /// an indexed run can use; the same shards on any worker count.
    pub shards: usize,
    /// `--index-auto-exact-max-rows`: under `auto`, a shard with at most this many rows
    /// is scanned (default 20,000: below it a scan of 384-d MiniLM rows costs about as
    /// much per query as a graph search plus its share of the build; docs/stage1.md).
    pub auto_exact_max_rows: usize,
    /// `--hnsw-m`: links per node (default 16, hnswlib's default; at most 255).
    pub m: usize,
    /// `--hnsw-ef-construction`: the candidate list while building (default 200,
    /// hnswlib's default).
    pub ef_construction: usize,
    /// `--hnsw-ef-search`: the candidate list while searching, at least k (default 64).
    pub ef_search: usize,
    /// `--index-recall-queries`: gold pairs per iteration also searched exactly to
    /// measure the index's recall (default 32; 0 turns the measurement off).
    pub recall_queries: usize,
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings {
            kind: IndexKind::Auto,
            shards: 64,
            auto_exact_max_rows: 20_000,
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            recall_queries: 32,
        }
    }
}

impl IndexSettings {
    /// A bad setting, named by its flag.
    pub fn validate(&self) -> Result<()> {
        if self.shards == 0 {
            return Err(Error::setting("--index-shards", "must be at least 1"));
        }
        // hnsw_rs ends the process above 256 links per node; 255 keeps the count in a u8.
        if !(2..=255).contains(&self.m) {
            return Err(Error::setting(
                "--hnsw-m",
                format!("must be in 2..=255, got {}", self.m),
            ));
        }
        if self.ef_construction < self.m {
            return Err(Error::setting(
                "--hnsw-ef-construction",
                format!(
                    "must be at least --hnsw-m ({}), got {}",
                    self.m, self.ef_construction
                ),
            ));
        }
        if self.ef_search == 0 {
            return Err(Error::setting("--hnsw-ef-search", "must be at least 1"));
        }
        Ok(())
    }

    /// A sharded index spreads whole shards over the workers, so it can use at most
    /// `shards` of them.
    pub fn check_workers(&self, peers: usize) -> Result<()> {
        if self.sharded() && peers > self.shards {
            return Err(Error::setting(
                "--index-shards",
                format!(
                    "{peers} workers but {} shards: a worker owns whole shards, so raise --index-shards to at least the worker count (or use --index exact)",
                    self.shards
                ),
            ));
        }
        Ok(())
    }

    /// Whether the pool is cut into shards (any kind but exact).
    pub fn sharded(&self) -> bool {
        self.kind != IndexKind::Exact
    }

    /// The shard of a pair key.
    pub fn shard_of(&self, pair_key: u64) -> usize {
        (pair_key % self.shards as u64) as usize
    }

    /// Whether worker `index` of `peers` owns the pair.
    pub fn owns(&self, pair_key: u64, index: usize, peers: usize) -> bool {
        if self.sharded() {
            self.shard_of(pair_key) % peers == index
        } else {
            pair_key % peers as u64 == index as u64
        }
    }
}

/// `1 − dot` of unit vectors, clamped at 0: cosine distance without the norms (the
/// embeddings are L2-normalised), and without the `dot ≤ 1` assertion of `anndists`'
/// `DistDot`, which rounding of unit vectors can trip.
#[derive(Clone, Copy, Default)]
struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

enum ShardSearch {
    Scan,
    /// A graph over the shard's distinct embeddings; node `g` stands for the rows of
    /// `groups[g]` (identical embeddings, in pool order).
    Graph {
        graph: Hnsw<'static, f32, UnitDot>,
        groups: Vec<Vec<usize>>,
    },
}

struct Shard {
    /// Row indices (into the worker's pool) of the shard's pairs, in pool order.
    rows: Vec<usize>,
    search: ShardSearch,
}

/// A worker's candidates in one iteration (see [`PoolIndex::candidates`]).
pub struct Candidates<'a> {
    keys: &'a [u64],
    excluded: &'a FxHashSet<u64>,
    lists: Vec<Vec<usize>>,
}

impl Candidates<'_> {
    /// How many candidates the worker holds.
    pub fn len(&self) -> usize {
        self.lists.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What was built, for the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IndexStats {
    pub kind: Option<IndexKind>,
    /// Shards with an HNSW graph / scanned, over all workers.
    pub graph_shards: usize,
    pub scanned_shards: usize,
    /// Rows in HNSW graphs, over all workers.
    pub graph_rows: usize,
    /// Graph nodes: distinct embeddings (identical texts share one), over all workers.
    pub graph_nodes: usize,
    /// The slowest worker's build time.
    pub build_s: f64,
}

impl IndexStats {
    /// Adds another worker's figures (the build time is the slowest worker's).
    pub fn merge(&mut self, other: &IndexStats) {
        self.kind = self.kind.or(other.kind);
        self.graph_shards += other.graph_shards;
        self.scanned_shards += other.scanned_shards;
        self.graph_rows += other.graph_rows;
        self.graph_nodes += other.graph_nodes;
        self.build_s = self.build_s.max(other.build_s);
    }
}

/// A worker's search structure over the pool rows it owns.
pub struct PoolIndex {
    settings: IndexSettings,
    dims: usize,
    /// Exact mode: every owned row, in pool order.
    all: Vec<usize>,
    shards: Vec<Shard>,
    pub stats: IndexStats,
}

impl PoolIndex {
    /// Builds the worker's index. `rows` is row-major unit embeddings of the worker's
    /// pool (`keys.len() × dims`), `keys` their pair keys, `owned` which rows are the
    /// worker's candidates (its shards; not the gold rows kept for the leader).
    pub fn build(
        settings: &IndexSettings,
        rows: &[f32],
        dims: usize,
        keys: &[u64],
        owned: impl Fn(usize) -> bool,
    ) -> PoolIndex {
        let started = Instant::now();
        let mut stats = IndexStats {
            kind: Some(settings.kind),
            ..IndexStats::default()
        };
        let mut all = Vec::new();
        let mut shards = Vec::new();
        if settings.sharded() {
            let mut by_shard: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
            for (i, &k) in keys.iter().enumerate() {
                if owned(i) {
                    by_shard.entry(settings.shard_of(k)).or_default().push(i);
                }
            }
            for members in by_shard.into_values() {
                let graph = match settings.kind {
                    IndexKind::Hnsw => true,
                    IndexKind::Auto => members.len() > settings.auto_exact_max_rows,
                    IndexKind::Exact => false,
                };
                let search = if graph {
                    stats.graph_shards += 1;
                    stats.graph_rows += members.len();
                    let groups = identical_groups(rows, dims, &members);
                    stats.graph_nodes += groups.len();
                    ShardSearch::Graph {
                        graph: build_graph(settings, rows, dims, &groups),
                        groups,
                    }
                } else {
                    stats.scanned_shards += 1;
                    ShardSearch::Scan
                };
                shards.push(Shard {
                    rows: members,
                    search,
                });
            }
        } else {
            all = (0..keys.len()).filter(|&i| owned(i)).collect();
        }
        stats.build_s = started.elapsed().as_secs_f64();
        PoolIndex {
            settings: settings.clone(),
            dims,
            all,
            shards,
            stats,
        }
    }

    /// Changes the search list of the graphs (no rebuild): for benchmarks.
    pub fn set_ef_search(&mut self, ef_search: usize) {
        self.settings.ef_search = ef_search;
    }

    /// The worker's candidates for one iteration (owned rows not excluded), per shard
    /// in shard order (one list in exact mode), made once for all its gold pairs.
    pub fn candidates<'a>(&self, keys: &'a [u64], excluded: &'a FxHashSet<u64>) -> Candidates<'a> {
        let keep = |rows: &[usize]| -> Vec<usize> {
            rows.iter()
                .copied()
                .filter(|&i| !excluded.contains(&keys[i]))
                .collect()
        };
        let lists = if self.settings.sharded() {
            self.shards.iter().map(|s| keep(&s.rows)).collect()
        } else {
            vec![keep(&self.all)]
        };
        Candidates {
            keys,
            excluded,
            lists,
        }
    }

    /// The k nearest candidates to `query` found by the index (exact for scanned
    /// shards and in exact mode), most similar first, ties by row (pool order).
    pub fn search(
        &self,
        rows: &[f32],
        query: &[f32],
        k: usize,
        candidates: &Candidates<'_>,
    ) -> Vec<(usize, f32)> {
        self.find(rows, query, k, candidates, false)
    }

    /// The exact k nearest candidates (a scan of every candidate), for recall.
    pub fn exact(
        &self,
        rows: &[f32],
        query: &[f32],
        k: usize,
        candidates: &Candidates<'_>,
    ) -> Vec<(usize, f32)> {
        self.find(rows, query, k, candidates, true)
    }

    fn find(
        &self,
        rows: &[f32],
        query: &[f32],
        k: usize,
        candidates: &Candidates<'_>,
        exact: bool,
    ) -> Vec<(usize, f32)> {
        if k == 0 {
            return Vec::new();
        }
        if !self.settings.sharded() {
            return retrieve::nearest(query, rows, &candidates.lists[0], k);
        }
        let (keys, excluded) = (candidates.keys, candidates.excluded);
        let mut found = Vec::new();
        for (shard, shard_candidates) in self.shards.iter().zip(&candidates.lists) {
            let scan = |found: &mut Vec<(usize, f32)>| {
                found.extend(retrieve::nearest(query, rows, shard_candidates, k));
            };
            let ShardSearch::Graph { graph, groups } = &shard.search else {
                scan(&mut found);
                continue;
            };
            if exact {
                scan(&mut found);
                continue;
            }
            // Ask for more than k and drop the excluded ones; ask again for twice as
            // many until k remain, and scan once the ask nears the shard's size.
            let mut want = k;
            loop {
                if want * 4 >= groups.len() {
                    scan(&mut found);
                    break;
                }
                let returned = graph.search(query, want, self.settings.ef_search.max(want));
                let asked_all = returned.len() < want;
                // Every member of a found group, as similar as its representative, so
                // ties break by pool order as in the scan.
                let mut hits: Vec<(usize, f32)> = returned
                    .into_iter()
                    .flat_map(|n| groups[n.d_id].iter().copied())
                    .filter(|&i| !excluded.contains(&keys[i]))
                    // The similarity as the scan computes it, so that a pair found
                    // both ways ranks the same.
                    .map(|i| (i, dot(&rows[i * self.dims..(i + 1) * self.dims], query)))
                    .collect();
                if hits.len() >= k || asked_all {
                    hits.sort_by(by_similarity);
                    hits.truncate(k);
                    found.extend(hits);
                    break;
                }
                want *= 2;
            }
        }
        found.sort_by(by_similarity);
        found.truncate(k);
        found
    }
}

/// Most similar first, ties by row (pool order, which is pair-id order).
fn by_similarity(a: &(usize, f32), b: &(usize, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The shard's rows grouped by identical embedding (the same retrieval text), groups
/// in order of their first row, rows in pool order. Preference pools repeat prompts
/// (AlpacaEval: 805 instructions over 33,478 pairs), and a graph of many identical
/// points connects poorly (measured: recall 85% at ef 64 with them, docs/stage1.md), so
/// a graph node stands for a group.
fn identical_groups(rows: &[f32], dims: usize, members: &[usize]) -> Vec<Vec<usize>> {
    let row = |i: usize| &rows[i * dims..(i + 1) * dims];
    let mut by_bits: rustc_hash::FxHashMap<Vec<u32>, usize> = Default::default();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &i in members {
        let bits: Vec<u32> = row(i).iter().map(|x| x.to_bits()).collect();
        let next = groups.len();
        let g = *by_bits.entry(bits).or_insert(next);
        if g == next {
            groups.push(Vec::new());
        }
        groups[g].push(i);
    }
    groups
}

/// A shard's HNSW graph over its groups' embeddings, inserted one at a time in group
/// order: with hnsw_rs's seeded level generator this is the same graph on every run
/// and worker count.
fn build_graph(
    settings: &IndexSettings,
    rows: &[f32],
    dims: usize,
    groups: &[Vec<usize>],
) -> Hnsw<'static, f32, UnitDot> {
    // hnsw_rs's rule of thumb for the layer count: 16 covers far more points than a
    // shard holds (ln(n)/ln(m) layers are used).
    let graph = Hnsw::new(
        settings.m,
        groups.len(),
        16,
        settings.ef_construction,
        UnitDot,
    );
    for (node, group) in groups.iter().enumerate() {
        let i = group[0];
        graph.insert_slice((&rows[i * dims..(i + 1) * dims], node));
    }
    graph
}

/// Recall of approximate results against exact ones, as ann-benchmarks counts it: a
/// returned neighbour is a hit when it is as similar as the exact k-th nearest, so
/// that among equally similar pairs (duplicate texts are common in preference pools)
/// any is right. Both lists hold similarities, most similar first, computed by the same
/// dot product, so equal ones are equal bit for bit. `None`: no exact neighbour at all.
pub fn recall(approximate: &[Vec<f32>], exact: &[Vec<f32>]) -> Option<f64> {
    let (mut hit, mut total) = (0usize, 0usize);
    for (a, e) in approximate.iter().zip(exact) {
        let Some(&kth) = e.last() else { continue };
        total += e.len();
        hit += a.iter().filter(|&&s| s >= kth).count().min(e.len());
    }
    (total > 0).then(|| hit as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Unit vectors around a few centres (clustered, like sentence embeddings).
    fn clustered(n: usize, dims: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..dims).map(|_| rng.random::<f32>() - 0.5).collect())
            .collect();
        let mut out = Vec::with_capacity(n * dims);
        for i in 0..n {
            let c = &centres[i % centres.len()];
            let mut v: Vec<f32> = c
                .iter()
                .map(|x| x + 0.6 * (rng.random::<f32>() - 0.5))
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            out.extend(v);
        }
        out
    }

    fn settings(kind: IndexKind, ef_search: usize) -> IndexSettings {
        // A smaller construction list than the default keeps the unoptimised test
        // build quick; recall stays high at this size.
        IndexSettings {
            kind,
            shards: 4,
            ef_search,
            ef_construction: 48,
            ..IndexSettings::default()
        }
    }

    /// Every worker's index over its shards, searched and merged as the leader does.
    fn spread_search(
        s: &IndexSettings,
        peers: usize,
        rows: &[f32],
        keys: &[u64],
        queries: &[f32],
        k: usize,
        excluded: &FxHashSet<u64>,
        exact: bool,
    ) -> Vec<Vec<(usize, f32)>> {
        let dims = 32;
        let indexes: Vec<PoolIndex> = (0..peers)
            .map(|w| PoolIndex::build(s, rows, dims, keys, |i| s.owns(keys[i], w, peers)))
            .collect();
        queries
            .chunks(dims)
            .map(|q| {
                let mut all: Vec<(usize, f32)> = indexes
                    .iter()
                    .flat_map(|ix| {
                        let c = ix.candidates(keys, excluded);
                        if exact {
                            ix.exact(rows, q, k, &c)
                        } else {
                            ix.search(rows, q, k, &c)
                        }
                    })
                    .collect();
                all.sort_by(by_similarity);
                all.truncate(k);
                all
            })
            .collect()
    }

    fn sims(lists: &[Vec<(usize, f32)>]) -> Vec<Vec<f32>> {
        lists
            .iter()
            .map(|l| l.iter().map(|x| x.1).collect())
            .collect()
    }

    #[test]
    fn hnsw_finds_the_exact_neighbours_mostly_and_the_same_ones_on_any_worker_count() {
        let (n, dims, k) = (3000, 32, 8);
        let rows = clustered(n, dims, 1);
        let keys: Vec<u64> = (0..n as u64).map(|i| i.wrapping_mul(0x9E37_79B9)).collect();
        let queries = clustered(30, dims, 2);
        let excluded: FxHashSet<u64> = keys.iter().step_by(7).copied().collect();
        let s = settings(IndexKind::Hnsw, 64);
        let exact = spread_search(&s, 1, &rows, &keys, &queries, k, &excluded, true);
        let one = spread_search(&s, 1, &rows, &keys, &queries, k, &excluded, false);
        let three = spread_search(&s, 3, &rows, &keys, &queries, k, &excluded, false);
        assert_eq!(one, three, "the same graphs on any worker count");
        for list in &one {
            assert_eq!(list.len(), k);
            assert!(list.iter().all(|&(i, _)| !excluded.contains(&keys[i])));
        }
        let r = recall(&sims(&one), &sims(&exact)).unwrap();
        assert!(r >= 0.9, "recall {r}");
        // The exact scan agrees with the exact mode's.
        let s_exact = settings(IndexKind::Exact, 64);
        let plain = spread_search(&s_exact, 2, &rows, &keys, &queries, k, &excluded, false);
        assert_eq!(plain, exact);
        // A starved search (ef = k on a graph with few links) misses some, and the
        // measurement says so rather than reporting 1.
        let starved = IndexSettings {
            m: 2,
            ef_construction: 4,
            ..settings(IndexKind::Hnsw, 1)
        };
        let poor = spread_search(&starved, 1, &rows, &keys, &queries, k, &excluded, false);
        let r_poor = recall(&sims(&poor), &sims(&exact)).unwrap();
        assert!(r_poor < r, "starved {r_poor} vs {r}");
    }

    #[test]
    fn repeated_embeddings_share_a_node_and_rank_in_pool_order_as_in_the_scan() {
        let (distinct, copies, dims, k) = (300, 10, 32, 8);
        let base = clustered(distinct, dims, 5);
        // Copies of each vector scattered over the pool.
        let rows: Vec<f32> = (0..distinct * copies)
            .flat_map(|i| {
                let v = (i * 7919) % distinct;
                base[v * dims..(v + 1) * dims].to_vec()
            })
            .collect();
        let keys: Vec<u64> = (0..(distinct * copies) as u64).collect();
        let excluded: FxHashSet<u64> = keys.iter().step_by(5).copied().collect();
        let s = IndexSettings {
            shards: 2,
            ..settings(IndexKind::Hnsw, 64)
        };
        let ix = PoolIndex::build(&s, &rows, dims, &keys, |_| true);
        assert_eq!(ix.stats.graph_rows, distinct * copies);
        let per_shard: FxHashSet<(u64, usize)> = keys
            .iter()
            .map(|&k| (k % 2, (k as usize * 7919) % distinct))
            .collect();
        assert_eq!(
            ix.stats.graph_nodes,
            per_shard.len(),
            "one node per distinct vector per shard"
        );
        let queries = clustered(30, dims, 6);
        let exact = spread_search(&s, 1, &rows, &keys, &queries, k, &excluded, true);
        let found = spread_search(&s, 1, &rows, &keys, &queries, k, &excluded, false);
        assert_eq!(found, exact, "the same pairs, ties in pool order");
    }

    #[test]
    fn auto_scans_small_shards_and_builds_graphs_for_large_ones() {
        let (n, dims) = (2000, 32);
        let rows = clustered(n, dims, 3);
        let keys: Vec<u64> = (0..n as u64).collect();
        let s = IndexSettings {
            auto_exact_max_rows: 400,
            ..settings(IndexKind::Auto, 64)
        };
        // Shards of 500 rows: all graphs; with a higher threshold, all scans.
        let ix = PoolIndex::build(&s, &rows, dims, &keys, |_| true);
        assert_eq!((ix.stats.graph_shards, ix.stats.scanned_shards), (4, 0));
        let s = IndexSettings {
            auto_exact_max_rows: 500,
            ..s
        };
        let ix = PoolIndex::build(&s, &rows, dims, &keys, |_| true);
        assert_eq!((ix.stats.graph_shards, ix.stats.scanned_shards), (0, 4));
    }

    #[test]
    fn recall_counts_neighbours_as_similar_as_the_exact_kth_as_found() {
        // One of two found; a tie with the exact k-th counts as found.
        assert_eq!(recall(&[vec![0.9, 0.5]], &[vec![0.9, 0.8]]), Some(0.5));
        assert_eq!(recall(&[vec![0.9, 0.8]], &[vec![0.9, 0.8]]), Some(1.0));
        assert_eq!(
            recall(&[vec![], vec![0.7]], &[vec![], vec![0.7]]),
            Some(1.0)
        );
        assert_eq!(recall(&[vec![]], &[vec![]]), None);
    }

    #[test]
    fn bad_index_settings_name_their_flag() {
        let bad = |f: fn(&mut IndexSettings)| {
            let mut s = IndexSettings::default();
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert!(bad(|s| s.shards = 0).contains("--index-shards"));
        assert!(bad(|s| s.m = 300).contains("--hnsw-m"));
        assert!(bad(|s| s.ef_construction = 1).contains("--hnsw-ef-construction"));
        assert!(bad(|s| s.ef_search = 0).contains("--hnsw-ef-search"));
    }
}
