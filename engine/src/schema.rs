//! Output-schema inference: the columns every output part of a run has, from Parquet
//! footers and what a survey of the JSONL files saw; also where whole JSONL files are
//! judged unusable (exit 2, naming the file and the row).

use arrow::datatypes::Field;
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::input::{InputPlan, JsonlObservation};
use crate::json_types::{join_into, JsonType};
use crate::model::ATTRIBUTE_COLUMNS;
use crate::output::{ConvForm, OutputSchema, OWN_COLUMNS};

/// The output schema of a run: from Parquet footers and what the survey saw in JSONL
/// files. Also where whole JSONL files are judged unusable.
pub fn infer_output_schema(
    input: &InputPlan,
    observations: &[JsonlObservation],
) -> Result<(OutputSchema, Vec<Field>)> {
    let mut per_file: FxHashMap<usize, JsonlObservation> = FxHashMap::default();
    // In file order, so that a file's first error is the one nearest its start.
    let mut ordered: Vec<&JsonlObservation> = observations.iter().collect();
    ordered.sort_by_key(|o| (o.file, o.start));
    for o in ordered {
        let e = per_file.entry(o.file).or_insert_with(|| JsonlObservation {
            file: o.file,
            ..Default::default()
        });
        e.lines += o.lines;
        e.unparsable += o.unparsable;
        if e.first_error.is_none() {
            e.first_error = o.first_error.clone();
        }
        e.keys.extend(o.keys.iter().cloned());
        e.message_columns.extend(o.message_columns.iter().cloned());
        e.has_prompt |= o.has_prompt;
    }
    // One type per JSONL key over all JSONL files (a 1 in one file and a 0.5 in
    // another make a float column, as one file holding both would).
    let mut jsonl_types: std::collections::BTreeMap<String, JsonType> = Default::default();
    for o in observations {
        for (k, t) in &o.types {
            join_into(&mut jsonl_types, k, t);
        }
    }
    let mut schema = OutputSchema {
        has_prompt: false,
        prompt: ConvForm::Text,
        chosen: ConvForm::Text,
        rejected: ConvForm::Text,
        attributes: [false; 6],
        format: Default::default(),
        file_format: Default::default(),
        matched_ngram: false,
        duplicate_of: false,
    };
    let mut extras: Vec<(Field, String)> = Vec::new();
    let mut add_extra = |f: Field, file: &str| -> Result<()> {
        match extras.iter().find(|(e, _)| e.name() == f.name()) {
            Some((e, first)) if e.data_type() != f.data_type() => Err(Error::bad_column(
                file,
                f.name(),
                format!(
                    "has type {} here but {} in {first}; files of one run must agree",
                    f.data_type(),
                    e.data_type()
                ),
            )),
            Some(_) => Ok(()),
            None => {
                extras.push((f, file.to_string()));
                Ok(())
            }
        }
    };
    for f in &input.files {
        let url = &f.location.url;
        match (&f.parquet, per_file.get(&f.index)) {
            (Some((_, cols)), _) => {
                if let Some(p) = cols.prompt {
                    schema.has_prompt = true;
                    if p == ConvForm::Messages {
                        schema.prompt = ConvForm::Messages;
                    }
                }
                if cols.chosen == ConvForm::Messages {
                    schema.chosen = ConvForm::Messages;
                }
                if cols.rejected == ConvForm::Messages {
                    schema.rejected = ConvForm::Messages;
                }
                for i in 0..6 {
                    schema.attributes[i] |= cols.attributes[i];
                }
                for e in &cols.extras {
                    add_extra(e.clone(), url)?;
                }
            }
            (None, Some(o)) => {
                if o.lines > 0 && o.unparsable == o.lines {
                    let (line, message) = o.first_error.clone().unwrap_or((1, "unparsable".into()));
                    return Err(Error::bad_row(
                        url,
                        line,
                        None,
                        format!("not a JSONL file (no line is a JSON object): {message}"),
                    ));
                }
                if o.lines == 0 {
                    return Err(Error::bad_file(
                        url,
                        "the file has no rows (only blank lines)",
                    ));
                }
                if o.lines > o.unparsable && !o.has_prompt {
                    let whole = ["chosen", "rejected"]
                        .iter()
                        .all(|c| o.message_columns.contains(*c));
                    if !whole && o.keys.contains("chosen") && o.keys.contains("rejected") {
                        return Err(Error::bad_column(
                            url,
                            "prompt",
                            "no row has a `prompt`, and `chosen`/`rejected` are not whole conversations \
                             (TRL implicit-prompt form needs lists of {role, content} messages)",
                        ));
                    }
                }
                if o.lines > o.unparsable {
                    for required in ["chosen", "rejected"] {
                        if !o.keys.contains(required) {
                            return Err(Error::bad_column(
                                url,
                                required,
                                format!("required column `{required}` is missing from every row (keys seen: {})", o.keys.iter().cloned().collect::<Vec<_>>().join(", ")),
                            ));
                        }
                    }
                }
                schema.has_prompt |= o.has_prompt;
                for (col, slot) in [
                    ("prompt", &mut schema.prompt),
                    ("chosen", &mut schema.chosen),
                    ("rejected", &mut schema.rejected),
                ] {
                    if o.message_columns.contains(col) {
                        *slot = ConvForm::Messages;
                    }
                }
                for (i, name) in ATTRIBUTE_COLUMNS.iter().enumerate() {
                    schema.attributes[i] |= o.keys.contains(*name);
                }
                for k in &o.keys {
                    if ["pair_id", "prompt", "chosen", "rejected"].contains(&k.as_str())
                        || ATTRIBUTE_COLUMNS.contains(&k.as_str())
                        || OWN_COLUMNS.contains(&k.as_str())
                    {
                        continue;
                    }
                    let t = jsonl_types.get(k).cloned().unwrap_or(JsonType::Null);
                    add_extra(Field::new(k, t.arrow(), true), url)?;
                }
            }
            (None, None) => {}
        }
    }
    Ok((schema, extras.into_iter().map(|(f, _)| f).collect()))
}
