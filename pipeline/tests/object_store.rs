//! The lake on object storage: `kaiabc lake push` mirrors a lake to a real S3-compatible
//! server (moto's, from PyPI, on loopback), `kaiabc query --lake s3://…` answers as over the
//! directory, and pyarrow's own S3 client reads the bucket.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::deploy::root;
use common::kafka::{wait_for_port, Proc};
use common::live::free_port;

const BUCKET: &str = "kaiabc-lake";

/// moto's S3 server on a free loopback port, with an empty bucket; its endpoint.
fn s3_server(py: &PathBuf) -> (Proc, String) {
    let port = free_port();
    let child = Command::new(py)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto server (scripts/requirements.txt)");
    let server = Proc(child);
    wait_for_port(port, "moto's S3 server");
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = Command::new(py)
        .args(["-c", &format!(
            "import boto3; boto3.client('s3', endpoint_url='{endpoint}', region_name='us-east-1', \
             aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket='{BUCKET}')"
        )])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (server, endpoint)
}

/// `kaiabc` with the S3 settings of the server at `endpoint` in its environment.
fn kaiabc_s3(endpoint: &str, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kaiabc"))
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kaiabc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_lake_pushed_to_s3_answers_the_same_sql_and_pyarrow_reads_it() {
    let py = common::deploy::python();
    let (_server, endpoint) = s3_server(&py);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake_s = lake.to_str().unwrap();
    common::ok(&[
        "replay",
        "--lake",
        lake_s,
        root()
            .join("datasets/greensboro-field.csv")
            .to_str()
            .unwrap(),
    ]);
    let files = walk(&lake)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .filter(|p| !p.strip_prefix(&lake).unwrap().starts_with("_staging"))
        .count();
    assert!(files > 0);

    let to = format!("s3://{BUCKET}/field/lake");
    let out = kaiabc_s3(&endpoint, &["lake", "push", "--lake", lake_s, "--to", &to]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("{files} files uploaded")), "{said}");
    // Pushing again uploads nothing: every file is there, same key and size.
    let out = kaiabc_s3(&endpoint, &["lake", "push", "--lake", lake_s, "--to", &to]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "0 files uploaded (0 bytes), {files} already there"
        )),
        "{said}"
    );

    // SQL over the bucket answers as over the directory, for every table.
    for sql in [
        "SELECT * FROM readings ORDER BY node_id, timestamp",
        "SELECT * FROM states ORDER BY node_id, timestamp",
        "SELECT * FROM rhythms ORDER BY node_id, window_end, metric",
        "SELECT * FROM dead_letters ORDER BY received_at, source",
        "SELECT count(*) AS n, CAST(date AS VARCHAR) AS d FROM states GROUP BY date ORDER BY d",
    ] {
        let local = common::ok(&["query", sql, "--lake", lake_s, "--format", "csv"]);
        let remote = kaiabc_s3(&endpoint, &["query", sql, "--lake", &to, "--format", "csv"]);
        assert!(local.lines().count() > 1, "{sql}: no rows");
        assert_eq!(local, String::from_utf8(remote.stdout).unwrap(), "{sql}");
    }

    // pyarrow, with its own S3 client, reads the bucket as a Hive-partitioned dataset.
    let want = common::ok(&[
        "query",
        "SELECT count(*) AS n FROM states",
        "--lake",
        lake_s,
        "--format",
        "csv",
    ]);
    let script = format!(
        "import pyarrow.dataset as ds, pyarrow.fs as fs\n\
         s3 = fs.S3FileSystem(endpoint_override='{endpoint}', scheme='http', region='us-east-1', \
         access_key='test', secret_key='test')\n\
         t = ds.dataset('{BUCKET}/field/lake/states', filesystem=s3, format='parquet', \
         partitioning='hive').to_table()\n\
         assert 'node_id' in t.column_names and 'date' in t.column_names, t.column_names\n\
         print(t.num_rows)\n"
    );
    let out = Command::new(&py).args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = String::from_utf8(out.stdout).unwrap();
    assert_eq!(format!("n\n{}", rows), want);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
