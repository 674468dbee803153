//! The types of JSONL extra columns: inferred from every value a file holds, as polars
//! and DuckDB infer a schema for JSON lines, so that a `margin` of 0.72 stays a number
//! and a nested value stays nested (DESIGN §4: other columns are carried with their
//! type).
//!
//! The survey joins each key's values into a `JsonType` (a small lattice: integers
//! widen to floats, lists and objects join element- and field-wise, anything else that
//! disagrees becomes JSON text); the schema is its Arrow image; the reader conforms
//! each value to that type and lets arrow-json build the columns.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, Fields, Schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// What the values of one JSON key have been, joined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JsonType {
    /// Only nulls so far.
    Null,
    Bool,
    Int,
    Float,
    Str,
    List(Box<JsonType>),
    Object(BTreeMap<String, JsonType>),
    /// Values that disagree (a number here, text there): carried as JSON text.
    Mixed,
}

impl JsonType {
    /// The type of one value.
    pub fn of(v: &Value) -> JsonType {
        match v {
            Value::Null => JsonType::Null,
            Value::Bool(_) => JsonType::Bool,
            Value::Number(n)
                if n.is_i64() || n.is_u64() && n.as_u64().is_some_and(|u| u <= i64::MAX as u64) =>
            {
                JsonType::Int
            }
            Value::Number(_) => JsonType::Float,
            Value::String(_) => JsonType::Str,
            Value::Array(items) => JsonType::List(Box::new(
                items
                    .iter()
                    .fold(JsonType::Null, |t, v| t.join(&JsonType::of(v))),
            )),
            Value::Object(m) => JsonType::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), JsonType::of(v)))
                    .collect(),
            ),
        }
    }

    /// The least type holding both.
    pub fn join(&self, other: &JsonType) -> JsonType {
        use JsonType::*;
        match (self, other) {
            (Null, t) | (t, Null) => t.clone(),
            (a, b) if a == b => a.clone(),
            (Int, Float) | (Float, Int) => Float,
            (List(a), List(b)) => List(Box::new(a.join(b))),
            (Object(a), Object(b)) => {
                let mut m = a.clone();
                for (k, t) in b {
                    let joined = m.get(k).map_or(t.clone(), |e| e.join(t));
                    m.insert(k.clone(), joined);
                }
                Object(m)
            }
            _ => Mixed,
        }
    }

    /// The Arrow type a column of this JSON type is written with.
    pub fn arrow(&self) -> DataType {
        match self {
            JsonType::Bool => DataType::Boolean,
            JsonType::Int => DataType::Int64,
            JsonType::Float => DataType::Float64,
            JsonType::Null | JsonType::Str | JsonType::Mixed => DataType::Utf8,
            JsonType::List(t) => DataType::List(Arc::new(Field::new("item", t.arrow(), true))),
            JsonType::Object(m) if m.is_empty() => DataType::Utf8,
            JsonType::Object(m) => DataType::Struct(Fields::from(
                m.iter()
                    .map(|(k, t)| Field::new(k, t.arrow(), true))
                    .collect::<Vec<_>>(),
            )),
        }
    }
}

/// Joins `t` into the type kept for `key` (the survey's per-key fold).
pub fn join_into(types: &mut BTreeMap<String, JsonType>, key: &str, t: &JsonType) {
    match types.get_mut(key) {
        Some(old) if old == t => {}
        Some(old) => *old = old.join(t),
        None => {
            types.insert(key.to_string(), t.clone());
        }
    }
}

/// A value made to fit `target` (a type `JsonType::arrow` gave, joined over the run):
/// where the target is text, a value that is not text becomes its JSON text.
fn conform(v: &Value, target: &DataType) -> Value {
    match (v, target) {
        (Value::Null, _) => Value::Null,
        (Value::String(_), DataType::Utf8) => v.clone(),
        (other, DataType::Utf8) => Value::String(other.to_string()),
        (Value::Array(items), DataType::List(f)) => {
            Value::Array(items.iter().map(|i| conform(i, f.data_type())).collect())
        }
        (Value::Object(m), DataType::Struct(fields)) => conform_object(m, fields.iter()),
        _ => v.clone(),
    }
}

/// The keys of `m` that `fields` name, each conformed to its field's type.
fn conform_object<'f>(
    m: &serde_json::Map<String, Value>,
    fields: impl Iterator<Item = &'f arrow::datatypes::FieldRef>,
) -> Value {
    Value::Object(
        fields
            .filter_map(|f| {
                m.get(f.name())
                    .map(|v| (f.name().clone(), conform(v, f.data_type())))
            })
            .collect(),
    )
}

/// The columns `fields` of a batch of JSON objects (absent keys are nulls).
pub fn json_columns(
    fields: &[Field],
    rows: &[&serde_json::Map<String, Value>],
    file: &str,
) -> Result<Vec<ArrayRef>> {
    let schema = Arc::new(Schema::new(fields.to_vec()));
    let conformed: Vec<Value> = rows
        .iter()
        .map(|m| conform_object(m, schema.fields().iter()))
        .collect();
    let err = |e: arrow::error::ArrowError| Error::Arrow {
        context: format!("{file}: extra columns"),
        source: e,
    };
    let mut decoder = arrow::json::ReaderBuilder::new(schema)
        .with_batch_size(conformed.len().max(1))
        .build_decoder()
        .map_err(err)?;
    decoder.serialize(&conformed).map_err(err)?;
    let batch = decoder.flush().map_err(err)?;
    Ok(match batch {
        Some(b) => b.columns().to_vec(),
        None => fields
            .iter()
            .map(|f| arrow::array::new_null_array(f.data_type(), 0))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(values: &[&str]) -> JsonType {
        values.iter().fold(JsonType::Null, |t, v| {
            t.join(&JsonType::of(&serde_json::from_str(v).unwrap()))
        })
    }

    #[test]
    fn numbers_widen_and_disagreements_become_text() {
        assert_eq!(ty(&["1", "2"]).arrow(), DataType::Int64);
        assert_eq!(ty(&["1", "0.72", "null"]).arrow(), DataType::Float64);
        assert_eq!(ty(&["true", "null"]).arrow(), DataType::Boolean);
        assert_eq!(ty(&["1", "\"a\""]).arrow(), DataType::Utf8);
        assert_eq!(ty(&["null"]).arrow(), DataType::Utf8);
    }

    #[test]
    fn nested_values_join_fieldwise_and_decode_with_their_types() {
        let t = ty(&[r#"{"a": 1, "tags": ["x"]}"#, r#"{"a": 2.5, "b": true}"#]);
        let DataType::Struct(fields) = t.arrow() else {
            panic!("{t:?}")
        };
        let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["a", "b", "tags"]);
        assert_eq!(fields[0].data_type(), &DataType::Float64);
        let field = Field::new("meta", t.arrow(), true);
        let rows: Vec<serde_json::Map<String, Value>> = [
            r#"{"meta": {"a": 1, "tags": ["x", "y"]}}"#,
            r#"{"meta": null}"#,
            r#"{}"#,
        ]
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
        let refs: Vec<&serde_json::Map<String, Value>> = rows.iter().collect();
        let cols = json_columns(&[field], &refs, "t.jsonl").unwrap();
        assert_eq!(cols[0].len(), 3);
        assert_eq!(cols[0].null_count(), 2);
        // A mixed column keeps numbers as their JSON text.
        let mixed = Field::new("m", ty(&["1", "\"a\""]).arrow(), true);
        let rows: Vec<serde_json::Map<String, Value>> = [r#"{"m": 1}"#, r#"{"m": "a"}"#]
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect();
        let refs: Vec<&serde_json::Map<String, Value>> = rows.iter().collect();
        let cols = json_columns(&[mixed], &refs, "t.jsonl").unwrap();
        let s = cols[0]
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        assert_eq!((s.value(0), s.value(1)), ("1", "a"));
    }
}
