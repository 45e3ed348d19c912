//! The socket API end to end: a real server and client over a Unix socket
//! in a temporary directory, the real validator, the in-memory enforcer.
mod daemon_support;

use std::net::IpAddr;

use daemon_support::*;
use filter::{
    api::{
        client::{Client, ClientError},
        ApiError, ApplyParams, ApplyResult, CountersParams, CountersResult, DetachResult,
        ErrorCode, ExplainParams, ExplainResult, FlowsParams, GetResult, Method, NoParams,
        RollbackParams, StatusResult, TrackedConnection, VersionResult,
    },
    daemon::{
        auth::{Access, PeerIdentity},
        server::handle,
        ReasonCounter, ServerConfig,
    },
    ruleset::Direction,
    verdict::{Packet, Reason, Verdict},
};
use serde_json::Value;

fn apply(document: String) -> ApplyParams {
    ApplyParams {
        document,
        dry_run: false,
        if_generation: None,
    }
}

fn code(r: Result<Value, ClientError>) -> Option<ErrorCode> {
    match r {
        Err(ClientError::Api(ApiError { code, .. })) => Some(code),
        _ => None,
    }
}

#[tokio::test]
async fn apply_get_status_counters() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    let mut c = d.client().await?;

    assert_eq!(
        code(c.call(Method::Get, NoParams {}).await),
        Some(ErrorCode::NoGeneration)
    );

    let r: ApplyResult = c.call_as(Method::Apply, apply(base())).await?;
    assert_eq!((r.generation, r.previous, r.dry_run), (1, None, false));
    assert_eq!(r.changes.enis.added, ["eni-app1", "eni-web1"]);
    assert!(r.changes.rules.added.contains(&"sg-web/http".to_owned()));
    assert_eq!(
        d.enforcer.dataplane().log,
        ["attach tap-app1", "attach tap-web1", "activate 1"]
    );

    // `get` gives the document back byte for byte.
    let g: GetResult = c.call_as(Method::Get, NoParams {}).await?;
    assert_eq!((g.generation, g.document.as_str()), (1, base().as_str()));

    let s: StatusResult = c.call_as(Method::Status, NoParams {}).await?;
    assert_eq!(s.generation, Some(1));
    let enis: Vec<(&str, &str, Vec<String>)> = s
        .enis
        .iter()
        .map(|e| (e.id.as_str(), e.interface.as_str(), e.hooks.clone()))
        .collect();
    let hooks = vec!["xdp".to_owned(), "tc".to_owned()];
    assert_eq!(
        enis,
        [
            ("eni-web1", "tap-web1", hooks.clone()),
            ("eni-app1", "tap-app1", hooks)
        ]
    );
    assert!(s.stats.iter().any(|c| c.name == "drop_nacl" && c.drop));
    assert_eq!(s.conntrack.size, 262_144);

    let http = Reason::Rule {
        id: "sg-web/http".into(),
    };
    d.enforcer.dataplane().hits.insert(
        http.clone(),
        ReasonCounter {
            reason: http,
            packets: 10,
            bytes: 1200,
            last_hit: Some(1_700_000_000),
        },
    );
    let all: CountersResult = c
        .call_as(Method::Counters, CountersParams::default())
        .await?;
    let names: Vec<&str> = all.rules.iter().map(|r| r.rule.as_str()).collect();
    for name in [
        "default-deny",
        "default-accept",
        "inner-accept:sg-web",
        "sg-web/http",
        "sg-app/out",
        "nacl:acl-web/web",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(all
        .rules
        .iter()
        .any(|r| r.rule == "sg-web/http" && r.packets == 10 && r.bytes == 1200));
    // Only what can decide for eni-app1: its group, its NACL, the defaults.
    let app: CountersResult = c
        .call_as(
            Method::Counters,
            CountersParams {
                eni: Some("eni-app1".into()),
            },
        )
        .await?;
    let names: Vec<&str> = app.rules.iter().map(|r| r.rule.as_str()).collect();
    assert!(
        names.contains(&"sg-app/out")
            && names.contains(&"default-deny")
            && names.contains(&"nacl:acl-web/web"),
        "{names:?}"
    );
    assert!(!names.contains(&"sg-web/http"), "{names:?}");
    assert_eq!(
        code(
            c.call(
                Method::Counters,
                CountersParams {
                    eni: Some("eni-nope".into())
                }
            )
            .await
        ),
        Some(ErrorCode::InvalidParams)
    );
    Ok(())
}

#[tokio::test]
async fn rejected_document_changes_nothing() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    let mut c = d.client().await?;
    c.call(Method::Apply, apply(base())).await?;
    let log_before = d.enforcer.dataplane().log.clone();

    let Err(ClientError::Api(e)) = c.call(Method::Apply, apply(broken())).await else {
        return Err("a broken document was accepted".into());
    };
    assert_eq!(e.code, ErrorCode::InvalidDocument);
    // Every error, each with its JSON path.
    assert_eq!(e.details.len(), 3, "{:?}", e.details);
    assert!(e
        .details
        .iter()
        .any(|l| l.starts_with("security_groups[0].rules[3].source_cidr_ip: \"10.0.0.1/24\"")));
    assert!(e.details.iter().any(|l| l.contains("priority")));
    assert!(e.details.iter().any(|l| l.contains("vsw-nowhere")));

    // Malformed JSON: one error with line and column.
    let Err(ClientError::Api(e)) = c
        .call(Method::Apply, apply("{\n  \"vpcs\": [\n".into()))
        .await
    else {
        return Err("malformed JSON was accepted".into());
    };
    assert_eq!(e.code, ErrorCode::InvalidDocument);
    assert!(
        e.details.iter().any(|l| l.contains("line")),
        "{:?}",
        e.details
    );

    let g: GetResult = c.call_as(Method::Get, NoParams {}).await?;
    assert_eq!((g.generation, g.document), (1, base()));
    assert_eq!(d.enforcer.dataplane().log, log_before);
    assert_eq!(d.daemon_generations()?, [1]);
    Ok(())
}

#[tokio::test]
async fn dry_run_enforces_nothing() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    let mut c = d.client().await?;
    c.call(Method::Apply, apply(base())).await?;
    let r: ApplyResult = c
        .call_as(
            Method::Apply,
            ApplyParams {
                document: grown(),
                dry_run: true,
                if_generation: None,
            },
        )
        .await?;
    assert_eq!((r.generation, r.previous, r.dry_run), (2, Some(1), true));
    assert_eq!(r.changes.rules.added, ["sg-web/https"]);
    assert_eq!(r.changes.enis.added, ["eni-web2"]);
    assert_eq!(r.changes.groups.changed, ["sg-web"]);
    assert!(r.changes.rules.removed.is_empty() && r.changes.enis.removed.is_empty());

    let g: GetResult = c.call_as(Method::Get, NoParams {}).await?;
    assert_eq!(g.generation, 1);
    assert!(!d.enforcer.dataplane().attached.contains("tap-web2"));
    assert_eq!(d.daemon_generations()?, [1]);
    Ok(())
}

#[tokio::test]
async fn apply_and_rollback_make_new_generations() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    let mut c = d.client().await?;
    c.call(Method::Apply, apply(base())).await?;
    let r: ApplyResult = c.call_as(Method::Apply, apply(grown())).await?;
    assert_eq!(r.generation, 2);
    assert!(d.enforcer.dataplane().attached.contains("tap-web2"));

    // Back to the one before: generation 1's document as generation 3.
    let r: ApplyResult = c
        .call_as(Method::Rollback, RollbackParams::default())
        .await?;
    assert_eq!(
        (r.generation, r.previous, r.rolled_back_to),
        (3, Some(2), Some(1))
    );
    assert_eq!(r.changes.enis.removed, ["eni-web2"]);
    assert_eq!(r.changes.rules.removed, ["sg-web/https"]);
    assert!(!d.enforcer.dataplane().attached.contains("tap-web2"));
    assert!(d
        .enforcer
        .dataplane()
        .log
        .ends_with(&["activate 3".to_owned(), "detach tap-web2".to_owned()]));
    let g: GetResult = c.call_as(Method::Get, NoParams {}).await?;
    assert_eq!((g.generation, g.document), (3, base()));

    let r: ApplyResult = c
        .call_as(Method::Rollback, RollbackParams { to: Some(2) })
        .await?;
    assert_eq!((r.generation, r.rolled_back_to), (4, Some(2)));
    let g: GetResult = c.call_as(Method::Get, NoParams {}).await?;
    assert_eq!(g.document, grown());

    assert_eq!(
        code(
            c.call(Method::Rollback, RollbackParams { to: Some(99) })
                .await
        ),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(d.daemon_generations()?, [1, 2, 3, 4]);
    Ok(())
}

fn explain(proto: &str, src: &str, dst: &str) -> ExplainParams {
    ExplainParams {
        eni: "eni-web1".into(),
        direction: Direction::Ingress,
        proto: proto.into(),
        src: src.into(),
        dst: dst.into(),
        icmp_type: None,
    }
}

#[tokio::test]
async fn explain_traces_and_tracked_connections() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    let mut c = d.client().await?;
    assert_eq!(
        code(
            c.call(
                Method::Explain,
                explain("tcp", "198.51.100.7:40000", "10.0.1.10:80")
            )
            .await
        ),
        Some(ErrorCode::NoGeneration)
    );
    c.call(Method::Apply, apply(base())).await?;

    let r: ExplainResult = c
        .call_as(
            Method::Explain,
            explain("tcp", "198.51.100.7:40000", "10.0.1.10:80"),
        )
        .await?;
    assert_eq!(
        (r.generation, r.interface.as_str(), r.decision.verdict),
        (1, "tap-web1", Verdict::Accept)
    );
    assert_eq!(
        r.decision.reason,
        Reason::Rule {
            id: "sg-web/http".into()
        }
    );
    assert_eq!(r.reason, "sg-web/http");
    assert!(r
        .trace
        .iter()
        .any(|t| t.reason.to_string() == "sg-web/http" && t.lost.is_none()));
    assert_eq!(
        (r.tracked, r.admitted_by.as_deref()),
        (None, Some("sg-web/http"))
    );

    let r: ExplainResult = c
        .call_as(
            Method::Explain,
            explain("tcp", "198.51.100.7:40000", "10.0.1.10:23"),
        )
        .await?;
    assert_eq!(
        (r.decision.verdict, r.reason.as_str(), r.admitted_by),
        (Verdict::Drop, "sg-web/no-telnet", None)
    );

    // A connection the data plane tracks is admitted by the rule that
    // admitted it, even where the rules would now drop a first packet.
    let ip = |s: &str| s.parse::<IpAddr>();
    d.enforcer.dataplane().connections.push((
        "tap-web1".into(),
        Packet {
            src: ip("10.0.1.10")?,
            dst: ip("198.51.100.7")?,
            proto: 6,
            src_port: 8080,
            dst_port: 40000,
            icmp_type: 0,
        },
        TrackedConnection {
            state: "tcp_established".into(),
            rule: "sg-web/http".into(),
            generation: 1,
            packets: 12,
            bytes: 3400,
        },
    ));
    let r: ExplainResult = c
        .call_as(
            Method::Explain,
            explain("tcp", "198.51.100.7:40000", "10.0.1.10:8080"),
        )
        .await?;
    assert_eq!(
        (r.decision.verdict, r.reason.as_str()),
        (Verdict::Drop, "default-deny")
    );
    assert_eq!(
        r.tracked.as_ref().map(|t| t.rule.as_str()),
        Some("sg-web/http")
    );
    assert_eq!(r.admitted_by.as_deref(), Some("sg-web/http"));

    // IPv6 with a port: the NACL has IPv4 entries only, so it drops.
    let r: ExplainResult = c
        .call_as(
            Method::Explain,
            explain("tcp", "[2001:db8::7]:40000", "[fd00:1::10]:80"),
        )
        .await?;
    assert_eq!(
        (r.decision.verdict, r.reason.as_str()),
        (Verdict::Drop, "nacl:acl-web/default-deny")
    );

    let mut unknown = explain("tcp", "198.51.100.7:1", "10.0.1.10:80");
    unknown.eni = "eni-nope".into();
    assert_eq!(
        code(c.call(Method::Explain, unknown).await),
        Some(ErrorCode::InvalidParams)
    );
    assert_eq!(
        code(
            c.call(
                Method::Explain,
                explain("tcp", "198.51.100.7", "10.0.1.10:80")
            )
            .await
        ),
        Some(ErrorCode::InvalidParams)
    );
    Ok(())
}

#[tokio::test]
async fn bad_requests_get_errors_and_the_connection_goes_on() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let server = ServerConfig {
        max_request_bytes: 64 * 1024,
        ..ServerConfig::default()
    };
    let d = TestDaemon::start_with(Dirs::new(tmp.path()), Default::default(), server, None).await?;
    let mut c = d.client().await?;
    let expect = |r: &filter::api::Response, code: ErrorCode| {
        r.error.as_ref().map(|e| e.code) == Some(code) && !r.ok
    };

    let r = c.send_raw(b"this is not json").await?;
    assert!(expect(&r, ErrorCode::BadRequest), "{r:?}");
    let r = c.send_raw(br#"[1, 2, 3]"#).await?;
    assert!(expect(&r, ErrorCode::BadRequest), "{r:?}");
    let r = c
        .send_raw(br#"{"v":1,"id":7,"method":"frobnicate"}"#)
        .await?;
    assert!(expect(&r, ErrorCode::UnknownMethod) && r.id == 7, "{r:?}");
    let r = c.send_raw(br#"{"v":2,"id":"x","method":"status"}"#).await?;
    assert!(
        expect(&r, ErrorCode::UnsupportedVersion) && r.id == "x",
        "{r:?}"
    );
    let r = c
        .send_raw(br#"{"v":1,"id":8,"method":"apply","params":{"doc":"{}"}}"#)
        .await?;
    assert!(expect(&r, ErrorCode::InvalidParams), "{r:?}");
    let r = c
        .send_raw(br#"{"v":1,"id":9,"method":"status","params":{"verbose":true}}"#)
        .await?;
    assert!(expect(&r, ErrorCode::InvalidParams), "{r:?}");

    // Over the size limit, then a good request on the same connection.
    let mut huge = br#"{"v":1,"id":10,"method":"apply","params":{"document":""#.to_vec();
    huge.extend(std::iter::repeat_n(b' ', 100 * 1024));
    huge.extend(br#""}}"#);
    let r = c.send_raw(&huge).await?;
    assert!(expect(&r, ErrorCode::RequestTooLarge), "{r:?}");

    // Blank lines are not requests and get no answer.
    let r = c
        .send_raw(b"\n \n{\"v\":1,\"id\":11,\"method\":\"version\"}")
        .await?;
    assert!(r.ok && r.id == 11, "{r:?}");
    let v: VersionResult = c.call_as(Method::Version, NoParams {}).await?;
    assert_eq!(v.protocol, 1);
    assert!(v.methods.contains(&"explain".to_owned()));
    let s: StatusResult = c.call_as(Method::Status, NoParams {}).await?;
    assert_eq!(s.generation, None);
    Ok(())
}

#[tokio::test]
async fn flows_without_a_flow_log_is_not_implemented() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    let mut c = d.client().await?;
    assert_eq!(
        code(c.call(Method::Flows, FlowsParams::default()).await),
        Some(ErrorCode::NotImplemented)
    );
    // The connection goes on.
    c.call(Method::Version, NoParams {}).await?;
    Ok(())
}

#[tokio::test]
async fn detach_removes_everything() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    let mut c = d.client().await?;
    c.call(Method::Apply, apply(base())).await?;
    let r: DetachResult = c.call_as(Method::Detach, NoParams {}).await?;
    assert_eq!(
        (r.previous, r.interfaces),
        (Some(1), vec!["tap-app1".to_owned(), "tap-web1".to_owned()])
    );
    assert_eq!(
        code(c.call(Method::Get, NoParams {}).await),
        Some(ErrorCode::NoGeneration)
    );
    let s: StatusResult = c.call_as(Method::Status, NoParams {}).await?;
    assert_eq!((s.generation, s.enis.len()), (None, 0));
    assert!(d.enforcer.dataplane().attached.is_empty());
    assert_eq!(d.enforcer.dataplane().generation, None);
    // A new apply enforces again, with a new number.
    let r: ApplyResult = c.call_as(Method::Apply, apply(base())).await?;
    assert_eq!((r.generation, r.previous), (2, None));
    Ok(())
}

/// SPEC §5: calls that change anything need uid 0 or the socket group.
/// (The tests run as one user, so the peer is made up here.)
#[tokio::test]
async fn non_root_peers_cannot_change_anything() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    let access = Access {
        socket_group: Some(4242),
        daemon_uid: 0,
    };
    let stranger = PeerIdentity {
        uid: 1000,
        gid: 1000,
        groups: vec![100],
        pid: None,
    };
    let member = PeerIdentity {
        groups: vec![100, 4242],
        ..stranger.clone()
    };
    let request = |method: &str, params: Value| {
        serde_json::to_vec(
            &serde_json::json!({"v": 1, "id": 1, "method": method, "params": params}),
        )
    };
    let doc = serde_json::json!({ "document": base() });
    for (method, params) in [
        ("apply", doc.clone()),
        ("rollback", Value::Null),
        ("detach", Value::Null),
    ] {
        let r = handle(&d.daemon, &access, Ok(&stranger), &request(method, params)?).await;
        assert_eq!(
            r.error.map(|e| e.code),
            Some(ErrorCode::PermissionDenied),
            "{method}"
        );
    }
    // Reading is for anyone who can open the socket.
    let r = handle(
        &d.daemon,
        &access,
        Ok(&stranger),
        &request("status", Value::Null)?,
    )
    .await;
    assert!(r.ok, "{r:?}");
    // Unknown credentials: refused.
    let unknown = "no SO_PEERCRED".to_owned();
    let r = handle(
        &d.daemon,
        &access,
        Err(&unknown),
        &request("apply", doc.clone())?,
    )
    .await;
    assert_eq!(r.error.map(|e| e.code), Some(ErrorCode::PermissionDenied));
    assert_eq!(d.enforcer.dataplane().generation, None);
    // A member of the socket group may.
    let r = handle(&d.daemon, &access, Ok(&member), &request("apply", doc)?).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(d.enforcer.dataplane().generation, Some(1));
    Ok(())
}

#[tokio::test]
async fn a_raw_client_sees_the_documented_envelope() -> TestResult {
    let (_tmp, d) = TestDaemon::fresh().await?;
    let stream = tokio::net::UnixStream::connect(d.dirs.socket()).await?;
    let mut c = Client::from_stream(stream);
    let r = c
        .send_raw(br#"{"v":1,"id":"abc","method":"version","params":{}}"#)
        .await?;
    let line = serde_json::to_value(&r)?;
    assert_eq!(line["v"], 1);
    assert_eq!(line["id"], "abc");
    assert_eq!(line["ok"], true);
    assert_eq!(line["result"]["protocol"], 1);
    assert!(line.get("error").is_none());
    Ok(())
}
