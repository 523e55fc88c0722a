//! `kaiabc certs`: a local certificate authority and a server certificate signed by it, for the
//! embedded broker's TLS listener (or Mosquitto's) in tests and small deployments. Nodes are
//! given `ca.crt` and verify the server against it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory the four files go to: ca.crt, ca.key, server.crt, server.key.
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// A name or IP address the server is reached at (repeat for several); each becomes a
    /// subjectAltName, which clients check against the host they connect to. Commas separate
    /// several in one value.
    #[arg(long = "host", value_delimiter = ',', default_values = ["localhost", "127.0.0.1"])]
    hosts: Vec<String>,
    /// Days the certificates are valid from today.
    #[arg(long, default_value_t = 825)]
    days: u32,
    /// Replace files that exist (nodes must then be given the new ca.crt).
    #[arg(long)]
    force: bool,
}

pub fn run(a: &CertsArgs) -> Result<()> {
    let names = ["ca.crt", "ca.key", "server.crt", "server.key"];
    let paths: Vec<PathBuf> = names.iter().map(|n| a.out.join(n)).collect();
    if !a.force {
        if let Some(p) = paths.iter().find(|p| p.exists()) {
            bail!(
                "{} exists: give --force to replace the CA and the server certificate (nodes \
                 then need the new ca.crt)",
                p.display()
            );
        }
    }
    if a.days == 0 {
        bail!("--days must be at least 1");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let now = time::OffsetDateTime::now_utc();
    let until = now + time::Duration::days(i64::from(a.days));

    let ca_key = KeyPair::generate().context("generating the CA's key")?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "KaiABC Stream local CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now;
    ca.not_after = until;
    let ca_cert = ca.self_signed(&ca_key).context("signing the CA")?;
    let issuer = Issuer::new(ca, &ca_key);

    let key = KeyPair::generate().context("generating the server's key")?;
    let mut server = CertificateParams::new(a.hosts.clone())
        .context("the --host names are not valid subjectAltNames")?;
    server.distinguished_name = DistinguishedName::new();
    server.distinguished_name.push(
        DnType::CommonName,
        a.hosts.first().map_or("kaiabc", |h| h.as_str()),
    );
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = now;
    server.not_after = until;
    let cert = server
        .signed_by(&key, &issuer)
        .context("signing the server certificate")?;

    write(&paths[0], &ca_cert.pem(), false)?;
    write(&paths[1], &ca_key.serialize_pem(), true)?;
    write(&paths[2], &cert.pem(), false)?;
    write(&paths[3], &key.serialize_pem(), true)?;
    println!(
        "wrote {dir}/ca.crt (give it to the nodes), {dir}/server.crt and {dir}/server.key (the \
         broker's), {dir}/ca.key (keep it private); ECDSA P-256, valid {} days, for {}",
        a.days,
        a.hosts.join(", "),
        dir = a.out.display()
    );
    Ok(())
}

/// Writes `text` to `path`; keys are readable by their owner only.
fn write(path: &Path, text: &str, private: bool) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    use std::io::Write as _;
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
