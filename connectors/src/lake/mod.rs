//! The Parquet lake: one directory per table, Hive-partitioned by `date=YYYY-MM-DD`, zstd,
//! rows sorted by (node_id, time) inside a file, files committed atomically.
//!
//! Layout under the root (`--lake`, default `./data/lake`):
//! `readings/`, `states/`, `rhythms/`, `dead_letters/`, `phase_shifts/` (each `date=…/part-….parquet`) and
//! `_staging/`, where files are written and fsynced before they are renamed into a table. No
//! reader ever looks into `_staging/`, so no reader ever sees a partial file. The live pipeline
//! also keeps per-node checkpoints in `_checkpoints/` (see [`open_checkpoints`]).

mod checkpoint;
mod date_trunc;
pub mod encoding;
mod first_last;
mod first_row;
mod hdf5;
mod keys;
mod lookup;
pub mod object;
mod query;
mod record;
#[cfg(test)]
mod sql_testing;
mod topk;
mod writer;

use std::path::{Path, PathBuf};

use kaiabc_schemas::Table;

pub use arrow::array::RecordBatch;
pub use checkpoint::{
    checkpoint_dir, open_checkpoints, read_checkpoints, CheckpointWriter, Restored,
};
pub use hdf5::hdf5_bytes;
pub use keys::{existing_keys, for_each_reading_key, ExistingKeys};
pub use lookup::{ReadingLookup, DEFAULT_CACHED_ROWS};
pub use query::{collect, parquet_bytes, query, session, write_batches, OutputFormat};
pub use record::{Columns, LakeRecord, LakeRow};
pub use writer::{LakeConfig, LakeWriter};

/// Errors of the lake.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading Parquet failed.
    #[error("parquet {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Building Arrow data failed (a bug: the schemas are fixed).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A SQL query failed: bad SQL, an unknown column, or an unreadable file.
    #[error("{0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// A configuration value is unusable.
    #[error("invalid lake configuration: {0}")]
    Config(String),
    /// Writing an HDF5 export failed.
    #[error("hdf5 export: {0}")]
    Hdf5(String),
    /// Object storage (S3) refused or failed an operation.
    #[error("object storage: {0}")]
    Object(String),
    /// A checkpoint file is unreadable.
    #[error("checkpoint {path}: {why}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

impl LakeError {
    /// A stable code for the kind of failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "LAKE_IO",
            Self::Parquet { .. } => "LAKE_PARQUET",
            Self::Arrow(_) => "LAKE_ARROW",
            Self::Query(_) => "LAKE_QUERY",
            Self::Config(_) => "LAKE_CONFIG",
            Self::Checkpoint { .. } => "LAKE_CHECKPOINT",
            Self::Hdf5(_) => "LAKE_HDF5",
            Self::Object(_) => "LAKE_OBJECT_STORE",
        }
    }

    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| LakeError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The directory of a table.
pub fn table_dir(root: &Path, table: Table) -> PathBuf {
    root.join(table.name())
}

/// Where files are written before they are committed.
pub fn staging_dir(root: &Path) -> PathBuf {
    root.join("_staging")
}

/// Creates the table directories (so that a query over an empty lake returns no rows rather
/// than an error) and the staging directory.
pub fn ensure_layout(root: &Path) -> Result<(), LakeError> {
    for t in Table::ALL {
        let d = table_dir(root, t);
        std::fs::create_dir_all(&d).map_err(LakeError::io("create", &d))?;
    }
    let s = staging_dir(root);
    std::fs::create_dir_all(&s).map_err(LakeError::io("create", &s))?;
    Ok(())
}

/// Every committed Parquet file of a table, sorted by path.
pub fn table_files(root: &Path, table: Table) -> Result<Vec<PathBuf>, LakeError> {
    let dir = table_dir(root, table);
    let mut out = Vec::new();
    let Ok(parts) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    for part in parts {
        let part = part.map_err(LakeError::io("list", &dir))?.path();
        if !part.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&part).map_err(LakeError::io("list", &part))? {
            let f = f.map_err(LakeError::io("list", &part))?.path();
            if f.extension().is_some_and(|e| e == "parquet") {
                out.push(f);
            }
        }
    }
    out.sort();
    Ok(out)
}
