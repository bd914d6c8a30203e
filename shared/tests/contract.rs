//! The project's parts agree: `template.yaml`, the crates under `functions/`, `events/`, the
//! route table the local server serves, and the table definition the emulator is built from.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use shared::{config::DEV_JWT_SECRET, routes::ROUTES, table};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn template() -> Value {
    let text = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn pascal(name: &str) -> String {
    name.split('-').map(|w| w[..1].to_uppercase() + &w[1..]).collect()
}

/// `(logical id, resource)` of every serverless function in the template.
fn template_functions(t: &Value) -> Vec<(String, Value)> {
    t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .map(|(k, r)| (k.as_str().unwrap().to_string(), r.clone()))
        .collect()
}

fn dir_names(dir: &str, suffix: &str) -> BTreeSet<String> {
    std::fs::read_dir(root().join(dir))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(suffix)).map(str::to_string))
        .collect()
}

#[test]
fn every_function_has_crate_binary_event_template_entry_and_route_and_nothing_is_extra() {
    let t = template();
    let names: BTreeSet<String> = ROUTES.iter().map(|r| r.function.to_string()).collect();
    assert_eq!(names.len(), ROUTES.len(), "one route per function");

    assert_eq!(dir_names("functions", ""), names, "functions/ folders");
    assert_eq!(dir_names("events", ".json"), names, "events/ files");
    let in_template: BTreeSet<String> = template_functions(&t).into_iter().map(|(id, _)| id).collect();
    let expected: BTreeSet<String> = names.iter().map(|n| format!("{}Function", pascal(n))).collect();
    assert_eq!(in_template, expected, "template functions");

    for route in ROUTES {
        let name = route.function;
        let manifest = std::fs::read_to_string(root().join("functions").join(name).join("Cargo.toml")).unwrap();
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{name}: crate name");
        let main = std::fs::read_to_string(root().join("functions").join(name).join("src/main.rs")).unwrap();
        assert!(main.contains(route.handler_path), "{name}: main.rs must call {}", route.handler_path);
        assert!(main.contains("lambda_http::") && main.contains("run(service_fn("), "{name}: thin lambda_http main");

        let resource = &t["Resources"][format!("{}Function", pascal(name)).as_str()];
        assert_eq!(resource["Properties"]["CodeUri"], ".", "{name}: CodeUri");
        assert_eq!(resource["Metadata"]["BuildMethod"], "rust-cargolambda", "{name}: BuildMethod");
        assert_eq!(resource["Metadata"]["BuildProperties"]["Binary"], name, "{name}: Binary");
        let events: Vec<&Value> = resource["Properties"]["Events"].as_mapping().unwrap().values().collect();
        assert_eq!(events.len(), 1, "{name}: one event");
        assert_eq!(events[0]["Type"], "HttpApi", "{name}: HttpApi event");
        assert_eq!(events[0]["Properties"]["Method"], route.method, "{name}: method");
        assert_eq!(events[0]["Properties"]["Path"], route.path, "{name}: path");

        let event: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root().join("events").join(format!("{name}.json"))).unwrap())
                .unwrap();
        assert_eq!(event["routeKey"], format!("{} {}", route.method, route.path), "{name}: event routeKey");
    }
}

#[test]
fn globals_pin_runtime_architecture_and_json_logs() {
    let t = template();
    let g = &t["Globals"]["Function"];
    assert_eq!(g["Runtime"], "provided.al2023");
    assert_eq!(g["Architectures"][0], "arm64");
    assert_eq!(g["LoggingConfig"]["LogFormat"], "JSON");
}

#[test]
fn template_table_matches_the_table_definition() {
    let t = template();
    let p = &t["Resources"]["DataTable"]["Properties"];
    assert_eq!(p["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true);
    let attrs: BTreeSet<String> = p["AttributeDefinitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["AttributeType"], "S");
            a["AttributeName"].as_str().unwrap().to_string()
        })
        .collect();
    let expected: BTreeSet<String> = table::key_attributes().into_iter().map(str::to_string).collect();
    assert_eq!(attrs, expected);
    let key = |schema: &Value| -> (String, String) {
        let s = schema.as_sequence().unwrap();
        assert_eq!(s[0]["KeyType"], "HASH");
        assert_eq!(s[1]["KeyType"], "RANGE");
        (s[0]["AttributeName"].as_str().unwrap().into(), s[1]["AttributeName"].as_str().unwrap().into())
    };
    assert_eq!(key(&p["KeySchema"]), (table::PK.to_string(), table::SK.to_string()));
    let indexes = |v: &Value| -> Vec<(String, String, String)> {
        v.as_sequence()
            .map(|s| {
                s.iter()
                    .map(|ix| {
                        assert_eq!(ix["Projection"]["ProjectionType"], "ALL");
                        let (pk, sk) = key(&ix["KeySchema"]);
                        (ix["IndexName"].as_str().unwrap().to_string(), pk, sk)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let ours = |defs: &[table::IndexDef]| -> Vec<(String, String, String)> {
        defs.iter().map(|d| (d.name.to_string(), d.pk.to_string(), d.sk.to_string())).collect()
    };
    assert_eq!(indexes(&p["LocalSecondaryIndexes"]), ours(table::LOCAL_INDEXES));
    assert_eq!(indexes(&p["GlobalSecondaryIndexes"]), ours(table::GLOBAL_INDEXES));
}

/// Every `events/` file goes through its handler and succeeds, in the order a user would
/// invoke them (create the conversation, ingest, list, capture a snapshot, ...). The sample
/// snapshot id of the `{id}` events is replaced by the one the create event made.
#[tokio::test]
async fn every_event_file_runs_through_its_handler() {
    let state = support::state_with(|c| {
        c.jwt.secret = Some(DEV_JWT_SECRET.into());
        c.cursor_secret = DEV_JWT_SECRET.as_bytes().to_vec();
    })
    .await;
    const SAMPLE_SNAPSHOT_ID: &str = "67f1a0b0c0d0e0f0a0b0c0d0";
    let mut snapshot_id = SAMPLE_SNAPSHOT_ID.to_string();
    for route in ROUTES {
        let path = root().join("events").join(format!("{}.json", route.function));
        let text = std::fs::read_to_string(&path).unwrap().replace(SAMPLE_SNAPSHOT_ID, &snapshot_id);
        let request = lambda_http::request::from_str(&text).unwrap();
        let response = (route.handler)(&state, request).await;
        let status = response.status();
        let body: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap_or_default();
        assert!(status.is_success(), "{}: {status} {body}", route.function);
        if route.function == "create-snapshot" {
            snapshot_id = body["data"]["_id"].as_str().unwrap().to_string();
        }
    }
    assert_ne!(snapshot_id, SAMPLE_SNAPSHOT_ID, "the create event made a snapshot");
}
