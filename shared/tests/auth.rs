//! Bearer tokens: every way a token can be wrong answers 401 in the envelope and writes nothing.

mod support;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde_json::json;
use shared::auth::{now_epoch, Claims};
use shared::convos::store::ConvoStore;
use support::{assert_convocore_error, new_org, send, state, token_claims};

fn claims(org: &str) -> Claims {
    Claims {
        sub: "u1".into(),
        organization_id: org.into(),
        exp: now_epoch() + 600,
        nbf: None,
        iss: None,
        aud: None,
        email: None,
        given_name: None,
        family_name: None,
    }
}

fn unsigned(header: serde_json::Value, payload: serde_json::Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

#[tokio::test]
async fn invalid_tokens_answer_401_and_write_nothing() {
    let state = state().await;
    let org = new_org();
    let valid = token_claims(claims(&org));
    let expired = token_claims(Claims { exp: now_epoch() - 3600, ..claims(&org) });
    let not_yet = token_claims(Claims { nbf: Some(now_epoch() + 3600), ..claims(&org) });
    let empty_org = token_claims(Claims { organization_id: String::new(), ..claims(&org) });
    let other_key = shared::auth::mint_hs256("another-secret-of-sufficient-length-000000", &claims(&org)).unwrap();
    let alg_none = unsigned(json!({"alg": "none", "typ": "JWT"}), json!({"sub": "u1", "organizationId": org, "exp": now_epoch() + 600}));
    let (h, p, _) = {
        let mut parts = valid.split('.');
        (parts.next().unwrap().to_string(), parts.next().unwrap().to_string(), parts.next().unwrap().to_string())
    };
    let no_org_payload = URL_SAFE_NO_PAD.encode(json!({"sub": "u1", "exp": now_epoch() + 600}).to_string());
    let missing_org = format!("{h}.{no_org_payload}.{}", valid.rsplit('.').next().unwrap());
    let numeric_org = {
        let payload = json!({"sub": "u1", "organizationId": 42, "exp": now_epoch() + 600});
        let mut t = token_claims(claims(&org));
        t = format!("{h}.{}.{}", URL_SAFE_NO_PAD.encode(payload.to_string()), t.rsplit('.').next().unwrap());
        t
    };
    let tampered = format!("{h}.{p}x.{}", valid.rsplit('.').next().unwrap());

    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing header", None, "Missing bearer token"),
        ("no Bearer prefix", Some(valid.clone()), "Malformed Authorization header"),
        ("lowercase bearer", Some(format!("bearer {valid}")), "Malformed Authorization header"),
        ("empty token", Some("Bearer ".into()), "Malformed Authorization header"),
        ("garbage", Some("Bearer abc.def".into()), "Malformed token"),
        ("expired", Some(format!("Bearer {expired}")), "Token expired"),
        ("nbf in the future", Some(format!("Bearer {not_yet}")), "Token not yet valid"),
        ("bad signature", Some(format!("Bearer {other_key}")), "Invalid token signature"),
        ("tampered payload", Some(format!("Bearer {tampered}")), ""),
        ("alg none", Some(format!("Bearer {alg_none}")), ""),
        ("empty organizationId", Some(format!("Bearer {empty_org}")), "Token claims are invalid"),
        ("missing organizationId", Some(format!("Bearer {missing_org}")), ""),
        ("non-string organizationId", Some(format!("Bearer {numeric_org}")), ""),
    ];
    for (name, header, message) in cases {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(h) = &header {
            headers.push(("authorization", h.as_str()));
        }
        let a = send(&state, "PUT", "/agents/ag/convos/c", &headers, br#"{"userName":"x"}"#).await;
        assert_convocore_error(&a, 401, "UNAUTHORIZED");
        assert!(a.body["message"].as_str().unwrap().starts_with(message), "{name}: {}", a.body);
        let text = a.body.to_string();
        assert!(!text.contains(&valid[10..40]), "{name}: the token is never echoed");
        assert_eq!(a.headers["www-authenticate"], "Bearer");
    }
    let store = ConvoStore::new(&state.dynamo, &state.config.table_name);
    assert!(store.get_header(&org, "ag", "c").await.unwrap().is_none(), "nothing was written");

    let ok = send(&state, "PUT", "/agents/ag/convos/c", &[("content-type", "application/json"), ("authorization", &format!("Bearer {valid}"))], b"{}").await;
    assert_eq!(ok.status, 201, "the same request with a valid token works: {}", ok.body);
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let state = support::state_with(|c| {
        c.jwt.issuer = Some("https://issuer.example".into());
        c.jwt.audience = Some("training-api".into());
    })
    .await;
    let org = new_org();
    let good = Claims { iss: Some("https://issuer.example".into()), aud: Some("training-api".into()), ..claims(&org) };
    let cases = [
        (Claims { iss: Some("https://evil.example".into()), ..good.clone() }, 401),
        (Claims { aud: Some("other".into()), ..good.clone() }, 401),
        (Claims { iss: None, ..good.clone() }, 401),
        (good.clone(), 200),
        (Claims { aud: Some(json!(["other", "training-api"])), ..good.clone() }, 200),
        (Claims { aud: Some(json!(["other"])), ..good.clone() }, 401),
    ];
    for (c, status) in cases {
        let auth = format!("Bearer {}", token_claims(c));
        let a = send(&state, "GET", "/agents/ag/convos", &[("authorization", auth.as_str())], b"").await;
        assert_eq!(a.status.as_u16(), status, "{}", a.body);
    }
}
