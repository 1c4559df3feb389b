//! The control API: validation that names the field and changes nothing, partial and whole
//! updates, and the admin token.

use std::time::Duration;

use observastack_loadgen::{LoadPlan, LoadgenSettings};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestApp, TestTarget, spawn_with};

async fn paused_app(target: &TestTarget, token: Option<&str>) -> TestApp {
    spawn_with(LoadgenSettings {
        plan: LoadPlan {
            paused: true,
            ..LoadPlan::default()
        },
        admin_token: token.map(str::to_owned),
        ..LoadgenSettings::new(target.url.clone())
    })
    .await
}

#[tokio::test]
async fn bad_updates_are_rejected_whole_and_name_the_field() {
    let target = TestTarget::start().await;
    let app = paused_app(&target, None).await;
    let before = app.load().await["plan"].clone();
    assert_eq!(
        before,
        json!({"rate": 10.0, "pattern": {"kind": "constant"}, "paused": true, "timeout_ms": 5000,
               "mix": {"home": 1, "browse": 5, "order": 2, "view_order": 2, "process": 1}})
    );
    let zero_mix = json!({"home": 0, "browse": 0, "order": 0, "view_order": 0, "process": 0});
    let cases: Vec<(Method, Value, Option<&str>)> = vec![
        (Method::PATCH, json!({"rate": -1}), Some("rate")),
        (Method::PATCH, json!({"rate": 5001}), Some("rate")),
        (Method::PATCH, json!({"rate": "fast"}), Some("rate")),
        (Method::PATCH, json!({"rate": 50, "mix": zero_mix}), Some("mix")),
        (Method::PATCH, json!({"mix": {"search": 1}}), Some("mix.search")),
        (Method::PATCH, json!({"mix": {"browse": -2}}), Some("mix.browse")),
        (Method::PATCH, json!({"bogus": 1}), Some("bogus")),
        (
            Method::PATCH,
            json!({"pattern": {"kind": "zigzag"}}),
            Some("pattern.kind"),
        ),
        (Method::PATCH, json!({"pattern": {"to": 5}}), Some("pattern.kind")),
        (
            Method::PATCH,
            json!({"pattern": {"kind": "ramp", "to": 10}}),
            Some("pattern"),
        ),
        (
            Method::PATCH,
            json!({"pattern": {"kind": "ramp", "to": 10, "duration_s": 5, "extra": 1}}),
            Some("pattern"),
        ),
        (
            Method::PATCH,
            json!({"pattern": {"kind": "spike", "peak": 10, "every_s": 5, "duration_s": 10}}),
            Some("pattern.duration_s"),
        ),
        (
            Method::PATCH,
            json!({"pattern": {"kind": "wave", "amplitude": -3, "period_s": 5}}),
            Some("pattern.amplitude"),
        ),
        (Method::PATCH, json!({"rate": 20, "timeout_ms": 0}), Some("timeout_ms")),
        (Method::PATCH, json!({"paused": "no"}), Some("paused")),
        (Method::PUT, json!({"rate": 20, "mix": {}}), Some("mix")),
        (Method::PATCH, json!([1, 2]), None),
    ];
    for (method, body, field) in cases {
        let (status, answer) = app.call(method.clone(), "/load", Some(&body.to_string())).await;
        assert_eq!(status, 400, "{method} {body}: {answer}");
        assert_eq!(answer["error"], "invalid_plan", "{body}: {answer}");
        assert_eq!(answer["field"].as_str(), field, "{body}: {answer}");
        assert!(!answer["message"].as_str().unwrap().is_empty());
        assert_eq!(app.load().await["plan"], before, "{body} changed the plan");
    }
    let (status, answer) = app.call(Method::PATCH, "/load", Some("{not json")).await;
    assert_eq!((status.as_u16(), answer["error"].as_str()), (400, Some("invalid_json")));
    assert_eq!(app.load().await["plan"], before);
}

#[tokio::test]
async fn patch_merges_and_put_replaces() {
    let target = TestTarget::start().await;
    let app = paused_app(&target, None).await;

    let (status, body) = app.patch(json!({"mix": {"process": 7}, "timeout_ms": 800})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["plan"]["mix"],
        json!({"home": 1, "browse": 5, "order": 2, "view_order": 2, "process": 7})
    );
    assert_eq!(
        (body["plan"]["timeout_ms"].as_u64(), body["plan"]["rate"].as_f64()),
        (Some(800), Some(10.0))
    );

    let ramp = json!({"kind": "ramp", "to": 110, "duration_s": 100});
    let (status, body) = app.patch(json!({"paused": false, "rate": 10, "pattern": ramp})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["plan"]["pattern"],
        json!({"kind": "ramp", "to": 110.0, "duration_s": 100.0})
    );
    // The ramp started with this change, so the rate has barely left 10/s.
    let rate = body["current_rate"].as_f64().unwrap();
    assert!((10.0..12.0).contains(&rate), "{rate}");
    assert!(body["started_at_ms"].as_i64().unwrap() > 0);

    let whole = json!({"rate": 5, "mix": {"browse": 1}, "paused": true});
    let (status, body) = app.call(Method::PUT, "/load", Some(&whole.to_string())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["plan"],
        json!({"rate": 5.0, "pattern": {"kind": "constant"}, "paused": true, "timeout_ms": 5000,
               "mix": {"home": 0, "browse": 1, "order": 0, "view_order": 0, "process": 0}})
    );
    assert_eq!(body["current_rate"], 0.0, "paused");
}

#[tokio::test]
async fn the_token_guards_control_but_not_health() {
    let target = TestTarget::start().await;
    let app = paused_app(&target, Some("s3cret")).await;
    for path in ["/load", "/stats", "/failures"] {
        let status = app.client.get(app.url(path)).send().await.unwrap().status();
        assert_eq!(status, 401, "{path} without the token");
    }
    let status = app
        .client
        .patch(app.url("/load"))
        .header("content-type", "application/json")
        .body(r#"{"rate": 1}"#)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    // Not JSON: refused at the browser boundary before anything else.
    let status = app
        .client
        .patch(app.url("/load"))
        .header("content-type", "text/plain")
        .body(r#"{"rate": 1}"#)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 415);
    assert_eq!(app.load().await["plan"]["rate"], 10.0, "with the token");
    for path in ["/healthz", "/metrics"] {
        let status = app.client.get(app.url(path)).send().await.unwrap().status();
        assert_eq!(status, 200, "{path}");
    }
    let ready = crate::support::eventually("/readyz", Duration::from_secs(5), || async {
        let status = app.client.get(app.url("/readyz")).send().await.unwrap().status();
        (status == 200).then_some(())
    });
    ready.await;
}
