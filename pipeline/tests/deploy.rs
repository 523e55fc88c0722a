//! The deployment stack, checked as far as this machine can without a Docker engine: the
//! compose file parses and names only files that exist and variables the example env sets,
//! every `KAIABC_*` it sets is one the binary reads, Prometheus's config passes
//! `promtool check config`, Grafana's provisioning points at the mounted dashboards, and
//! Mosquitto, started with the stack's ACL, holds each node to its own topics. (That the
//! dashboards query only exported metrics is checked against a live server in `kafka.rs`.)

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::deploy::{dashboards, root};
use common::kafka::mosquitto;
use yaml_rust2::{Yaml, YamlLoader};

fn yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    let mut docs = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"));
    assert_eq!(docs.len(), 1, "{path}");
    docs.remove(0)
}

fn compose() -> Yaml {
    yaml("docker-compose.yml")
}

/// Every string anywhere under `y`.
fn strings(y: &Yaml, out: &mut Vec<String>) {
    match y {
        Yaml::String(s) => out.push(s.clone()),
        Yaml::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Yaml::Hash(h) => h.iter().for_each(|(k, v)| {
            strings(k, out);
            strings(v, out);
        }),
        _ => {}
    }
}

#[test]
fn the_compose_file_names_its_services_files_and_variables() {
    let c = compose();
    let services = c["services"].as_hash().expect("services");
    let names: Vec<&str> = services.keys().filter_map(Yaml::as_str).collect();
    for want in [
        "kafka",
        "mosquitto",
        "bridge",
        "cluster-init",
        "kaiabc-0",
        "kaiabc-1",
        "kaiabc-2",
        "prometheus",
        "alertmanager",
        "grafana",
        "loki",
        "alloy",
        "mqtt-certs-init",
    ] {
        assert!(names.contains(&want), "no {want} service in {names:?}");
    }
    let env_example = std::fs::read_to_string(root().join("deploy/env.example")).unwrap();
    for (name, s) in services {
        let name = name.as_str().unwrap();
        // Images are pinned, except the one built here.
        if let Some(image) = s["image"].as_str() {
            let tag = image.rsplit_once(':').map(|(_, t)| t);
            assert!(
                tag.is_some_and(|t| t != "latest") || !s["build"].is_badvalue(),
                "{name}: image {image} is not pinned"
            );
        }
        if let Some(ctx) = s["build"].as_str() {
            assert!(
                root().join(ctx).join("Dockerfile").exists(),
                "{name}: no Dockerfile"
            );
        }
        // Bind mounts name files of this repository.
        for v in s["volumes"].as_vec().into_iter().flatten() {
            let v = v.as_str().unwrap();
            if let Some(src) = v.split(':').next().filter(|p| p.starts_with("./")) {
                assert!(root().join(src).exists(), "{name}: {src} does not exist");
            }
        }
        if !name.ends_with("-init") {
            assert!(!s["healthcheck"].is_badvalue(), "{name}: no health check");
        }
        // Every variable it takes from .env is in the example.
        let mut all = Vec::new();
        strings(s, &mut all);
        for text in all {
            let mut rest = text.as_str();
            while let Some(at) = rest.find("${") {
                let var: String = rest[at + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    env_example
                        .lines()
                        .any(|l| l.starts_with(&format!("{var}="))),
                    "{name}: ${{{var}}} is not in deploy/env.example"
                );
                rest = &rest[at + 2..];
            }
        }
    }
    // A multi-stage image.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(
        dockerfile
            .lines()
            .filter(|l| l.starts_with("FROM "))
            .count()
            >= 2
    );
}

#[test]
fn the_stack_sets_only_settings_the_binary_reads() {
    let help = [
        common::ok(&["run", "--help"]),
        common::ok(&["bridge", "--help"]),
        common::ok(&["config", "template"]),
    ]
    .concat();
    let c = compose();
    for (name, s) in c["services"].as_hash().unwrap() {
        let name = name.as_str().unwrap();
        for (k, _) in s["environment"].as_hash().into_iter().flatten() {
            let k = k.as_str().unwrap();
            if k.starts_with("KAIABC_") {
                assert!(help.contains(k), "{name}: {k} is not a setting of kaiabc");
            }
        }
    }
    // The pipeline leaves MQTT → Kafka to the bridge service, which runs `kaiabc bridge`.
    let s = &c["services"];
    assert_eq!(
        s["kaiabc-0"]["environment"]["KAIABC_NO_BRIDGE"].as_str(),
        Some("true")
    );
    assert_eq!(s["bridge"]["command"][0].as_str(), Some("bridge"));
}

#[test]
fn prometheus_config_passes_promtool_and_scrapes_the_pipeline() {
    let promtool = std::env::var("KAIABC_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let out = Command::new(&promtool)
        .args(["check", "config"])
        .arg(root().join("deploy/prometheus/prometheus.yml"))
        .output()
        .unwrap_or_else(|e| panic!("{promtool}: {e} (scripts/services.sh installs it)"));
    assert!(
        out.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let p = yaml("deploy/prometheus/prometheus.yml");
    let job = &p["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    assert_eq!(
        job["static_configs"][0]["targets"][0].as_str(),
        Some("kaiabc-0:8000")
    );
}

/// Runs a checker (`promtool`, `amtool`) in `dir`; panics with its output unless it succeeds.
fn check(tool_env: &str, tool: &str, dir: &str, args: &[&str]) -> String {
    let tool = std::env::var(tool_env).unwrap_or_else(|_| tool.into());
    let out = Command::new(&tool)
        .args(args)
        .current_dir(root().join(dir))
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e} (scripts/services.sh installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?}: {text}");
    text
}

#[test]
fn alerting_rules_pass_promtool_and_their_unit_tests_and_alertmanager_s_config_passes_amtool() {
    let rules = check(
        "KAIABC_PROMTOOL",
        "promtool",
        "deploy/prometheus",
        &["check", "rules", "alerts.yml"],
    );
    assert!(rules.contains("7 rules found"), "{rules}");
    // Synthetic series of the metrics the pipeline exports: each rule fires and resolves when
    // it should (alerts.test.yml).
    check(
        "KAIABC_PROMTOOL",
        "promtool",
        "deploy/prometheus",
        &["test", "rules", "alerts.test.yml"],
    );
    check(
        "KAIABC_AMTOOL",
        "amtool",
        "deploy/alertmanager",
        &["check-config", "alertmanager.yml"],
    );
    let p = yaml("deploy/prometheus/prometheus.yml");
    assert_eq!(p["rule_files"][0].as_str(), Some("alerts.yml"));
    assert_eq!(
        p["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0].as_str(),
        Some("alertmanager:9093")
    );
}

#[test]
fn grafana_loads_the_mounted_dashboards_from_the_provisioned_prometheus() {
    let ds = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let uid = ds["datasources"][0]["uid"].as_str().unwrap().to_string();
    assert_eq!(
        ds["datasources"][0]["url"].as_str(),
        Some("http://prometheus:9090")
    );
    let provider = yaml("deploy/grafana/provisioning/dashboards/kaiabc.yml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let c = compose();
    let mounts: Vec<&str> = c["services"]["grafana"]["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("./deploy/grafana/dashboards:")
                && m.split(':').nth(1) == Some(path.as_str())),
        "the dashboards folder is not mounted at {path}: {mounts:?}"
    );
    let titles: Vec<String> = dashboards()
        .iter()
        .flat_map(|(_, d)| d["panels"].as_array().unwrap().clone())
        .map(|p| {
            for t in p["targets"].as_array().unwrap() {
                assert_eq!(
                    t["datasource"]["uid"]
                        .as_str()
                        .or(p["datasource"]["uid"].as_str()),
                    Some(uid.as_str())
                );
            }
            p["title"].as_str().unwrap().to_string()
        })
        .collect();
    // The list: clock state per node, KOA over 24 h, connectivity, ingest rate,
    // consumer lag, ODE solver time, dead letters.
    for want in [
        "Circadian time",
        "KOA",
        "connectivity",
        "Ingest rate",
        "consumer lag",
        "ODE solver",
        "Dead letters",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no {want} panel in {titles:?}"
        );
    }
}

/// Mosquitto with the stack's ACL file and a password file: a node publishes to its own
/// topic only, and reads only its own output; the server reads everyone's readings.
#[test]
fn mosquitto_with_the_stack_acl_holds_each_node_to_its_own_topics() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    for (i, (user, pass)) in [("kaiabc-server", "s3rver"), ("n1", "key1"), ("n2", "key2")]
        .iter()
        .enumerate()
    {
        let mut args = vec!["-b"];
        if i == 0 {
            args.push("-c");
        }
        let ok = Command::new("mosquitto_passwd")
            .args(&args)
            .args([passwd.to_str().unwrap(), user, pass])
            .status()
            .expect("mosquitto_passwd (scripts/services.sh installs mosquitto)");
        assert!(ok.success());
    }
    // Run as root, Mosquitto drops to its own user, which must read these files: the stack's
    // ACL is copied beside them, since the clone may sit in a directory only root can enter.
    let acl = dir.path().join("acl");
    std::fs::copy(root().join("deploy/mosquitto/acl"), &acl).unwrap();
    let _ = Command::new("chmod")
        .args(["-R", "a+rX", dir.path().to_str().unwrap()])
        .status();
    let (_broker, port) = mosquitto(
        dir.path(),
        &format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\npersistence false\n",
            passwd.display(),
            acl.display()
        ),
    );

    // The login every client command starts with.
    let login = |user: &str, pass: &str| {
        let port = port.to_string();
        ["-h", "127.0.0.1", "-p", &port, "-u", user, "-P", pass].map(str::to_string)
    };
    let sub = |user: &str, pass: &str, filter: &str, count: usize| {
        Command::new("mosquitto_sub")
            .args(login(user, pass))
            .args([
                "-t",
                filter,
                "-C",
                &count.to_string(),
                "-W",
                "3",
                "-v",
                "-q",
                "1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let publish = |user: &str, pass: &str, topic: &str, msg: &str| {
        Command::new("mosquitto_pub")
            .args(login(user, pass))
            .args(["-t", topic, "-m", msg, "-q", "1"])
            .status()
            .unwrap()
            .success()
    };
    let server = sub("kaiabc-server", "s3rver", "kaiabc/sensors/+", 2);
    let spy = sub("n2", "key2", "kaiabc/nodes/n1/output", 1);
    std::thread::sleep(Duration::from_millis(500));
    assert!(publish("n1", "key1", "kaiabc/sensors/n1", "own"));
    // Mosquitto accepts (MQTT 3.1.1 cannot refuse) but drops a publish its ACL forbids.
    assert!(publish("n1", "key1", "kaiabc/sensors/n2", "spoof"));
    assert!(publish("n2", "key2", "kaiabc/sensors/n2", "n2 own"));
    assert!(publish(
        "kaiabc-server",
        "s3rver",
        "kaiabc/nodes/n1/output",
        "{}"
    ));
    assert!(!publish("n1", "wrong", "kaiabc/sensors/n1", "bad key"));
    let got = String::from_utf8(server.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(got, "kaiabc/sensors/n1 own\nkaiabc/sensors/n2 n2 own\n");
    let spied = String::from_utf8(spy.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(spied, "", "n2 read n1's output");
}

/// The stack's own `mosquitto.conf` (ports and paths moved into a temporary directory) with a
/// certificate from `kaiabc certs`: over TLS the same logins and ACL hold as on the plain
/// port, a client that does not trust the CA is refused, and a plain client on the TLS port
/// gets nowhere.
#[test]
fn mosquitto_with_the_stack_conf_serves_tls_with_kaiabc_certs_and_the_same_logins() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certs = d.join("certs");
    common::ok(&["certs", "--out", certs.to_str().unwrap()]);
    let other = d.join("other");
    common::ok(&["certs", "--out", other.to_str().unwrap()]);
    let passwd = d.join("passwd");
    for (i, (user, pass)) in [("kaiabc-server", "s3rver"), ("n1", "key1")]
        .iter()
        .enumerate()
    {
        let mut args = vec!["-b"];
        if i == 0 {
            args.push("-c");
        }
        let ok = Command::new("mosquitto_passwd")
            .args(&args)
            .args([passwd.to_str().unwrap(), user, pass])
            .status()
            .expect("mosquitto_passwd (scripts/services.sh installs mosquitto)");
        assert!(ok.success());
    }
    std::fs::copy(root().join("deploy/mosquitto/acl"), d.join("acl")).unwrap();
    // Mosquitto, run as root, drops to its own user before it reads the key.
    let _ = Command::new("chmod")
        .args(["-R", "a+rX", d.to_str().unwrap()])
        .status();
    let (plain, tls) = (common::live::free_port(), common::live::free_port());
    let conf = std::fs::read_to_string(root().join("deploy/mosquitto/mosquitto.conf"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("listener 1883", &format!("listener {plain} 127.0.0.1"))
        .replace("listener 8883", &format!("listener {tls} 127.0.0.1"))
        .replace("/mosquitto/data/passwd", passwd.to_str().unwrap())
        .replace("/mosquitto/config/acl", d.join("acl").to_str().unwrap())
        .replace("/mosquitto/data/", &format!("{}/", d.display()))
        .replace("/mosquitto/certs/", &format!("{}/", certs.display()));
    assert!(!conf.contains("/mosquitto/"), "a path left unmoved: {conf}");
    let path = d.join("mosquitto.conf");
    std::fs::write(&path, conf).unwrap();
    let log = std::fs::File::create(d.join("mosquitto.log")).unwrap();
    let child = Command::new("mosquitto")
        .args(["-c", path.to_str().unwrap()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("mosquitto (scripts/services.sh installs it)");
    let _broker = common::kafka::Proc(child);
    common::kafka::wait_for_port(tls, "mosquitto's TLS listener");
    common::kafka::wait_for_port(plain, "mosquitto");

    let client = |tool: &str, port: u16, user: &str, pass: &str, ca: Option<&std::path::Path>| {
        let mut c = Command::new(tool);
        c.args([
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "-u",
            user,
            "-P",
            pass,
        ]);
        if let Some(ca) = ca {
            c.arg("--cafile").arg(ca);
        }
        c
    };
    let sub = client("mosquitto_sub", plain, "kaiabc-server", "s3rver", None)
        .args([
            "-t",
            "kaiabc/sensors/+",
            "-C",
            "1",
            "-W",
            "5",
            "-v",
            "-q",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let publish = |port: u16, pass: &str, ca: Option<&std::path::Path>, topic: &str| {
        client("mosquitto_pub", port, "n1", pass, ca)
            .args(["-t", topic, "-m", "over tls", "-q", "1"])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let ca = certs.join("ca.crt");
    // Refused: the wrong key, a CA that did not sign the server's certificate, no TLS at all.
    assert!(!publish(tls, "wrong", Some(&ca), "kaiabc/sensors/n1"));
    assert!(!publish(
        tls,
        "key1",
        Some(&other.join("ca.crt")),
        "kaiabc/sensors/n1"
    ));
    assert!(!publish(tls, "key1", None, "kaiabc/sensors/n1"));
    assert!(publish(tls, "key1", Some(&ca), "kaiabc/sensors/n1"));
    let got = String::from_utf8(sub.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(got, "kaiabc/sensors/n1 over tls\n");
}

/// Logs: Loki's config, the shipper's pipeline and Grafana's data source agree with each other
/// and with what `kaiabc --log-format json` writes (checked structurally: no Loki or Alloy
/// binary can be installed here).
#[test]
fn loki_alloy_and_grafana_agree_on_the_json_logs() {
    let c = compose();
    let s = &c["services"];
    let loki = yaml("deploy/loki/loki.yml");
    let port = loki["server"]["http_listen_port"].as_i64().unwrap();
    assert_eq!(loki["auth_enabled"].as_bool(), Some(false));
    assert_eq!(
        loki["limits_config"]["allow_structured_metadata"].as_bool(),
        Some(true)
    );
    assert!(loki["compactor"]["retention_enabled"].as_bool().unwrap());
    for cfg in loki["schema_config"]["configs"].as_vec().unwrap() {
        assert_eq!(cfg["store"].as_str(), Some("tsdb"));
        assert_eq!(cfg["object_store"].as_str(), Some("filesystem"));
    }
    let mut loki_strings = Vec::new();
    strings(&s["loki"], &mut loki_strings);
    assert!(
        loki_strings
            .iter()
            .any(|v| v.ends_with(&format!(":{port}"))),
        "{loki_strings:?}"
    );
    assert!(loki_strings
        .iter()
        .any(|v| v.starts_with("./deploy/loki/loki.yml:/etc/loki/loki.yml")));
    let ds = yaml("deploy/grafana/provisioning/datasources/loki.yml");
    let ds = &ds["datasources"][0];
    assert_eq!(ds["type"].as_str(), Some("loki"));
    assert_eq!(
        ds["url"].as_str(),
        Some(format!("http://loki:{port}").as_str())
    );
    let alloy = std::fs::read_to_string(root().join("deploy/alloy/config.alloy")).unwrap();
    assert!(alloy.contains(&format!("http://loki:{port}/loki/api/v1/push")));
    assert!(alloy.contains("com.docker.compose.project=kaiabc"));
    assert_eq!(c["name"].as_str(), Some("kaiabc"));
    // Labels: low-cardinality level and target; node and request ids as metadata.
    let block = |name: &str| {
        let at = alloy
            .find(name)
            .unwrap_or_else(|| panic!("no {name} in config.alloy"));
        let end = alloy[at..].find('}').unwrap() + at;
        alloy[at..end].to_string()
    };
    let labels = block("stage.labels");
    assert!(
        labels.contains("level") && labels.contains("target"),
        "{labels}"
    );
    assert!(
        !labels.contains("node_id") && !labels.contains("request_id"),
        "{labels}"
    );
    let meta = block("stage.structured_metadata");
    assert!(
        meta.contains("node_id") && meta.contains("request_id"),
        "{meta}"
    );
    // The keys the shipper parses are the keys kaiabc writes (`live.rs` reads them off a
    // running server's JSON logs).
    let json_stage = block("stage.json");
    for key in ["timestamp", "level", "target"] {
        assert!(json_stage.contains(key), "{json_stage}");
    }
    for (name, svc) in s.as_hash().unwrap() {
        if svc["image"].as_str() == Some("kaiabc:latest")
            && svc["command"][0]
                .as_str()
                .is_some_and(|c| c == "run" || c == "bridge")
        {
            assert_eq!(
                svc["environment"]["KAIABC_LOG_FORMAT"].as_str(),
                Some("json"),
                "{name:?}"
            );
        }
    }
}
