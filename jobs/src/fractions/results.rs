//! The outputs of a fractions run, written by worker 0 from every worker's results:
//! `results.parquet` and `results.csv` (one row per set, fraction, seed, evaluation set
//! and subset), `accuracy.png` and `accuracy.svg` (accuracy against fraction on a log
//! axis, curated and raw, the mean over seeds with their min–max spread; one panel per
//! evaluation set), and `report.json` last. Every figure of the report is computed
//! from the results the table holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use synpref_engine::output::{write_json, write_parquet_file};
use synpref_engine::store::resolve;
use synpref_engine::{Error, Result};
use synpref_operators::models::ModelUsage;

use super::{FractionsSpec, SetName, TaskResult};

/// `OUT/report.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FractionsReport {
    pub trainer: String,
    pub fractions: Vec<f64>,
    pub seeds: u32,
    /// Valid pairs in the curated set and in the raw pool; rows of the pool that are
    /// not valid pairs (in no subset).
    pub curated_pairs: u64,
    pub raw_pairs: u64,
    pub raw_invalid_rows: u64,
    pub tasks: usize,
    /// Models trained in this run, and reused from the cache (same subset contents,
    /// trainer settings and seed).
    pub models_trained: usize,
    pub models_reused: usize,
    pub evaluations_computed: usize,
    pub evaluations_reused: usize,
    /// Mean accuracy over seeds per (evaluation set, set, fraction).
    pub curves: Vec<CurvePoint>,
    /// Curated against raw per (evaluation set, fraction).
    pub comparisons: Vec<Comparison>,
    /// Plain sentences: models no better than chance, curated below raw.
    pub warnings: Vec<String>,
    pub outputs: Vec<String>,
    /// What scoring cost over every task of this run: pairs, truncations and the
    /// model's seconds stage by stage (`compute`).
    pub scoring: ModelUsage,
    pub elapsed_s: f64,
}

/// One point of a curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub eval: String,
    pub set: SetName,
    pub fraction: f64,
    pub pairs_mean: f64,
    pub accuracy_mean: f64,
    pub accuracy_min: f64,
    pub accuracy_max: f64,
    pub seeds: usize,
}

/// The curated and the raw curve at one fraction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub eval: String,
    pub fraction: f64,
    pub curated: f64,
    pub raw: f64,
    /// curated − raw, in accuracy points (0.01 = one percentage point).
    pub difference: f64,
    pub curated_above_raw: bool,
}

/// Builds the curves and comparisons of `results` (overall accuracy per evaluation set).
pub fn curves(results: &[TaskResult]) -> (Vec<CurvePoint>, Vec<Comparison>) {
    // (eval index, set, fraction bits) → (pairs, accuracies)
    let mut groups: BTreeMap<(usize, SetName, u64), (String, Vec<u64>, Vec<f64>)> = BTreeMap::new();
    for r in results {
        for (i, e) in r.evals.iter().enumerate() {
            let Some(acc) = e.accuracy.overall.value else {
                continue;
            };
            let g = groups
                .entry((i, r.set, r.fraction.to_bits()))
                .or_insert_with(|| (e.accuracy.eval.clone(), Vec::new(), Vec::new()));
            g.1.push(r.pairs);
            g.2.push(acc);
        }
    }
    let mut points: Vec<CurvePoint> = groups
        .into_iter()
        .map(|((_, set, f), (eval, pairs, accs))| CurvePoint {
            eval,
            set,
            fraction: f64::from_bits(f),
            pairs_mean: pairs.iter().sum::<u64>() as f64 / pairs.len() as f64,
            accuracy_mean: accs.iter().sum::<f64>() / accs.len() as f64,
            accuracy_min: accs.iter().copied().fold(f64::INFINITY, f64::min),
            accuracy_max: accs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            seeds: accs.len(),
        })
        .collect();
    points.sort_by(|a, b| {
        (a.eval.as_str(), a.set)
            .cmp(&(b.eval.as_str(), b.set))
            .then(a.fraction.total_cmp(&b.fraction))
    });
    let mut comparisons = Vec::new();
    for c in points.iter().filter(|p| p.set == SetName::Curated) {
        if let Some(r) = points
            .iter()
            .find(|p| p.set == SetName::Raw && p.eval == c.eval && p.fraction == c.fraction)
        {
            comparisons.push(Comparison {
                eval: c.eval.clone(),
                fraction: c.fraction,
                curated: c.accuracy_mean,
                raw: r.accuracy_mean,
                difference: c.accuracy_mean - r.accuracy_mean,
                curated_above_raw: c.accuracy_mean > r.accuracy_mean,
            });
        }
    }
    (points, comparisons)
}

fn warnings(results: &[TaskResult], comparisons: &[Comparison]) -> Vec<String> {
    let mut out = Vec::new();
    let mut chance: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in results {
        for e in &r.evals {
            if e.accuracy.overall.reaches_chance() || e.accuracy.overall.value.is_none() {
                chance
                    .entry(e.accuracy.eval.clone())
                    .or_default()
                    .push(format!("{} {} seed {}", r.set.label(), r.fraction, r.seed));
            }
        }
    }
    for (eval, models) in chance {
        out.push(format!(
            "{} model(s) are no better than chance on {eval} (their 95% interval holds 50%): {}",
            models.len(),
            models.join(", ")
        ));
    }
    for c in comparisons.iter().filter(|c| !c.curated_above_raw) {
        out.push(format!(
            "on {} at fraction {} the curated subsets do not beat raw ones of the same size ({:.2}% vs {:.2}%, mean over seeds)",
            c.eval,
            c.fraction,
            100.0 * c.curated,
            100.0 * c.raw
        ));
    }
    out
}

/// Writes the table, the plot and the report (last).
pub fn write_outputs(
    spec: &FractionsSpec,
    mut results: Vec<TaskResult>,
    (curated_pairs, raw_pairs, raw_invalid_rows): (u64, u64, u64),
    started: Instant,
) -> Result<FractionsReport> {
    results.sort_by(|a, b| {
        (a.set, a.seed)
            .cmp(&(b.set, b.seed))
            .then(a.fraction.total_cmp(&b.fraction))
    });
    let out = resolve(&spec.out)?;
    // A report from an earlier run must not stand beside this run's partial outputs.
    let report_loc = out.child("report.json");
    if report_loc.exists()? {
        report_loc.delete()?;
    }
    let batch = table(&results)?;
    write_parquet_file(&out.child("results.parquet"), std::slice::from_ref(&batch))?;
    let mut csv = Vec::new();
    {
        let mut w = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut csv);
        w.write(&batch).map_err(|e| Error::Arrow {
            context: "results.csv".into(),
            source: e,
        })?;
    }
    out.child("results.csv").put(csv)?;
    let (points, comparisons) = curves(&results);
    let svg = plot_svg(&points, &spec.evals)?;
    out.child("accuracy.svg").put(svg.into_bytes())?;
    let png = plot_png(&points, &spec.evals)?;
    out.child("accuracy.png").put(png)?;
    let report = FractionsReport {
        trainer: spec.trainer.label(),
        fractions: spec.fractions.clone(),
        seeds: spec.seeds,
        curated_pairs,
        raw_pairs,
        raw_invalid_rows,
        tasks: results.len(),
        scoring: results.iter().fold(ModelUsage::default(), |mut total, r| {
            total.merge(&r.scoring);
            total
        }),
        models_trained: results.iter().filter(|r| r.trained).count(),
        models_reused: results.iter().filter(|r| !r.trained).count(),
        evaluations_computed: results
            .iter()
            .flat_map(|r| &r.evals)
            .filter(|e| e.computed)
            .count(),
        evaluations_reused: results
            .iter()
            .flat_map(|r| &r.evals)
            .filter(|e| !e.computed)
            .count(),
        warnings: warnings(&results, &comparisons),
        curves: points,
        comparisons,
        outputs: [
            "results.parquet",
            "results.csv",
            "accuracy.png",
            "accuracy.svg",
        ]
        .map(String::from)
        .to_vec(),
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    write_json(&report_loc, &report)?;
    Ok(report)
}

/// The results as one Arrow batch: a row per (task, evaluation set, subset), the
/// whole set's row with a null `subset`; `subset_key` identifies the training subset's
/// contents (equal keys: the same pairs in the same orientation).
pub fn table(results: &[TaskResult]) -> Result<RecordBatch> {
    let mut set = Vec::new();
    let mut fraction = Vec::new();
    let mut seed = Vec::new();
    let mut pairs = Vec::new();
    let mut eval = Vec::new();
    let mut subset: Vec<Option<String>> = Vec::new();
    let mut acc = Vec::new();
    let mut lo = Vec::new();
    let mut hi = Vec::new();
    let mut n = Vec::new();
    let mut subset_key = Vec::new();
    let mut model = Vec::new();
    let mut trained = Vec::new();
    for r in results {
        for e in &r.evals {
            let a = &e.accuracy;
            let rows = std::iter::once((None, &a.overall))
                .chain(a.subsets.iter().map(|(k, v)| (Some(k.clone()), v)));
            for (name, est) in rows {
                set.push(r.set.label());
                fraction.push(r.fraction);
                seed.push(r.seed);
                pairs.push(r.pairs);
                eval.push(a.eval.clone());
                subset.push(name);
                acc.push(est.value);
                lo.push(est.ci95.map(|c| c[0]));
                hi.push(est.ci95.map(|c| c[1]));
                n.push(est.n);
                subset_key.push(r.subset_key.clone());
                model.push(r.model.clone());
                trained.push(r.trained);
            }
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("set", DataType::Utf8, false),
        Field::new("fraction", DataType::Float64, false),
        Field::new("seed", DataType::UInt32, false),
        Field::new("pairs", DataType::UInt64, false),
        Field::new("eval", DataType::Utf8, false),
        Field::new("subset", DataType::Utf8, true),
        Field::new("accuracy", DataType::Float64, true),
        Field::new("ci95_low", DataType::Float64, true),
        Field::new("ci95_high", DataType::Float64, true),
        Field::new("n", DataType::UInt64, false),
        Field::new("subset_key", DataType::Utf8, false),
        Field::new("model", DataType::Utf8, false),
        Field::new("trained", DataType::Boolean, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(set)),
        Arc::new(Float64Array::from(fraction)),
        Arc::new(UInt32Array::from(seed)),
        Arc::new(UInt64Array::from(pairs)),
        Arc::new(StringArray::from(eval)),
        Arc::new(StringArray::from(subset)),
        Arc::new(Float64Array::from(acc)),
        Arc::new(Float64Array::from(lo)),
        Arc::new(Float64Array::from(hi)),
        Arc::new(UInt64Array::from(n)),
        Arc::new(StringArray::from(subset_key)),
        Arc::new(StringArray::from(model)),
        Arc::new(BooleanArray::from(trained)),
    ];
    RecordBatch::try_new(schema, columns).map_err(|e| Error::Arrow {
        context: "results table".into(),
        source: e,
    })
}

/// The summary printed after a run.
pub fn summary(report: &FractionsReport, out: &str) -> String {
    let mut s = format!(
        "fractions: {} tasks ({} models trained, {} reused from the cache; {} evaluations computed, {} reused) on {} curated / {} raw pairs, in {:.1} s\n",
        report.tasks,
        report.models_trained,
        report.models_reused,
        report.evaluations_computed,
        report.evaluations_reused,
        report.curated_pairs,
        report.raw_pairs,
        report.elapsed_s
    );
    let mut last_eval = None;
    for c in &report.comparisons {
        if last_eval != Some(&c.eval) {
            s.push_str(&format!(
                "accuracy on {} (mean over {} seeds):\n{:>9} {:>9} {:>9} {:>8}\n",
                c.eval, report.seeds, "fraction", "curated", "raw", "diff"
            ));
            last_eval = Some(&c.eval);
        }
        s.push_str(&format!(
            "{:>9} {:>8.2}% {:>8.2}% {:>+7.2}pp\n",
            c.fraction,
            100.0 * c.curated,
            100.0 * c.raw,
            100.0 * c.difference
        ));
    }
    for w in &report.warnings {
        s.push_str(&format!("warning: {w}\n"));
    }
    s.push_str(&format!(
        "wrote {out}/results.parquet, results.csv, accuracy.png, accuracy.svg, report.json\n"
    ));
    s
}

/// Width and height of one panel in pixels.
const PANEL: (u32, u32) = (800, 480);

fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::Worker(format!("drawing the accuracy plot: {e}"))
}

/// The font the PNG's text is drawn in, embedded so that a machine without
/// fontconfig draws the same picture (DejaVu Sans, Bitstream Vera licence,
/// jobs/assets/DejaVuSans-LICENSE).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn register_font() -> Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(plot_error("the embedded font does not load"))
    }
}

fn plot_svg(points: &[CurvePoint], evals: &[String]) -> Result<String> {
    register_font()?;
    let mut svg = String::new();
    {
        let size = (PANEL.0, PANEL.1 * evals.len().max(1) as u32);
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(&root, points, evals)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn plot_png(points: &[CurvePoint], evals: &[String]) -> Result<Vec<u8>> {
    register_font()?;
    let size = (PANEL.0, PANEL.1 * evals.len().max(1) as u32);
    let mut pixels = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        draw(&root, points, evals)?;
        root.present().map_err(plot_error)?;
    }
    // Encoded with the `image` crate plotters' bitmap encoder uses.
    let mut png = Vec::new();
    use image::ImageEncoder;
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&pixels, size.0, size.1, image::ColorType::Rgb8)
        .map_err(plot_error)?;
    Ok(png)
}

/// A fraction as an axis label: at most three significant digits, no trailing zeros.
fn fraction_label(x: f64) -> String {
    let digits = (2 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{x:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    points: &[CurvePoint],
    evals: &[String],
) -> Result<()> {
    root.fill(&WHITE).map_err(plot_error)?;
    let panels = root.split_evenly((evals.len().max(1), 1));
    for (panel, eval) in panels.iter().zip(evals) {
        let mine: Vec<&CurvePoint> = points.iter().filter(|p| &p.eval == eval).collect();
        if mine.is_empty() {
            continue;
        }
        let fmin = mine
            .iter()
            .map(|p| p.fraction)
            .fold(f64::INFINITY, f64::min);
        let fmax = mine.iter().map(|p| p.fraction).fold(0.0, f64::max);
        let ymin = mine.iter().map(|p| p.accuracy_min).fold(1.0, f64::min);
        let ymax = mine.iter().map(|p| p.accuracy_max).fold(0.0, f64::max);
        let pad = ((ymax - ymin) * 0.1).max(0.01);
        let x_range = (fmin / 1.5)..(fmax * 1.5);
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!(
                    "reward-model accuracy on {}",
                    eval.rsplit('/').find(|s| !s.is_empty()).unwrap_or(eval)
                ),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                x_range.log_scale(),
                (ymin - pad).max(0.0)..(ymax + pad).min(1.0),
            )
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("fraction of the curated set (log scale)")
            .y_desc("accuracy")
            .x_labels(8)
            .x_max_light_lines(0)
            .x_label_formatter(&|x| fraction_label(*x))
            .y_label_formatter(&|y| format!("{:.0}%", 100.0 * y))
            .draw()
            .map_err(plot_error)?;
        for (set, color) in [(SetName::Curated, BLUE), (SetName::Raw, RED)] {
            let series: Vec<&CurvePoint> = mine.iter().copied().filter(|p| p.set == set).collect();
            let label = match set {
                SetName::Curated => "curated",
                SetName::Raw => "raw (same size)",
            };
            chart
                .draw_series(LineSeries::new(
                    series.iter().map(|p| (p.fraction, p.accuracy_mean)),
                    color.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(series.iter().map(|p| {
                    ErrorBar::new_vertical(
                        p.fraction,
                        p.accuracy_min,
                        p.accuracy_mean,
                        p.accuracy_max,
                        color.filled(),
                        8,
                    )
                }))
                .map_err(plot_error)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
    }
    Ok(())
}
