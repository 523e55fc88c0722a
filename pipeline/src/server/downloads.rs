//! Exports kept for download (`GET /v1/downloads/{file}`): an export that answers with a link
//! rather than the data (HDF5) writes its file here, in the lake's `_exports` folder, and the
//! link works for a day.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use warp::Filter;

use super::{Api, ApiError, Matched, Principal, Route};

/// How long a download stays after its export.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// Where the lake at `lake` keeps downloads.
pub(super) fn dir(lake: &Path) -> PathBuf {
    lake.join("_exports")
}

/// A file kept for download.
#[derive(Debug)]
pub(super) struct Stored {
    /// Its name without the extension.
    pub export_id: String,
    /// Its name, the last segment of its link.
    pub file: String,
    /// Its size.
    pub size_bytes: u64,
    /// When its link stops working.
    pub expires_at: DateTime<Utc>,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ApiError + 'a {
    move |e| ApiError::Internal(format!("{op} {}: {e}", path.display()))
}

/// Keeps `bytes` as a new download with extension `ext` (blocking: call off the runtime), and
/// deletes the downloads that have expired.
pub(super) fn store(lake: &Path, ext: &str, bytes: &[u8]) -> Result<Stored, ApiError> {
    let dir = dir(lake);
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    sweep(&dir, SystemTime::now());
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| ApiError::Internal(format!("randomness: {e}")))?;
    let now = Utc::now();
    // Unguessable, so that a link is as private as the request that made it.
    let export_id = format!(
        "export_{}_{}",
        now.format("%Y%m%d"),
        random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let file = format!("{export_id}.{ext}");
    let path = dir.join(&file);
    let staged = dir.join(format!(".{file}.tmp"));
    std::fs::write(&staged, bytes).map_err(io("writing", &staged))?;
    // Whole or absent: a download never serves half a file.
    std::fs::rename(&staged, &path).map_err(io("renaming", &path))?;
    Ok(Stored {
        export_id,
        file,
        size_bytes: bytes.len() as u64,
        expires_at: now + KEPT_FOR,
    })
}

/// Deletes the downloads written more than [`KEPT_FOR`] before `now` (and stray staged files).
fn sweep(dir: &Path, now: SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > KEPT_FOR);
        if old {
            if let Err(err) = std::fs::remove_file(e.path()) {
                tracing::warn!(path = %e.path().display(), %err, "deleting an expired download");
            }
        }
    }
}

/// The content type of a download, by its extension.
fn content_type(file: &str) -> &'static str {
    match file.rsplit('.').next() {
        Some("hdf5" | "h5") => "application/x-hdf5",
        Some("parquet") => "application/vnd.apache.parquet",
        Some("csv") => "text/csv",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// A name `store` could have written: no path separators, no hidden files.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

async fn serve(
    lake: PathBuf,
    path: warp::path::FullPath,
) -> Result<warp::reply::Response, ApiError> {
    let name = path.as_str().rsplit('/').next().unwrap_or_default();
    if !valid_name(name) {
        return Err(ApiError::ExportNotFound(format!(
            "{name:?} is not an export's file"
        )));
    }
    let file = dir(&lake).join(name);
    let meta = match tokio::fs::metadata(&file).await {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::ExportNotFound(format!("no export {name}")))
        }
        Err(e) => return Err(io("reading", &file)(e)),
    };
    let written = meta.modified().map_err(io("reading", &file))?;
    if SystemTime::now()
        .duration_since(written)
        .unwrap_or_default()
        > KEPT_FOR
    {
        let _ = tokio::fs::remove_file(&file).await;
        return Err(ApiError::ExportExpired(format!(
            "export {name} has expired (downloads are kept for {} h): export again",
            KEPT_FOR.as_secs() / 3600
        )));
    }
    let body = tokio::fs::read(&file).await.map_err(io("reading", &file))?;
    let mut resp = warp::reply::Response::new(body.into());
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        warp::http::HeaderValue::from_static(content_type(name)),
    );
    if let Ok(v) = format!("attachment; filename=\"{name}\"").parse() {
        h.insert("content-disposition", v);
    }
    Ok(resp)
}

/// `GET /v1/downloads/{file}`.
pub(super) fn route(api: &Arc<Api>, at: Matched) -> Route {
    let lake = api.lake.clone();
    at.and(warp::path::full())
        .then(move |_: Principal, path| {
            let lake = lake.clone();
            async move { serve(lake, path).await.unwrap_or_else(|e| e.response()) }
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_is_kept_whole_and_swept_when_it_expires() {
        let lake = tempfile::tempdir().unwrap();
        let s = store(lake.path(), "hdf5", b"abc").unwrap();
        assert!(
            s.file.starts_with("export_") && s.file.ends_with(".hdf5"),
            "{s:?}"
        );
        assert_eq!(s.size_bytes, 3);
        let path = dir(lake.path()).join(&s.file);
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        // Two exports never share a name.
        assert_ne!(store(lake.path(), "hdf5", b"d").unwrap().file, s.file);
        sweep(&dir(lake.path()), SystemTime::now() + KEPT_FOR / 2);
        assert!(path.exists());
        sweep(&dir(lake.path()), SystemTime::now() + KEPT_FOR * 2);
        assert!(!path.exists());
        assert!(!valid_name("../x") && !valid_name(".x.tmp") && valid_name(&s.file));
    }
}
