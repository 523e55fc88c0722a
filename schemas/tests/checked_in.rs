//! The JSON Schemas and the lake's table description under `schemas/` are generated from the
//! types; these tests fail when the checked-in files drift. Regenerate with
//! `KAIABC_BLESS=1 cargo test -p kaiabc-schemas --test checked_in`.

use std::path::PathBuf;

fn root() -> PathBuf {
    // Read when the test runs, not when it was built: test binaries in a shared target
    // directory may have been built from a clone at another path.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn check(path: PathBuf, want: &str) {
    if std::env::var_os("KAIABC_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let first_difference = have
        .lines()
        .zip(want.lines())
        .position(|(a, b)| a != b)
        .map(|i| {
            format!(
                "line {}: {:?} (file) vs {:?} (types)",
                i + 1,
                have.lines().nth(i).unwrap_or_default(),
                want.lines().nth(i).unwrap_or_default()
            )
        })
        .unwrap_or_else(|| format!("{} lines vs {}", have.lines().count(), want.lines().count()));
    assert!(
        have == want,
        "{} is out of date with the Rust types ({first_difference}); regenerate it with \
         `KAIABC_BLESS=1 cargo test -p kaiabc-schemas --test checked_in` and review the diff",
        path.display()
    );
}

#[test]
fn json_schemas_match_the_types() {
    for (name, schema) in kaiabc_schemas::json_schema::documents() {
        check(
            root().join("json").join(name),
            &kaiabc_schemas::json_schema::render(&schema),
        );
    }
}

#[test]
fn lake_table_description_matches_the_arrow_schemas() {
    check(
        root().join("lake-tables.txt"),
        &kaiabc_schemas::lake::describe(),
    );
}

#[test]
fn a_reading_validates_against_its_json_schema_shape() {
    // The schema names every field the type serialises, with the API's names.
    let (_, schema) = kaiabc_schemas::json_schema::documents().remove(0);
    let v = serde_json::to_value(&schema).unwrap();
    let props = v["properties"].as_object().unwrap();
    for f in [
        "node_id",
        "seq",
        "timestamp",
        "temperature_kelvin",
        "humidity_percent",
        "pressure_pa",
        "light_lux",
        "sensor_type",
        "quality",
        "raw_values",
    ] {
        assert!(props.contains_key(f), "{f}");
    }
    let required: Vec<&str> = v["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert!(required.contains(&"node_id") && required.contains(&"timestamp"));
}
