use super::*;
use serde_json::json;

fn head(path: &str, headers: &[(&str, &str)], jwt: Option<Value>) -> RequestHead {
    RequestHead {
        method: "POST".into(),
        path: path.into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        client_address: None,
        jwt: jwt.and_then(|v| v.as_object().cloned()),
    }
}

fn admission(extra: Value) -> Admission {
    let mut cfg = AdmissionConfig {
        consumers: Some(json!([
            {"name": "alice", "credential": "key-a", "scopes": ["tools"], "upstreamCredentials": {"s": "alice-up"}},
            {"name": "bob", "credential": "key-b"}
        ])),
        key_auth: Some(json!({"keys": ["X-Api-Key"], "inQuery": true})),
        ..AdmissionConfig::default()
    };
    if let Some(j) = extra.get("jwtAuth") {
        cfg.jwt_auth = Some(j.clone());
    }
    if let Some(h) = extra.get("consumerHeader").and_then(Value::as_str) {
        cfg.consumer_header = Some(h.into());
    }
    Admission::compile(&cfg, &["s"]).unwrap()
}

#[test]
fn api_keys_from_header_or_query_name_the_consumer_and_a_wrong_key_is_refused() {
    let a = admission(json!({}));
    let alice = a.identify(&head("/m/s", &[("x-api-key", "key-a")], None)).unwrap();
    assert_eq!((alice.consumer.as_deref(), alice.scopes.clone()), (Some("alice"), vec!["tools".to_string()]));
    let bob = a.identify(&head("/m/s?a=1&X-Api-Key=key-b", &[], None)).unwrap();
    assert_eq!(bob.label(), "bob");
    let wrong = a.identify(&head("/m/s", &[("x-api-key", "nope")], None)).unwrap_err();
    assert_eq!(wrong.status(), 401);
    assert!(!wrong.message().contains("nope"), "the presented key is never echoed");
    assert_eq!(a.identify(&head("/m/s", &[], None)).unwrap(), Caller::anonymous());
    assert!(!format!("{a:?}").contains("key-a") && !format!("{a:?}").contains("alice-up"), "{a:?}");
}

#[test]
fn jwt_claims_and_the_consumer_header_identify_callers_when_configured() {
    let a = admission(json!({"jwtAuth": {"payloadKey": "p"}, "consumerHeader": "X-Mse-Consumer"}));
    let claims = json!({"sub": "alice", "scope": "read write", "scp": ["extra"]});
    let c = a.identify(&head("/m/s", &[], Some(claims))).unwrap();
    assert_eq!(c.consumer.as_deref(), Some("alice"));
    assert_eq!(c.scopes, ["read", "write", "extra", "tools"], "token scopes, then the consumer's own");
    assert_eq!(c.claims["sub"], "alice");
    let header = a.identify(&head("/m/s", &[("x-mse-consumer", "carol")], None)).unwrap();
    assert_eq!(header.consumer.as_deref(), Some("carol"));
    // Without consumerHeader the header is only a header.
    let plain = admission(json!({}));
    assert_eq!(plain.identify(&head("/m/s", &[("x-mse-consumer", "carol")], None)).unwrap(), Caller::anonymous());
    // The API key comes first.
    let both = a.identify(&head("/m/s", &[("x-api-key", "key-b")], Some(json!({"sub": "alice"})))).unwrap();
    assert_eq!(both.label(), "bob");
}

#[test]
fn per_user_upstream_credentials_come_from_the_consumer_or_a_claim() {
    let a = admission(json!({"jwtAuth": {"payloadKey": "p"}}));
    let auth = ServerAuth::compile(Some(json!({"anonymous": true, "upstreamCredentialClaim": "gh"})), &a).unwrap();
    let alice = a.identify(&head("/", &[("x-api-key", "key-a")], None)).unwrap();
    assert_eq!(a.upstream_credential(&auth, "s", &alice).as_deref(), Some("alice-up"));
    assert_eq!(a.upstream_credential(&auth, "other", &alice), None);
    let token = a.identify(&head("/", &[], Some(json!({"sub": "x", "gh": "tok"})))).unwrap();
    assert_eq!(a.upstream_credential(&auth, "s", &token).as_deref(), Some("tok"));
    let bad = a.identify(&head("/", &[], Some(json!({"sub": "x", "gh": "a\r\nb"})))).unwrap();
    assert_eq!(a.upstream_credential(&auth, "s", &bad), None, "CR/LF never reach a header");
}

fn place() -> (RequestHead, String) {
    (head("/", &[(":authority", "gw.test:8080"), (":scheme", "http")], None), "/mcp-servers/s".to_string())
}

#[test]
fn oauth_servers_challenge_check_audience_and_scopes() {
    let a = admission(json!({"jwtAuth": {"payloadKey": "p"}}));
    let auth = ServerAuth::compile(
        Some(json!({"scopes": ["tools"], "oauth": {"authorizationServers": ["https://as.test"], "scopesSupported": ["tools"]}})),
        &a,
    )
    .unwrap();
    let (h, path) = place();
    let p = || Place::of(&h, path.clone());
    let resource = "http://gw.test:8080/mcp-servers/s";
    let prm = "http://gw.test:8080/.well-known/oauth-protected-resource/mcp-servers/s";
    let e = auth.admit(&Caller::anonymous(), p).unwrap_err();
    assert_eq!(e.status(), 401);
    assert_eq!(e.headers()[0].1, format!("Bearer resource_metadata=\"{prm}\", scope=\"tools\""));
    let token = |claims: Value| a.identify(&head("/", &[], Some(claims))).unwrap();
    let e = auth.admit(&token(json!({"sub": "x", "aud": "https://other", "scope": "tools"})), p).unwrap_err();
    assert!(e.status() == 401 && e.headers()[0].1.contains("invalid_token"));
    let e = auth.admit(&token(json!({"sub": "x", "aud": [resource], "scope": "read"})), p).unwrap_err();
    assert!(e.status() == 403 && e.headers()[0].1.contains("insufficient_scope"), "{e:?}");
    auth.admit(&token(json!({"sub": "x", "aud": [resource], "scope": "tools"})), p).unwrap();
    // An API-key consumer with the scope configured is admitted (no token, so no audience).
    auth.admit(&a.identify(&head("/", &[("x-api-key", "key-a")], None)).unwrap(), p).unwrap();
    let doc = auth.metadata(&p(), "s").unwrap();
    assert_eq!(doc["resource"], resource);
    assert_eq!(doc["authorization_servers"], json!(["https://as.test"]));
    // The document's members in the order RFC 9728's examples (and this module before) give them.
    let keys: Vec<&str> = doc.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(&keys[..4], ["resource", "authorization_servers", "bearer_methods_supported", "resource_name"]);
    assert_eq!(doc["bearer_methods_supported"].to_string(), r#"["header"]"#);
    // A hostile authority never reaches the challenge.
    let evil = head("/", &[(":authority", "x\", evil=\"1")], None);
    let e = auth.admit(&Caller::anonymous(), || Place::of(&evil, "/m/s".into())).unwrap_err();
    assert!(!e.headers()[0].1.contains("evil"), "{e:?}");
}

#[test]
fn servers_without_auth_admit_everyone_and_bad_settings_are_refused_at_load() {
    let a = admission(json!({}));
    let (h, path) = place();
    ServerAuth::default().admit(&Caller::anonymous(), || Place::of(&h, path.clone())).unwrap();
    let closed = ServerAuth::compile(Some(json!({})), &a).unwrap();
    assert_eq!(closed.admit(&Caller::anonymous(), || Place::of(&h, path.clone())).unwrap_err().status(), 401);
    let err = |cfg: AdmissionConfig| Admission::compile(&cfg, &["s"]).unwrap_err().0;
    let consumers = |v: Value| AdmissionConfig {
        consumers: Some(v),
        key_auth: Some(json!({"keys": ["k"]})),
        ..AdmissionConfig::default()
    };
    assert_eq!(
        err(consumers(json!([{"name": "a", "credential": "k"}, {"name": "b", "credential": "k"}]))),
        "consumers[1].credential"
    );
    assert_eq!(err(consumers(json!([{"name": "a", "credential": "k"}, {"name": "a"}]))), "consumers[1].name");
    assert_eq!(
        err(consumers(json!([{"name": "a", "upstreamCredentials": {"nope": "x"}}]))),
        "consumers[0].upstreamCredentials.nope"
    );
    assert_eq!(err(consumers(json!([{"name": "a", "credential": "a\nb"}]))), "consumers[0].credential");
    let no_place =
        AdmissionConfig { consumers: Some(json!([{"name": "a", "credential": "k"}])), ..AdmissionConfig::default() };
    assert_eq!(err(no_place), "keyAuth");
    let nobody = Admission::default();
    assert_eq!(ServerAuth::compile(Some(json!({})), &nobody).unwrap_err().0, "auth.anonymous");
    let oauth_without_jwt = json!({"anonymous": true, "oauth": {"authorizationServers": ["https://as"]}});
    assert_eq!(ServerAuth::compile(Some(oauth_without_jwt), &a).unwrap_err().0, "auth.oauth");
    assert!(ServerAuth::compile(Some(json!({"anonymos": true})), &a).unwrap_err().1.contains("anonymos"));
}
