//! The manifests against a real server's OpenAPI schema (kube-apiserver v1.20, started by
//! the test): rendered with the newest optional fields on, the objects carry fields a v1.20
//! server does not know and its server-side apply refuses them; taken out by the server's
//! schema, exactly those fields go and every object applies (server-side dry run).

mod support;

use std::sync::Arc;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use rivet_targets::render::kubernetes::{self, MADE_BY_STATEFULSET, Options, Profile, Schema};
use serde_json::Value;
use support::fleet_prebuilt;
use testkit::apiserver::{ApiServer, ApiServerOptions};

const CONFIG: &str = r#"
deployment:
  target: kubernetes
  kubernetes:
    namespace: schema-check
    create_namespace: true
    storage_size: 1Gi
agents:
  opus: { provider: anthropic, model: claude-opus-4 }
  grok: { provider: xai }
"#;

/// The API of `object`'s kind, in its namespace (cluster-wide for a Namespace).
fn api_of(client: &kube::Client, object: &Value) -> Api<DynamicObject> {
    let api_version = object["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap();
    let resource = ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(group, version, kind));
    match object.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// Server-side apply of `object` (a dry run unless `dry_run` is false).
async fn apply(client: &kube::Client, object: &Value, dry_run: bool) -> Result<(), kube::Error> {
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap();
    let params = if dry_run { PatchParams::apply("rivetctl").dry_run() } else { PatchParams::apply("rivetctl") };
    api_of(client, object).patch(name, &params, &Patch::Apply(object)).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_a_v1_20_server_does_not_know_are_taken_out_and_the_rest_applies() {
    let server = ApiServer::start(ApiServerOptions { controller_manager: false });
    let client = server.client().await;
    let request = http::Request::get("/openapi/v2").body(Vec::new()).unwrap();
    let openapi = client.request_text(request).await.expect("the server's OpenAPI document");
    let schema = Arc::new(Schema::parse(&openapi).expect("an OpenAPI v2 document"));

    // The newest optional fields on (as for 1.33), the PodDisruptionBudget at the API this
    // server serves: a profile that does not fit the server.
    let fleet = fleet_prebuilt(CONFIG);
    let profile = Profile { pdb_api: Some("policy/v1beta1".into()), ..Profile::for_version((1, 33)) };
    let unfitted = Options { profile, digest_key: None, pull_secret: None, schema: None };
    let fitted = Options { schema: Some(schema), ..unfitted.clone() };
    let objects = |options: &Options| -> (Vec<Value>, Vec<kubernetes::Unknown>) {
        let (resources, unknown) = kubernetes::resources_checked(&fleet, options).expect("renders");
        let objects = resources
            .into_iter()
            .map(|r| r.payload)
            .filter(|payload| payload.get(MADE_BY_STATEFULSET).is_none())
            .collect();
        (objects, unknown)
    };

    let (plain, none) = objects(&unfitted);
    assert!(none.is_empty(), "no schema, nothing taken out: {none:?}");
    let namespace = plain.iter().find(|o| o["kind"] == "Namespace").expect("the owned namespace");
    apply(&client, namespace, false).await.expect("the namespace is created");

    // As rendered, the StatefulSet and the PodDisruptionBudgets name fields v1.20 lacks.
    for kind in ["StatefulSet", "PodDisruptionBudget"] {
        let object = plain.iter().find(|o| o["kind"] == kind).unwrap();
        let refused = apply(&client, object, true).await.expect_err("a v1.20 server refuses unknown fields");
        assert!(refused.to_string().contains("field not declared in schema"), "{kind}: {refused}");
    }

    // Taken out by the server's schema: exactly those fields, and everything applies.
    let (pruned, unknown) = objects(&fitted);
    assert_eq!(
        kubernetes::schema::summarize(&unknown),
        [
            "PodDisruptionBudget spec.unhealthyPodEvictionPolicy (2 objects)",
            "StatefulSet spec.persistentVolumeClaimRetentionPolicy (1 object)",
        ]
    );
    assert_eq!(pruned.len(), plain.len());
    for object in &pruned {
        apply(&client, object, true)
            .await
            .unwrap_or_else(|err| panic!("{} {}: {err}", object["kind"], object["metadata"]["name"]));
    }
}
