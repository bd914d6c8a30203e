//! The project's parts agree: `template.yaml`, the crates under `functions/`, `events/`, the
//! route table the local server serves (and the background functions next to it), and the
//! table definition the emulator is built from.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use shared::config::EXPORT_WORKER_SELF;
use shared::jobs::schedule::ScheduledEvent;
use shared::jobs::worker::Outcome;
use shared::jobs::JobRef;
use shared::jobs::WorkerEvent;
use shared::routes::{BACKGROUND, ROUTES};
use shared::{config::DEV_JWT_SECRET, table};

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

/// An intrinsic function's argument: `!Name x` (short form) or `{Fn::Name: x}` / `{Ref: x}`.
fn intrinsic<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Tagged(t) if t.tag == name => Some(&t.value),
        Value::Mapping(m) if m.len() == 1 => {
            let long = if name == "Ref" { name.to_string() } else { format!("Fn::{name}") };
            m.get(long.as_str())
        }
        _ => None,
    }
}

/// The function's environment variable `name` (its own, not the Globals).
fn env<'a>(resource: &'a Value, name: &str) -> &'a Value {
    &resource["Properties"]["Environment"]["Variables"][name]
}

/// Every policy statement of a function.
fn statements(resource: &Value) -> Vec<Value> {
    resource["Properties"]["Policies"]
        .as_sequence()
        .map(|ps| ps.iter().filter_map(|p| p["Statement"].as_sequence()).flatten().cloned().collect())
        .unwrap_or_default()
}

/// Whether a function's policy allows `action` on a resource written as `!Sub resource`.
fn allows_on_sub(resource: &Value, action: &str, sub: &str) -> bool {
    statements(resource).iter().any(|s| {
        s["Effect"] == "Allow"
            && s["Action"].as_sequence().is_some_and(|a| a.iter().any(|a| a == action))
            && s["Resource"]
                .as_sequence()
                .is_some_and(|r| r.iter().any(|r| intrinsic(r, "Sub").is_some_and(|v| v == sub)))
    })
}

/// `!GetAtt Resource.Attribute` (or `{Fn::GetAtt: [Resource, Attribute]}`) as `Resource.Attribute`.
fn get_att(v: &Value) -> Option<String> {
    match intrinsic(v, "GetAtt")? {
        Value::String(s) => Some(s.clone()),
        Value::Sequence(parts) => Some(parts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(".")),
        _ => None,
    }
}

/// The resources of every `Allow` statement of `statements` that grants `action`.
fn granted(statements: &[Value], action: &str) -> Vec<Value> {
    statements
        .iter()
        .filter(|s| s["Effect"] == "Allow" && s["Action"].as_sequence().is_some_and(|a| a.iter().any(|a| a == action)))
        .flat_map(|s| s["Resource"].as_sequence().cloned().unwrap_or_else(|| vec![s["Resource"].clone()]))
        .collect()
}

fn event_text(name: &str) -> String {
    std::fs::read_to_string(root().join("events").join(format!("{name}.json"))).unwrap()
}

/// The worker's logical id: the other functions get its (generated) name with `!Ref` and
/// may invoke its `!GetAtt ... .Arn`.
const WORKER: &str = "ExportWorkerFunction";
/// Every function whose code hands jobs to the worker: the synchronous exports (their fallback),
/// the job routes (creating, and re-dispatching stale jobs on reads), the worker (its
/// continuation) and the scheduled export.
const DISPATCHERS: &[&str] = &[
    "export-training",
    "export-convos",
    "export-convo",
    "create-export",
    "list-exports",
    "get-export",
    "export-worker",
    "scheduled-export",
];

/// Sample values of EventBridge Scheduler's context attributes.
const SCHEDULER_SAMPLES: &[(&str, &str)] = &[
    ("<aws.scheduler.scheduled-time>", "2026-11-25T00:00:00Z"),
    ("<aws.scheduler.schedule-arn>", "arn:aws:scheduler:us-east-1:123456789012:schedule/default/ScheduledExport"),
    ("<aws.scheduler.execution-id>", "d32c5kddcf5bb8c3"),
];

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
    let routed: BTreeSet<String> = ROUTES.iter().map(|r| r.function.to_string()).collect();
    assert_eq!(routed.len(), ROUTES.len(), "one route per function");
    let background: BTreeSet<String> = BACKGROUND.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(background.len(), BACKGROUND.len(), "background functions are listed once");
    assert!(routed.is_disjoint(&background), "a function is either routed or background");
    let names: BTreeSet<String> = routed.union(&background).cloned().collect();

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
        assert!(
            main.contains("LambdaReply("),
            "{name}: answers through shared::lambda::LambdaReply (a CSV keeps its BOM)"
        );

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

    for (name, handler_path) in BACKGROUND {
        let manifest = std::fs::read_to_string(root().join("functions").join(name).join("Cargo.toml")).unwrap();
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{name}: crate name");
        let main = std::fs::read_to_string(root().join("functions").join(name).join("src/main.rs")).unwrap();
        assert!(main.contains(handler_path), "{name}: main.rs must call {handler_path}");
        assert!(
            main.contains("lambda_runtime::") && main.contains("run(service_fn("),
            "{name}: thin lambda_runtime main"
        );
        assert!(!main.contains("lambda_http"), "{name}: not an HTTP function");

        let resource = &t["Resources"][format!("{}Function", pascal(name)).as_str()];
        assert_eq!(resource["Properties"]["CodeUri"], ".", "{name}: CodeUri");
        assert_eq!(resource["Metadata"]["BuildMethod"], "rust-cargolambda", "{name}: BuildMethod");
        assert_eq!(resource["Metadata"]["BuildProperties"]["Binary"], *name, "{name}: Binary");
        let events =
            resource["Properties"]["Events"].as_mapping().map(|m| m.values().collect::<Vec<_>>()).unwrap_or_default();
        assert!(events.iter().all(|e| e["Type"] != "HttpApi"), "{name}: no route");
    }
}

#[test]
fn the_export_worker_has_a_generated_name_fifteen_minutes_and_two_async_retries() {
    let t = template();
    let worker = &t["Resources"][WORKER];
    let p = &worker["Properties"];
    // No fixed name: a Lambda function name has at most 64 characters, so a fixed
    // `${AWS::StackName}-...` would limit stack names; CloudFormation generates one instead.
    assert!(p["FunctionName"].is_null(), "FunctionName is generated: {:?}", p["FunctionName"]);
    assert_eq!(
        intrinsic(&t["Outputs"]["ExportWorkerName"]["Value"], "Ref").and_then(Value::as_str),
        Some(WORKER),
        "the output names it"
    );
    let text = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    assert!(!text.contains("-export-worker"), "nothing names the worker by a name derived from the stack");
    assert_eq!(p["Timeout"], 900, "the longest invocation Lambda allows");
    assert_eq!(p["EventInvokeConfig"]["MaximumRetryAttempts"], 2, "Lambda retries a failed invocation twice");
    let age = p["EventInvokeConfig"]["MaximumEventAgeInSeconds"].as_u64().expect("MaximumEventAgeInSeconds");
    assert!((60..=21_600).contains(&age), "MaximumEventAgeInSeconds {age}");
    assert!(p["Events"].is_null(), "the worker is only invoked by other functions");
    // It resumes parts it uploaded and checks for a completed file.
    for action in ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"] {
        assert!(allows_on_sub(worker, action, "${ExportBucket.Arn}/exports/*"), "worker: {action}");
    }
}

#[test]
fn every_function_that_dispatches_jobs_names_the_worker_and_may_invoke_only_it() {
    let t = template();
    let worker_arn = format!("{WORKER}.Arn");
    for (id, resource) in template_functions(&t) {
        let dispatches = DISPATCHERS.iter().any(|n| format!("{}Function", pascal(n)) == id);
        let named = env(&resource, "EXPORT_WORKER_FUNCTION");
        let invokes = granted(&statements(&resource), "lambda:InvokeFunction");
        if id == WORKER {
            // Its own name would be a circular reference: it reads the one Lambda gives it, and
            // its invoke permission is a policy of its own on its role (below).
            assert_eq!(named.as_str(), Some(EXPORT_WORKER_SELF), "{id}: EXPORT_WORKER_FUNCTION");
            assert!(invokes.is_empty(), "{id}: no inline lambda:InvokeFunction (it would be circular): {invokes:?}");
        } else if dispatches {
            assert_eq!(intrinsic(named, "Ref").and_then(Value::as_str), Some(WORKER), "{id}: EXPORT_WORKER_FUNCTION");
            let targets: Vec<Option<String>> = invokes.iter().map(get_att).collect();
            assert_eq!(targets, [Some(worker_arn.clone())], "{id}: lambda:InvokeFunction on the worker only");
        } else {
            assert!(named.is_null(), "{id}: EXPORT_WORKER_FUNCTION");
            assert!(invokes.is_empty(), "{id}: lambda:InvokeFunction");
        }
    }
    // The worker's continuation: a policy on the worker's (SAM-generated) role, invoking itself only.
    let policies: Vec<(&Value, &Value)> =
        t["Resources"].as_mapping().unwrap().iter().filter(|(_, r)| r["Type"] == "AWS::IAM::Policy").collect();
    assert_eq!(policies.len(), 1, "one standalone policy: the worker's self-invoke");
    let (_, policy) = policies[0];
    let roles: Vec<Option<&str>> = policy["Properties"]["Roles"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| intrinsic(r, "Ref").and_then(Value::as_str))
        .collect();
    assert_eq!(roles, [Some(format!("{WORKER}Role").as_str())], "attached to the worker's role only");
    let statements = policy["Properties"]["PolicyDocument"]["Statement"].as_sequence().unwrap();
    assert_eq!(statements.len(), 1);
    assert_eq!(
        granted(statements, "lambda:InvokeFunction").iter().map(get_att).collect::<Vec<_>>(),
        [Some(worker_arn)]
    );
    assert_eq!(statements[0]["Action"].as_sequence().map(Vec::len), Some(1), "lambda:InvokeFunction only");
    assert!(
        t["Globals"]["Function"]["Environment"]["Variables"]["EXPORT_WORKER_FUNCTION"].is_null(),
        "only the functions that dispatch know the worker"
    );
    let p = |name: &str| -> Value { t["Resources"][format!("{}Function", pascal(name)).as_str()].clone() };
    for name in DISPATCHERS {
        assert!(!p(name).is_null(), "{name} is in the template");
    }
}

/// Evaluates a `Rules` condition or assertion (`Fn::And`, `Fn::Or`, `Fn::Not`, `Fn::Equals`,
/// `Ref` of a parameter) with these parameter values.
fn rule_value(v: &Value, params: &std::collections::BTreeMap<String, String>) -> Value {
    let args = |name: &str| {
        intrinsic(v, name)
            .and_then(Value::as_sequence)
            .map(|a| a.iter().map(|x| rule_value(x, params)).collect::<Vec<_>>())
    };
    if let Some(name) = intrinsic(v, "Ref").and_then(Value::as_str) {
        return Value::String(params.get(name).unwrap_or_else(|| panic!("Ref of an unknown parameter {name}")).clone());
    }
    if let Some(a) = args("Equals") {
        return Value::Bool(a[0] == a[1]);
    }
    if let Some(a) = args("Not") {
        return Value::Bool(!a[0].as_bool().expect("Fn::Not of a condition"));
    }
    if let Some(a) = args("Or") {
        return Value::Bool(a.iter().any(|x| x.as_bool().expect("a condition")));
    }
    if let Some(a) = args("And") {
        return Value::Bool(a.iter().all(|x| x.as_bool().expect("a condition")));
    }
    match v {
        Value::String(_) | Value::Bool(_) | Value::Number(_) => v.clone(),
        other => panic!("not a rule function this test evaluates: {other:?}"),
    }
}

/// Whether CloudFormation would accept the stack with these parameters (over the defaults):
/// each value within its `AllowedPattern` / `AllowedValues`, and every applicable `Rules`
/// assertion true. `Err` lists what refuses it.
fn deployable(t: &Value, overrides: &[(&str, &str)]) -> Result<(), Vec<String>> {
    let mut params: std::collections::BTreeMap<String, String> = t["Parameters"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, p)| {
            let default = match &p["Default"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => panic!("{k:?}: default {other:?}"),
            };
            (k.as_str().unwrap().to_string(), default)
        })
        .collect();
    for (k, v) in overrides {
        assert!(params.insert(k.to_string(), v.to_string()).is_some(), "{k} is a parameter");
    }
    let mut refused = Vec::new();
    for (name, value) in &params {
        let p = &t["Parameters"][name.as_str()];
        if let Some(pattern) = p["AllowedPattern"].as_str() {
            // CloudFormation matches the whole value (Java's `matches`); the template's patterns
            // anchor every alternative, so JSON Schema's `pattern` (a search) agrees with it.
            let schema = serde_json::json!({ "type": "string", "pattern": pattern });
            if !jsonschema::is_valid(&schema, &serde_json::json!(value)) {
                refused.push(format!("{name}: AllowedPattern"));
            }
        }
        if let Some(allowed) = p["AllowedValues"].as_sequence() {
            if !allowed.iter().any(|a| a.as_str() == Some(value)) {
                refused.push(format!("{name}: AllowedValues"));
            }
        }
    }
    for (rule, body) in t["Rules"].as_mapping().expect("Rules").iter() {
        if !body["RuleCondition"].is_null() && rule_value(&body["RuleCondition"], &params) != Value::Bool(true) {
            continue;
        }
        for assertion in body["Assertions"].as_sequence().expect("Assertions") {
            assert!(assertion["AssertDescription"].as_str().is_some_and(|d| !d.is_empty()), "{rule:?}: says why");
            if rule_value(&assertion["Assert"], &params) != Value::Bool(true) {
                refused.push(format!(
                    "{}: {}",
                    rule.as_str().unwrap(),
                    assertion["AssertDescription"].as_str().unwrap()
                ));
            }
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refused)
    }
}

#[test]
fn a_stack_whose_functions_could_not_verify_tokens_is_refused_at_deploy_time() {
    let t = template();
    let secret = "s3cr3t-of-forty-eight-characters-0123456789abcde";
    assert_eq!(secret.len(), 48);
    let pem = "-----BEGIN PUBLIC KEY-----\nMFkw...\n-----END PUBLIC KEY-----";
    let cursor = "another-random-value-of-32-bytes-at-least-0123";
    // What each function's configuration (`Config::from_env`) would refuse at its first start
    // is refused by CloudFormation before anything is created.
    for (case, overrides) in [
        ("the defaults: no key at all", vec![]),
        ("HS256 with an empty secret", vec![("JwtAlgorithm", "HS256")]),
        ("a secret of 31 characters", vec![("JwtSecret", &secret[..31])]),
        ("a secret of one character", vec![("JwtSecret", "x")]),
        ("the public development secret", vec![("JwtSecret", DEV_JWT_SECRET)]),
        (
            "the development secret beside a public key",
            vec![("JwtAlgorithm", "RS256"), ("JwtPublicKey", pem), ("JwtSecret", DEV_JWT_SECRET)],
        ),
        ("HS256 with only a public key", vec![("JwtPublicKey", pem), ("CursorSecret", cursor)]),
        ("RS256 without the public key", vec![("JwtAlgorithm", "RS256"), ("JwtSecret", secret)]),
        ("ES256 without the public key", vec![("JwtAlgorithm", "ES256"), ("CursorSecret", cursor)]),
        ("RS256 with the key but no cursor secret", vec![("JwtAlgorithm", "RS256"), ("JwtPublicKey", pem)]),
        ("an algorithm of the token's choosing", vec![("JwtAlgorithm", "none"), ("JwtSecret", secret)]),
    ] {
        assert!(deployable(&t, &overrides).is_err(), "{case}: CloudFormation must refuse it");
    }
    for (case, overrides) in [
        ("HS256 with a secret of 32 characters", vec![("JwtSecret", &secret[..32])]),
        ("HS256 with a secret of 48 characters", vec![("JwtSecret", secret)]),
        ("HS256 with its own cursor secret", vec![("JwtSecret", secret), ("CursorSecret", cursor)]),
        (
            "RS256 with the key and a cursor secret",
            vec![("JwtAlgorithm", "RS256"), ("JwtPublicKey", pem), ("CursorSecret", cursor)],
        ),
        (
            "ES256 with the key and a cursor secret",
            vec![("JwtAlgorithm", "ES256"), ("JwtPublicKey", pem), ("CursorSecret", cursor)],
        ),
    ] {
        assert_eq!(deployable(&t, &overrides), Ok(()), "{case}");
    }
    let p = &t["Parameters"]["JwtSecret"];
    assert_eq!(p["NoEcho"], true);
    assert!(p["ConstraintDescription"].as_str().is_some_and(|d| d.contains("32")), "the refusal says what is needed");
    assert!(t["Parameters"]["CursorSecret"]["NoEcho"] == true);
}

#[test]
fn the_schedule_is_named_per_stack() {
    // SAM names a ScheduleV2 schedule after its logical id unless told otherwise, and names are
    // unique per account and region: a second stack would collide. CloudFormation generates it.
    let t = template();
    let events = t["Resources"]["ScheduledExportFunction"]["Properties"]["Events"].as_mapping().expect("Events");
    for (_, event) in events {
        assert_eq!(event["Type"], "ScheduleV2");
        assert_eq!(event["Properties"]["OmitName"], true, "CloudFormation generates the schedule's name");
        assert!(event["Properties"]["Name"].is_null(), "no fixed name (OmitName excludes one)");
    }
    // Nor any other fixed physical name.
    for (id, r) in t["Resources"].as_mapping().unwrap() {
        for key in ["FunctionName", "TableName", "BucketName", "RoleName", "Name", "PolicyName"] {
            if key == "PolicyName" && r["Type"] == "AWS::IAM::Policy" {
                continue; // an inline policy's name is scoped to its role
            }
            assert!(r["Properties"][key].is_null(), "{id:?}: {key} is fixed");
        }
    }
}

#[test]
fn export_retention_comes_from_one_parameter_for_the_bucket_and_the_functions() {
    let t = template();
    let from_env = &t["Globals"]["Function"]["Environment"]["Variables"]["EXPORT_RETENTION_DAYS"];
    assert_eq!(intrinsic(from_env, "Ref").and_then(Value::as_str), Some("ExportRetentionDays"));
    let rules = t["Resources"]["ExportBucket"]["Properties"]["LifecycleConfiguration"]["Rules"].as_sequence().unwrap();
    let expire = rules.iter().find(|r| r["Prefix"] == "exports/").expect("the exports/ expiry rule");
    assert_eq!(intrinsic(&expire["ExpirationInDays"], "Ref").and_then(Value::as_str), Some("ExportRetentionDays"));
}

#[test]
fn the_schedule_sends_a_scheduled_event_with_schedulers_context_attributes() {
    let t = template();
    let resource = &t["Resources"]["ScheduledExportFunction"];
    let events: Vec<&Value> = resource["Properties"]["Events"].as_mapping().expect("Events").values().collect();
    assert_eq!(events.len(), 1, "one schedule");
    let schedule = events[0];
    assert_eq!(schedule["Type"], "ScheduleV2");
    let expression = intrinsic(&schedule["Properties"]["ScheduleExpression"], "Ref")
        .and_then(Value::as_str)
        .expect("!Ref of a parameter");
    assert_eq!(t["Parameters"][expression]["Default"], "rate(1 day)", "daily by default");
    assert!(schedule["Properties"]["RetryPolicy"]["MaximumRetryAttempts"].as_u64().is_some(), "RetryPolicy");

    let input = schedule["Properties"]["Input"].as_str().expect("Input is a JSON string");
    let mut filled = input.to_string();
    for (placeholder, sample) in SCHEDULER_SAMPLES {
        assert!(input.contains(placeholder), "Input uses {placeholder}");
        filled = filled.replace(placeholder, sample);
    }
    assert!(!filled.contains("<aws."), "only known context attributes: {input}");
    let json: serde_json::Value = serde_json::from_str(&filled).expect("Input is JSON once filled in");
    let keys = |v: &serde_json::Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&json), BTreeSet::from(["scheduledTime", "scheduleArn", "executionId"].map(String::from)));
    let event: ScheduledEvent = serde_json::from_value(json).expect("a ScheduledEvent");
    assert_eq!(event.scheduled_time.as_deref(), Some(SCHEDULER_SAMPLES[0].1));
    assert_eq!(event.schedule_arn.as_deref(), Some(SCHEDULER_SAMPLES[1].1));
    assert_eq!(event.execution_id.as_deref(), Some(SCHEDULER_SAMPLES[2].1));
    assert!(shared::time::parse_rfc3339(SCHEDULER_SAMPLES[0].1).is_some(), "Scheduler's time format parses");

    // events/scheduled-export.json is what the schedule sends.
    let file: serde_json::Value = serde_json::from_str(&event_text("scheduled-export")).unwrap();
    assert_eq!(
        keys(&file),
        keys(&serde_json::from_str(&filled).unwrap()),
        "events/scheduled-export.json has the Input's fields"
    );
    let event: ScheduledEvent = serde_json::from_value(file).unwrap();
    assert!(event.scheduled_time.as_deref().and_then(shared::time::parse_rfc3339).is_some(), "scheduledTime");
    assert!(event.schedule_arn.is_some() && event.execution_id.is_some());
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
/// snapshot id and export job id of the `{id}` events are replaced by the ones the create
/// events made. Then the background functions' events: the worker's names a job that does not
/// exist (skipped), the schedule's runs the scheduled export.
#[tokio::test]
async fn every_event_file_runs_through_its_handler() {
    let (state, mut worker) = support::jobs_state_with(|c| {
        c.jwt.secret = Some(DEV_JWT_SECRET.into());
        c.cursor_secret = DEV_JWT_SECRET.as_bytes().to_vec();
    })
    .await;
    const SAMPLE_SNAPSHOT_ID: &str = "67f1a0b0c0d0e0f0a0b0c0d0";
    const SAMPLE_EXPORT_ID: &str = "6a1b2c3d4e5f60718293a4b5";
    let mut snapshot_id = SAMPLE_SNAPSHOT_ID.to_string();
    let mut export_id = SAMPLE_EXPORT_ID.to_string();
    let mut org = None;
    for route in ROUTES {
        let text =
            event_text(route.function).replace(SAMPLE_SNAPSHOT_ID, &snapshot_id).replace(SAMPLE_EXPORT_ID, &export_id);
        let request = lambda_http::request::from_str(&text).unwrap();
        let principal = state.auth.authenticate(request.headers()).expect("the events' token");
        assert!(org.get_or_insert(principal.organization_id.clone()) == &principal.organization_id, "one organization");
        let response = (route.handler)(&state, request).await;
        let status = response.status();
        let body: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap_or_default();
        assert!(status.is_success(), "{}: {status} {body}", route.function);
        match route.function {
            "create-snapshot" => snapshot_id = body["data"]["_id"].as_str().unwrap().to_string(),
            "create-export" => {
                assert_eq!(status, http::StatusCode::ACCEPTED, "{body}");
                export_id = body["data"]["id"].as_str().unwrap().to_string();
            }
            "get-export" => assert_eq!(body["data"]["id"], export_id.as_str(), "{body}"),
            _ => {}
        }
    }
    assert_ne!(snapshot_id, SAMPLE_SNAPSHOT_ID, "the create event made a snapshot");
    assert_ne!(export_id, SAMPLE_EXPORT_ID, "the create event made an export job");
    let org = org.unwrap();
    let expected = JobRef { organization_id: org.clone(), job_id: export_id.clone() };
    assert!(worker.pending().contains(&expected), "create-export handed its job to the worker");

    // export-worker: an event for the events' organization and a job that does not exist.
    let event: WorkerEvent = serde_json::from_str(&event_text("export-worker")).expect("a worker event");
    let WorkerEvent::Job(job) = event.clone() else { panic!("the file's event is a job's: {event:?}") };
    assert_eq!(job.organization_id, org, "the worker event's organization is the token's");
    assert!(shared::ids::is_object_id(&job.job_id), "a job id");
    let outcome = shared::jobs::worker::run(&state, &job, support::worker_options()).await;
    assert_eq!(outcome.expect("worker invocation"), Outcome::Skipped);
    // ... and through the handler main.rs calls, with an invocation's context.
    let mut context = lambda_runtime::Context::default();
    context.deadline = (shared::jobs::now_ms() + 900_000) as u64;
    let answer = shared::jobs::worker::handle(&state, lambda_runtime::LambdaEvent::new(event, context.clone()))
        .await
        .expect("handle");
    // What the runtime sends back: the answer encoded as JSON.
    let answer = serde_json::to_value(&answer).unwrap();
    assert_eq!(answer["jobId"], job.job_id.as_str());
    assert_eq!(answer["outcome"], "Skipped");

    // scheduled-export: the create-snapshot event registered the organization.
    let event: ScheduledEvent = serde_json::from_str(&event_text("scheduled-export")).expect("a ScheduledEvent");
    let scheduled = shared::time::parse_rfc3339(event.scheduled_time.as_deref().unwrap()).unwrap();
    let summary = shared::jobs::schedule::handle(&state, lambda_runtime::LambdaEvent::new(event, context))
        .await
        .expect("scheduled export");
    let summary = serde_json::to_value(&summary).unwrap();
    assert_eq!(summary["scheduledTime"], shared::time::to_rfc3339(scheduled), "{summary}");
    assert!(summary["organizations"].as_u64().is_some_and(|n| n >= 1), "{summary}");
    let runs = ["jobsCreated", "jobsResumed", "unchanged", "deferred", "failed"].map(|k| summary[k].as_u64().expect(k));
    assert!(runs.iter().sum::<u64>() <= summary["organizations"].as_u64().unwrap(), "{summary}");
    // The organizations went to the worker in batches, which report as they finish.
    assert!(summary["batches"].as_u64().is_some_and(|n| n >= 1), "{summary}");
}
