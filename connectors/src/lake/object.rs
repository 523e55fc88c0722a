//! The lake on object storage (the S3 API): committed files mirrored to a bucket under the
//! same keys as their paths, and SQL over the bucket with DataFusion.
//!
//! The pipeline writes its lake to a directory (its commit protocol needs fsync and an atomic
//! rename). Committed files are written once and never changed, so mirroring them is safe at
//! any time: [`push`] uploads each committed `.parquet` file of every table that the bucket
//! does not hold yet (same key, same size), and skips the pipeline's own directories
//! (`_staging`, `_checkpoints`, `_wal`). Credentials, region and endpoint come from the usual
//! `AWS_*` environment variables (`AWS_ENDPOINT_URL` for an S3-compatible server).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::SessionContext;
use futures_util::TryStreamExt;
use kaiabc_schemas::Table;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::{table_dir, LakeError};

/// Where a lake lives in a bucket: `s3://BUCKET/PREFIX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix of the lake's root (no leading or trailing `/`; may be empty).
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://BUCKET[/PREFIX]`; `None` for anything else (a directory).
    pub fn parse(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        (!bucket.is_empty()).then(|| Self {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// The key of a path relative to the lake's root.
    fn key(&self, relative: &str) -> ObjectPath {
        match self.prefix.is_empty() {
            true => ObjectPath::from(relative),
            false => ObjectPath::from(format!("{}/{relative}", self.prefix)),
        }
    }

    /// The URL of a table's directory, for DataFusion.
    fn table_url(&self, table: Table) -> String {
        match self.prefix.is_empty() {
            true => format!("s3://{}/{}/", self.bucket, table.name()),
            false => format!("s3://{}/{}/{}/", self.bucket, self.prefix, table.name()),
        }
    }

    /// The bucket's store, configured from the `AWS_*` environment variables (plain HTTP is
    /// allowed when the endpoint says `http://`, as a local S3-compatible server does).
    pub fn store(&self) -> Result<Arc<dyn ObjectStore>, LakeError> {
        let http = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .is_ok_and(|e| e.starts_with("http://"));
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_allow_http(http)
            .build()
            .map_err(|e| LakeError::Object(e.to_string()))?;
        Ok(Arc::new(store))
    }
}

/// What a push did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Files uploaded.
    pub uploaded: usize,
    /// Files the bucket held already.
    pub skipped: usize,
    /// Bytes uploaded.
    pub bytes: u64,
}

/// Uploads the committed files of the lake at `root` that `store` does not hold yet.
pub async fn push(
    root: &Path,
    to: &S3Location,
    store: &dyn ObjectStore,
) -> Result<Pushed, LakeError> {
    let mut pushed = Pushed::default();
    for table in Table::ALL {
        let dir = table_dir(root, table);
        let held: HashMap<String, u64> = store
            .list(Some(&to.key(table.name())))
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect()
            .await
            .map_err(|e| LakeError::Object(e.to_string()))?;
        for file in committed_files(&dir)? {
            let relative = file
                .strip_prefix(root)
                .expect("under the root")
                .to_string_lossy()
                .replace('\\', "/");
            let key = to.key(&relative);
            let len = std::fs::metadata(&file)
                .map_err(LakeError::io("stat", &file))?
                .len();
            if held.get(key.as_ref()) == Some(&len) {
                pushed.skipped += 1;
                continue;
            }
            let bytes = std::fs::read(&file).map_err(LakeError::io("read", &file))?;
            store
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(|e| LakeError::Object(format!("uploading {key}: {e}")))?;
            pushed.uploaded += 1;
            pushed.bytes += len;
        }
    }
    Ok(pushed)
}

/// The committed Parquet files under a table's directory (its date partitions), sorted.
fn committed_files(dir: &Path) -> Result<Vec<PathBuf>, LakeError> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(LakeError::io("list", &d)(e)),
        };
        for e in entries {
            let path = e.map_err(LakeError::io("list", &d))?.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A DataFusion session with every table of [`Table::ALL`] registered over the bucket.
pub async fn session(at: &S3Location) -> Result<SessionContext, LakeError> {
    let ctx = super::query::new_context();
    let url = url::Url::parse(&format!("s3://{}", at.bucket))
        .map_err(|e| LakeError::Config(format!("s3://{}: {e}", at.bucket)))?;
    ctx.register_object_store(&url, at.store()?);
    for t in Table::ALL {
        let opts = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![(
                "date".to_string(),
                arrow::datatypes::DataType::Date32,
            )]);
        ctx.register_listing_table(
            t.name(),
            at.table_url(t),
            opts,
            Some(super::query::scan_schema(t)),
            None,
        )
        .await?;
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_name_a_bucket_and_a_prefix() {
        assert_eq!(
            S3Location::parse("s3://b/some/lake/"),
            Some(S3Location {
                bucket: "b".into(),
                prefix: "some/lake".into()
            })
        );
        let bare = S3Location::parse("s3://b").unwrap();
        assert_eq!(bare.prefix, "");
        assert_eq!(bare.table_url(Table::States), "s3://b/states/");
        assert_eq!(bare.key("states/x.parquet").as_ref(), "states/x.parquet");
        assert_eq!(S3Location::parse("data/lake"), None);
        assert_eq!(S3Location::parse("s3:///x"), None);
    }
}
