//! The engine's one error type. Every variant names the file, row, column or setting at
//! fault, and maps to the exit status of DESIGN §4 (2: bad usage or bad input, 1: other).

use std::fmt;

/// Where in the input an error was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file (URL or path as the user gave it, expanded).
    pub file: String,
    /// Parquet: row index from 0; JSONL: line number from 1.
    pub row: Option<u64>,
    /// The column at fault, if one is.
    pub column: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(row) = self.row {
            write!(f, ", row {row}")?;
        }
        if let Some(column) = &self.column {
            write!(f, ", column `{column}`")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting (flag or spec field) has a value we cannot use.
    #[error("setting `{setting}`: {message}")]
    Setting { setting: String, message: String },

    /// An input file is unusable as a whole: unreadable, wrong format, missing column.
    #[error("{location}: {message}")]
    BadInput { location: Location, message: String },

    /// The input URL matched nothing.
    #[error("{url}: no input files found ({message})")]
    NoInput { url: String, message: String },

    /// Storage failed for a reason other than bad input (network, permissions, disk).
    #[error("{path}: storage error: {source}")]
    Storage {
        path: String,
        #[source]
        source: object_store::Error,
    },

    /// Parquet encoding or decoding failed while writing output.
    #[error("{path}: parquet error: {source}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// Arrow failed while building or converting batches.
    #[error("{context}: arrow error: {source}")]
    Arrow {
        context: String,
        #[source]
        source: arrow::error::ArrowError,
    },

    /// A worker in the dataflow failed; the message says which and why.
    #[error("worker failed: {0}")]
    Worker(String),

    /// Another worker failed; this one stops with the same exit status.
    #[error("{message}")]
    PeerFailed {
        worker: usize,
        exit_code: i32,
        message: String,
    },

    /// A process that `synpref launch` started failed, and the launch gives up: the
    /// message names the process, how it ended and its last lines of stderr. Exit
    /// status 2 when the process refused its arguments (exit 2), else 1.
    #[error("{message}")]
    LaunchedProcessFailed {
        process: usize,
        exit_code: i32,
        message: String,
    },

    #[error("{context}: {message}")]
    Other { context: String, message: String },
}

impl Error {
    /// Exit status of DESIGN §4: 2 for bad usage or bad input files, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Setting { .. } | Error::BadInput { .. } | Error::NoInput { .. } => 2,
            Error::PeerFailed { exit_code, .. } => *exit_code,
            Error::LaunchedProcessFailed { exit_code, .. } => *exit_code,
            _ => 1,
        }
    }

    /// A copy of this error that `worker` reports (an `Error` is not `Clone`, and a
    /// failure cached or shared between threads reaches several of them): the same
    /// text and the same exit status.
    pub fn copied_by(&self, worker: usize) -> Error {
        Error::PeerFailed {
            worker,
            exit_code: self.exit_code(),
            message: self.to_string(),
        }
    }

    pub fn setting(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Setting {
            setting: setting.into(),
            message: message.into(),
        }
    }

    pub fn bad_file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Error::BadInput {
            location: Location {
                file: file.into(),
                row: None,
                column: None,
            },
            message: message.into(),
        }
    }

    pub fn bad_column(
        file: impl Into<String>,
        column: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::BadInput {
            location: Location {
                file: file.into(),
                row: None,
                column: Some(column.into()),
            },
            message: message.into(),
        }
    }

    pub fn bad_row(
        file: impl Into<String>,
        row: u64,
        column: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::BadInput {
            location: Location {
                file: file.into(),
                row: Some(row),
                column,
            },
            message: message.into(),
        }
    }

    pub fn other(context: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Other {
            context: context.into(),
            message: message.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
