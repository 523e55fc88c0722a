//! Who may do what: JWT bearer tokens (HS256) with roles for people, and per-node API keys
//! (argon2-hashed in a registry file) for sensor nodes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::Utc;
use kaiabc_schemas::{Calibration, HardwareType, Runtime, SensorKind};
use serde::{Deserialize, Serialize};

/// Errors of authentication and the node registry.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or unreadable ones.
    #[error("{0}")]
    Unauthorized(String),
    /// The node is registered already.
    #[error("node {0:?} is already registered")]
    Exists(String),
    /// A bad request (node id, role, secret).
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing the registry or the secret.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl AuthError {
    /// A stable code for the kind of failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "AUTH_UNAUTHORIZED",
            Self::Exists(_) => "AUTH_EXISTS",
            Self::Invalid(_) => "AUTH_INVALID",
            Self::Io { .. } => "AUTH_IO",
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuthError + '_ {
    move |source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The roles of people, most powerful first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Registers nodes, changes configuration, controls clocks.
    Admin,
    /// Reads everything, runs analyses and exports, controls simulations.
    Researcher,
    /// Reads states and health.
    Observer,
}

impl std::str::FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        match s {
            "admin" => Ok(Role::Admin),
            "researcher" => Ok(Role::Researcher),
            "observer" => Ok(Role::Observer),
            _ => Err(AuthError::Invalid(format!(
                "unknown role {s:?} (admin, researcher, observer)"
            ))),
        }
    }
}

/// A token's claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who.
    pub sub: String,
    /// Their role.
    pub role: Role,
    /// Issued at (Unix s).
    pub iat: i64,
    /// Expires at (Unix s).
    pub exp: i64,
}

/// The minimum secret length: HS256 wants at least its output size.
pub const MIN_SECRET_BYTES: usize = 32;

/// Mints and checks tokens with one secret.
pub struct Jwt {
    enc: jsonwebtoken::EncodingKey,
    dec: jsonwebtoken::DecodingKey,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Jwt(..)")
    }
}

impl Jwt {
    /// Keys from a secret of at least [`MIN_SECRET_BYTES`].
    pub fn new(secret: &[u8]) -> Result<Self, AuthError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(AuthError::Invalid(format!(
                "the JWT secret must be at least {MIN_SECRET_BYTES} bytes, not {}",
                secret.len()
            )));
        }
        Ok(Self {
            enc: jsonwebtoken::EncodingKey::from_secret(secret),
            dec: jsonwebtoken::DecodingKey::from_secret(secret),
        })
    }

    /// A token for `subject` with `role`, valid for `ttl`.
    pub fn mint(&self, subject: &str, role: Role, ttl: Duration) -> Result<String, AuthError> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: subject.to_string(),
            role,
            iat: now,
            exp: now + ttl.as_secs() as i64,
        };
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &self.enc)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// The claims of a valid, unexpired HS256 token.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.leeway = 5;
        v.set_required_spec_claims(&["exp", "sub"]);
        // A token not valid yet is refused too (with the same leeway).
        v.validate_nbf = true;
        jsonwebtoken::decode::<Claims>(token, &self.dec, &v)
            .map(|d| d.claims)
            .map_err(|e| AuthError::Unauthorized(format!("invalid token: {e}")))
    }
}

/// The JWT secret: `KAIABC_JWT_SECRET` if set, else the file at `path`, created with a random
/// secret (mode 0600) on first use so `kaiabc run` and `kaiabc token` agree with no set-up.
pub fn load_secret(path: &Path) -> Result<Vec<u8>, AuthError> {
    secret_from(std::env::var("KAIABC_JWT_SECRET").ok(), path)
}

/// Secrets that are published, so anyone could mint tokens with them: the deployment
/// example's placeholders.
fn is_placeholder(secret: &[u8]) -> bool {
    let s = String::from_utf8_lossy(secret).to_ascii_lowercase();
    s.contains("change-me") || s.contains("changeme") || s.contains("placeholder")
}

/// [`load_secret`] with the environment's value given.
fn secret_from(env: Option<String>, path: &Path) -> Result<Vec<u8>, AuthError> {
    if let Some(s) = env {
        if is_placeholder(s.as_bytes()) {
            return Err(AuthError::Invalid(
                "KAIABC_JWT_SECRET is a placeholder (from deploy/env.example?): anyone could mint \
                 tokens with it; set a random secret, e.g. `openssl rand -hex 32`"
                    .into(),
            ));
        }
        return Ok(s.into_bytes());
    }
    match std::fs::read(path) {
        Ok(b) => {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(io(path))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(AuthError::Invalid(format!(
                    "{} holds the JWT secret and is readable by others (mode {:o}): run \
                     `chmod 600 {}`",
                    path.display(),
                    mode & 0o777,
                    path.display()
                )));
            }
            let secret = b.trim_ascii().to_vec();
            if is_placeholder(&secret) {
                return Err(AuthError::Invalid(format!(
                    "{} holds a placeholder JWT secret: replace it with a random one, e.g. \
                     `openssl rand -hex 32 > {}`",
                    path.display(),
                    path.display()
                )));
            }
            return Ok(secret);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path)(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let secret = random_hex(32);
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(secret.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok(secret.into_bytes())
}

/// Makes a file that holds credentials readable by its owner only (an older release created
/// the registry with the default mode).
fn restrict(path: &Path) -> Result<(), AuthError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the node registry was readable by others; made it 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
    Ok(())
}

/// `n` random bytes as hex.
fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS random source works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A registered node, as stored (the key only as its argon2 hash).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node.
    pub node_id: String,
    /// A human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Its sensor.
    pub sensor_type: String,
    /// Its board (registries written before it was asked for have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_type: Option<HardwareType>,
    /// Its firmware's interpreter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// What it measures.
    #[serde(default = "bme280")]
    pub sensor_types: Vec<SensorKind>,
    /// The firmware version it was registered with (its readings report the current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
    /// Offsets added to its readings before the filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// When it was registered (RFC 3339).
    pub registered_at: String,
    /// The public part of its API key (finds the record without trying every hash).
    pub key_id: String,
    /// The argon2id PHC string of its whole API key.
    pub key_hash: String,
}

/// What registering a node takes.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The node id (`[A-Za-z0-9_-]{1,64}`).
    #[schemars(pattern(kaiabc_schemas::validate::NODE_ID_PATTERN))]
    pub node_id: String,
    /// A human name.
    #[serde(default)]
    pub name: Option<String>,
    /// Where it is.
    #[serde(default)]
    pub location: Option<String>,
    /// Its sensor (default BME280).
    #[serde(default)]
    pub sensor_type: Option<String>,
    /// Its board.
    #[serde(default)]
    pub hardware_type: Option<HardwareType>,
    /// Its firmware's interpreter (default: the one our firmware for the board uses).
    #[serde(default)]
    pub runtime: Option<Runtime>,
    /// What it measures (default: temperature, humidity and pressure, a BME280's); always
    /// temperature, which drives the node's clock.
    #[serde(default)]
    #[schemars(extend("contains" = {"const": "temperature"}))]
    pub sensor_types: Option<Vec<SensorKind>>,
    /// Its firmware version (at most 64 characters).
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub firmware_version: Option<String>,
    /// Offsets added to its readings before the Kalman filter.
    #[serde(default)]
    pub calibration: Option<Calibration>,
}

fn bme280() -> Vec<SensorKind> {
    SensorKind::BME280.to_vec()
}

/// The registered nodes, persisted as JSON (written atomically), with a cache of verified keys
/// so argon2 (tens of milliseconds and 19 MiB by design) runs once per key, not once per
/// request; a cache of keys that failed, so a wrong key is hashed once a minute at most; and a
/// bound on the checks running at once, shared by HTTP and MQTT (128 concurrent wrong keys
/// took 2.5 GB and pushed health checks to 650 ms).
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    nodes: RwLock<BTreeMap<String, NodeRecord>>,
    /// The file's modification time when last read or written: another process of a cluster
    /// sharing the state directory may have registered a node since.
    loaded: Mutex<Option<std::time::SystemTime>>,
    verified: Mutex<HashMap<String, String>>,
    failed: Mutex<Failed>,
    pool: Pool,
    /// argon2 checks run, since start.
    hashed: std::sync::atomic::AtomicU64,
}

/// The longest API key looked at (ours are about 60 characters).
const MAX_KEY_LEN: usize = 128;

/// How long a key that failed is refused without another check.
const FAILED_FOR: Duration = Duration::from_secs(60);

/// Failed keys remembered (the oldest go first).
const FAILED_MAX: usize = 10_000;

/// Keys that failed, with when.
#[derive(Debug, Default)]
struct Failed {
    at: HashMap<String, std::time::Instant>,
    order: std::collections::VecDeque<String>,
}

impl Failed {
    fn recent(&self, key: &str) -> bool {
        self.at.get(key).is_some_and(|t| t.elapsed() < FAILED_FOR)
    }

    fn add(&mut self, key: &str) {
        if self
            .at
            .insert(key.to_string(), std::time::Instant::now())
            .is_none()
        {
            self.order.push_back(key.to_string());
        }
        while self.order.len() > FAILED_MAX {
            if let Some(old) = self.order.pop_front() {
                self.at.remove(&old);
            }
        }
    }
}

/// At most `max` argon2 checks at once; the others wait their turn.
#[derive(Debug)]
struct Pool {
    busy: Mutex<usize>,
    freed: std::sync::Condvar,
    max: usize,
    /// The most that ran at once (for tests and figures).
    peak: std::sync::atomic::AtomicUsize,
}

impl Pool {
    fn new(max: usize) -> Self {
        Self {
            busy: Mutex::new(0),
            freed: std::sync::Condvar::new(),
            max: max.max(1),
            peak: Default::default(),
        }
    }

    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        {
            let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            while *busy >= self.max {
                busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
            }
            *busy += 1;
            self.peak
                .fetch_max(*busy, std::sync::atomic::Ordering::Relaxed);
        }
        let out = f();
        *self.busy.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.freed.notify_one();
        out
    }
}

/// A file's modification time (`None` if it does not exist).
fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The registry's records in `path` (none if there is no file yet).
fn read_records(path: &Path) -> Result<BTreeMap<String, NodeRecord>, AuthError> {
    match std::fs::read(path) {
        Ok(b) => {
            restrict(path)?;
            let list: Vec<NodeRecord> = serde_json::from_slice(&b).map_err(|e| {
                AuthError::Invalid(format!("{}: not a node registry: {e}", path.display()))
            })?;
            Ok(list.into_iter().map(|r| (r.node_id.clone(), r)).collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Whether a node id is acceptable (the validation rule of readings).
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Registry {
    /// Opens (or starts) the registry at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, AuthError> {
        let path = path.into();
        let loaded = modified(&path);
        let nodes = read_records(&path)?;
        Ok(Self {
            path,
            nodes: RwLock::new(nodes),
            loaded: Mutex::new(loaded),
            verified: Mutex::default(),
            failed: Mutex::default(),
            pool: Pool::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
            hashed: Default::default(),
        })
    }

    fn save(&self, nodes: &BTreeMap<String, NodeRecord>) -> Result<(), AuthError> {
        let list: Vec<&NodeRecord> = nodes.values().collect();
        let text = serde_json::to_vec_pretty(&list).expect("records serialise");
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        // Owner only: it names every key id and holds their hashes.
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()
        };
        write().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        if let Ok(mut l) = self.loaded.lock() {
            *l = modified(&self.path);
        }
        Ok(())
    }

    /// Reads the file again if it changed since this process last read or wrote it (another
    /// process of the cluster registered a node); whether it did.
    fn refresh(&self) -> bool {
        let now = modified(&self.path);
        let Ok(mut loaded) = self.loaded.lock() else {
            return false;
        };
        if now == *loaded {
            return false;
        }
        match read_records(&self.path) {
            Ok(nodes) => {
                if let Ok(mut n) = self.nodes.write() {
                    *n = nodes;
                }
                *loaded = now;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the node registry again");
                false
            }
        }
    }

    /// Registers a node and returns its record and its API key (shown this once).
    pub fn register(&self, r: Registration) -> Result<(NodeRecord, String), AuthError> {
        if !valid_node_id(&r.node_id) {
            return Err(AuthError::Invalid(format!(
                "node_id {:?} must be 1-64 characters of A-Z a-z 0-9 _ -",
                r.node_id
            )));
        }
        if r.firmware_version
            .as_ref()
            .is_some_and(|v| v.chars().count() > 64)
        {
            return Err(AuthError::Invalid(
                "firmware_version is longer than 64 characters".into(),
            ));
        }
        if let Some(c) = &r.calibration {
            c.validate().map_err(AuthError::Invalid)?;
        }
        let mut sensor_types = r.sensor_types.unwrap_or_else(bme280);
        sensor_types.sort();
        sensor_types.dedup();
        if !sensor_types.contains(&SensorKind::Temperature) {
            return Err(AuthError::Invalid(
                "sensor_types must include temperature: it drives the node's clock".into(),
            ));
        }
        let key_id = random_hex(4);
        let key = format!("kab_{key_id}_{}", random_hex(24));
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let key_hash = Argon2::default()
            .hash_password(key.as_bytes(), &salt)
            .map_err(|e| AuthError::Invalid(e.to_string()))?
            .to_string();
        let record = NodeRecord {
            node_id: r.node_id.clone(),
            name: r.name,
            location: r.location,
            sensor_type: r.sensor_type.unwrap_or_else(|| "BME280".into()),
            hardware_type: r.hardware_type,
            runtime: r.runtime.or(r.hardware_type.map(HardwareType::runtime)),
            sensor_types,
            firmware_version: r.firmware_version,
            calibration: r.calibration.filter(|c| !c.is_zero()),
            registered_at: kaiabc_schemas::format_timestamp(&Utc::now()),
            key_id,
            key_hash,
        };
        let mut nodes = self
            .nodes
            .write()
            .map_err(|_| AuthError::Invalid("registry lock poisoned".into()))?;
        if nodes.contains_key(&r.node_id) {
            return Err(AuthError::Exists(r.node_id));
        }
        nodes.insert(r.node_id.clone(), record.clone());
        if let Err(e) = self.save(&nodes) {
            nodes.remove(&r.node_id);
            return Err(e);
        }
        Ok((record, key))
    }

    /// One registered node's record.
    pub fn get(&self, node: &str) -> Option<NodeRecord> {
        let find = || self.nodes.read().ok()?.get(node).cloned();
        find().or_else(|| self.refresh().then(find).flatten())
    }

    /// Every registered node.
    pub fn list(&self) -> Vec<NodeRecord> {
        self.nodes
            .read()
            .map(|n| n.values().cloned().collect())
            .unwrap_or_default()
    }

    /// argon2 checks made so far.
    #[cfg(test)]
    pub fn hashed(&self) -> u64 {
        self.hashed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `key` was checked and found good before (so checking it costs no hash).
    pub fn verified(&self, key: &str) -> bool {
        self.verified.lock().is_ok_and(|c| c.contains_key(key))
    }

    /// The node an API key belongs to.
    pub fn authenticate(&self, key: &str) -> Result<String, AuthError> {
        let refuse = || AuthError::Unauthorized("invalid API key".into());
        if key.len() > MAX_KEY_LEN {
            return Err(refuse());
        }
        if let Some(node) = self.verified.lock().ok().and_then(|c| c.get(key).cloned()) {
            return Ok(node);
        }
        if self.failed.lock().is_ok_and(|f| f.recent(key)) {
            return Err(refuse());
        }
        let key_id = key
            .strip_prefix("kab_")
            .and_then(|k| k.split('_').next())
            .ok_or_else(refuse)?;
        let find = || {
            self.nodes
                .read()
                .ok()
                .and_then(|n| n.values().find(|r| r.key_id == key_id).cloned())
        };
        let record = find()
            .or_else(|| self.refresh().then(find).flatten())
            .ok_or_else(refuse)?;
        let hash = PasswordHash::new(&record.key_hash).map_err(|_| refuse())?;
        let ok = self.pool.run(|| {
            self.hashed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Argon2::default()
                .verify_password(key.as_bytes(), &hash)
                .is_ok()
        });
        if !ok {
            if let Ok(mut f) = self.failed.lock() {
                f.add(key);
            }
            return Err(refuse());
        }
        if let Ok(mut c) = self.verified.lock() {
            c.insert(key.to_string(), record.node_id.clone());
        }
        Ok(record.node_id)
    }

    /// Whether `key` is `node`'s API key (MQTT: username = node id, password = key).
    pub fn check_node(&self, node: &str, key: &str) -> bool {
        self.authenticate(key).is_ok_and(|n| n == node)
    }
}

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A person with a token.
    User(Claims),
    /// A node with its API key.
    Node(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_role_and_are_refused_when_forged_or_expired() {
        let jwt = Jwt::new(&[7u8; 32]).unwrap();
        let t = jwt
            .mint("ada", Role::Researcher, Duration::from_secs(60))
            .unwrap();
        let c = jwt.verify(&t).unwrap();
        assert_eq!((c.sub.as_str(), c.role), ("ada", Role::Researcher));
        let other = Jwt::new(&[8u8; 32]).unwrap();
        assert!(matches!(other.verify(&t), Err(AuthError::Unauthorized(_))));
        // Expired beyond the leeway.
        let old = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &Claims {
                sub: "ada".into(),
                role: Role::Admin,
                iat: 0,
                exp: Utc::now().timestamp() - 60,
            },
            &jsonwebtoken::EncodingKey::from_secret(&[7u8; 32]),
        )
        .unwrap();
        assert!(jwt.verify(&old).is_err());
        assert!(jwt.verify("not.a.token").is_err());
        assert!(Jwt::new(b"short").is_err());
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        #[derive(Serialize)]
        struct Early {
            sub: String,
            role: Role,
            iat: i64,
            exp: i64,
            nbf: i64,
        }
        let key = [7u8; 32];
        let now = Utc::now().timestamp();
        let early = |nbf| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &Early {
                    sub: "ada".into(),
                    role: Role::Admin,
                    iat: now,
                    exp: now + 3600,
                    nbf,
                },
                &jsonwebtoken::EncodingKey::from_secret(&key),
            )
            .unwrap()
        };
        let jwt = Jwt::new(&key).unwrap();
        assert!(jwt.verify(&early(now + 600)).is_err());
        assert!(jwt.verify(&early(now - 1)).is_ok());
    }

    #[test]
    fn placeholder_and_exposed_secrets_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("jwt-secret");
        // The deployment example's placeholder, from the environment.
        let example = std::fs::read_to_string(
            std::path::Path::new(
                &std::env::var("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("../deploy/env.example"),
        )
        .unwrap();
        let placeholder = example
            .lines()
            .find_map(|l| l.strip_prefix("KAIABC_JWT_SECRET="))
            .unwrap()
            .to_string();
        let e = secret_from(Some(placeholder), &path).unwrap_err();
        assert!(e.to_string().contains("placeholder"), "{e}");
        // Created 0600 on first use, then read back.
        let made = secret_from(None, &path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(secret_from(None, &path).unwrap(), made);
        // Readable by others: refused, with the fix in the message.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = secret_from(None, &path).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    /// A wrong key with a valid key id is hashed once, then refused from the cache; however
    /// many arrive at once, no more checks run together than the pool allows.
    #[test]
    fn wrong_keys_cost_one_check_each_and_checks_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let reg = std::sync::Arc::new(Registry::open(dir.path().join("nodes.json")).unwrap());
        let (_, key) = reg
            .register(Registration {
                node_id: "w1".into(),
                name: None,
                location: None,
                sensor_type: None,
                ..Default::default()
            })
            .unwrap();
        let hashed = |r: &Registry| r.hashed.load(std::sync::atomic::Ordering::Relaxed);
        let wrong = format!("{key}x");
        for _ in 0..5 {
            assert!(reg.authenticate(&wrong).is_err());
        }
        assert_eq!(hashed(&reg), 1, "one check for five tries");
        assert!(reg.authenticate(&"k".repeat(10_000)).is_err());
        assert_eq!(hashed(&reg), 1, "an oversized key is not hashed");
        // Many different wrong keys at once: bounded.
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let reg = std::sync::Arc::clone(&reg);
                let k = format!("{key}{i}");
                std::thread::spawn(move || reg.authenticate(&k).is_err())
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
        let peak = reg.pool.peak.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            peak <= reg.pool.max,
            "{peak} checks at once, pool of {}",
            reg.pool.max
        );
        // The right key still passes, and is then cached.
        assert_eq!(reg.authenticate(&key).unwrap(), "w1");
    }

    /// Two processes of a cluster share the state directory: a node registered through one is
    /// known to the other at its first request (the file is read again when it changed).
    #[test]
    fn a_node_registered_by_another_process_is_found_on_its_first_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.json");
        let first = Registry::open(&path).unwrap();
        let second = Registry::open(&path).unwrap();
        assert!(second.get("pico_9").is_none());
        let (_, key) = first
            .register(Registration {
                node_id: "pico_9".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(second.authenticate(&key).unwrap(), "pico_9");
        assert!(second.get("pico_9").is_some());
        assert_eq!(second.list().len(), 1);
        // Without a change to the file, a miss reads nothing again.
        assert!(!second.refresh());
        assert!(second.get("pico_10").is_none());
    }

    #[test]
    fn the_registry_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.json");
        let reg = Registry::open(&path).unwrap();
        reg.register(Registration {
            node_id: "pico_1".into(),
            name: None,
            location: None,
            sensor_type: None,
            ..Default::default()
        })
        .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        // One left readable by an older release is tightened when opened.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Registry::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn node_keys_are_hashed_persisted_and_scoped_to_their_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.json");
        let reg = Registry::open(&path).unwrap();
        let (rec, key) = reg
            .register(Registration {
                node_id: "pico_001".into(),
                name: Some("roof".into()),
                location: None,
                sensor_type: None,
                ..Default::default()
            })
            .unwrap();
        assert!(key.starts_with(&format!("kab_{}_", rec.key_id)));
        let stored = std::fs::read_to_string(&path).unwrap();
        assert!(!stored.contains(&key), "the key itself is never stored");
        assert!(stored.contains("$argon2id$"));
        assert!(matches!(
            reg.register(Registration {
                node_id: "pico_001".into(),
                name: None,
                location: None,
                sensor_type: None,
                ..Default::default()
            }),
            Err(AuthError::Exists(_))
        ));
        assert!(matches!(
            reg.register(Registration {
                node_id: "bad id".into(),
                name: None,
                location: None,
                sensor_type: None,
                ..Default::default()
            }),
            Err(AuthError::Invalid(_))
        ));
        // A fresh registry reads it back; the key works, a changed key does not.
        let again = Registry::open(&path).unwrap();
        assert_eq!(again.authenticate(&key).unwrap(), "pico_001");
        assert!(again.check_node("pico_001", &key));
        assert!(!again.check_node("pico_002", &key));
        let mut wrong = key.clone();
        wrong.pop();
        wrong.push(if key.ends_with('0') { '1' } else { '0' });
        assert!(again.authenticate(&wrong).is_err());
        assert!(again.authenticate("kab_nothing").is_err());
        assert!(again.authenticate("").is_err());
    }
}
