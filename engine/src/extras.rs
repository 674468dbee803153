//! Carrying "other columns" through the dataflow untouched (DESIGN §4).
//!
//! Extra columns may have any Arrow type. Rather than a hand-written value enum, each
//! row's extra values are encoded with arrow's row format (`arrow::row`), which is
//! compact, covers nested types and round-trips exactly; the bytes travel with the pair
//! through timely's serde exchange and are decoded back into columns by the writer.

use arrow::array::{new_null_array, ArrayRef};
use arrow::datatypes::{DataType, Field};
use arrow::row::{RowConverter, SortField};

use crate::error::{Error, Result};

/// The unified extra columns of a run and their row codec.
pub struct ExtrasCodec {
    pub fields: Vec<Field>,
    converter: Option<RowConverter>,
}

impl ExtrasCodec {
    pub fn new(fields: Vec<Field>) -> Result<Self> {
        let converter = if fields.is_empty() {
            None
        } else {
            let sort_fields: Vec<SortField> = fields
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect();
            Some(RowConverter::new(sort_fields).map_err(|e| Error::Arrow {
                context: "extra columns".into(),
                source: e,
            })?)
        };
        Ok(ExtrasCodec { fields, converter })
    }

    /// True when an Arrow type can be carried (arrow's row format supports it).
    pub fn supports(data_type: &DataType) -> bool {
        RowConverter::supports_fields(&[SortField::new(data_type.clone())])
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Encodes `rows` rows of the given columns (one per field, in order; `None` means
    /// the column is absent from this file and is written as nulls).
    pub fn encode(&self, columns: Vec<Option<ArrayRef>>, rows: usize) -> Result<Vec<Vec<u8>>> {
        let Some(converter) = &self.converter else {
            return Ok(vec![Vec::new(); rows]);
        };
        let cols: Vec<ArrayRef> = columns
            .into_iter()
            .zip(&self.fields)
            .map(|(c, f)| match c {
                Some(c) if c.data_type() == f.data_type() => Ok(c),
                Some(c) => arrow::compute::cast(&c, f.data_type()).map_err(|e| Error::Arrow {
                    context: format!("column `{}`", f.name()),
                    source: e,
                }),
                None => Ok(new_null_array(f.data_type(), rows)),
            })
            .collect::<Result<_>>()?;
        let encoded = converter.convert_columns(&cols).map_err(|e| Error::Arrow {
            context: "encoding extra columns".into(),
            source: e,
        })?;
        Ok((0..rows)
            .map(|i| encoded.row(i).as_ref().to_vec())
            .collect())
    }

    /// Decodes rows back into one column per field. Empty byte strings (rows from a
    /// source that could not carry extras, e.g. unparsable lines) become nulls.
    pub fn decode<'a>(&self, rows: impl Iterator<Item = &'a [u8]>) -> Result<Vec<ArrayRef>> {
        let Some(converter) = &self.converter else {
            return Ok(Vec::new());
        };
        let rows: Vec<&[u8]> = rows.collect();
        if rows.iter().all(|r| !r.is_empty()) {
            let parser = converter.parser();
            return converter
                .convert_rows(rows.iter().map(|r| parser.parse(r)))
                .map_err(|e| Error::Arrow {
                    context: "decoding extra columns".into(),
                    source: e,
                });
        }
        // Fill rows without extras with an encoded all-null row.
        let nulls = self
            .encode(vec![None; self.fields.len()], 1)?
            .pop()
            .unwrap_or_default();
        let parser = converter.parser();
        converter
            .convert_rows(rows.iter().map(|r| {
                if r.is_empty() {
                    parser.parse(&nulls)
                } else {
                    parser.parse(r)
                }
            }))
            .map_err(|e| Error::Arrow {
                context: "decoding extra columns".into(),
                source: e,
            })
    }
}
