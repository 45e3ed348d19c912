//! The scenario suite (issue 7): the cases a cloud user knows, each a rule-set
//! document plus connections that must work and connections that must fail,
//! checked with real TCP, UDP and ICMP over IPv4 and IPv6 through the real
//! `filterd` and `filterctl`.
//!
//! Every case builds its own small cloud ([`filter_tests::cloud`]): a host
//! namespace with a bridge for the vSwitch fabric, instances behind guarded
//! tap ports and outside hosts, all with echo servers on a fixed set of
//! ports ([`TCP_PORTS`], [`UDP_PORTS`]), so that a connection that fails
//! fails because the filter dropped it, not because nothing listened (a
//! reset or an ICMP error never counts as "failed as expected"). The
//! daemon runs in the host namespace and guards the instances' ports.
//! Where the reason matters, `filterctl explain` must name it too.
//!
//! | net | IPv4 | IPv6 |
//! |---|---|---|
//! | VPC `vpc-1` | `192.0.2.0/24` | `fd00:1::/48` |
//! | vSwitch `vsw-a` | `192.0.2.0/26` (`.N`) | `fd00:1:0:1::/64` (`::N`) |
//! | vSwitch `vsw-b` | `192.0.2.64/26` (`.64+N`) | `fd00:1:0:2::/64` (`::64+N`) |
//! | `admin`, `admin2` | `203.0.113.7`, `.8` /24 | `2001:db8:ad::7`, `::8` /64 |
//! | `client`, `other`, `web3` | `198.51.100.20`, `.30`, `.40` /24 | `2001:db8:c::20`, `::30`, `::40` /64 |
//!
//! Each case also checks the flow-log records of its traffic (case 11,
//! SPEC §7) when the daemon provides flow logs; `case11_flow_logs` checks
//! the record format itself. The last test runs the demo
//! (`cargo xtask demo --no-follow`'s binary) and checks it leaves nothing.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use filter::{api::TraceStep, ruleset::Direction, verdict::Verdict};
use filter_tests::{
    cloud::{Cloud, Family, Node, Vpc},
    daemon::{DaemonGuard, DaemonOptions},
    id::TestId,
    traffic::{explain, CheckResult, Checks, Conversation, Expect, Explained, Service},
};
use serde_json::{json, Value};

/// Every node serves these TCP ports ...
const TCP_PORTS: &[u16] = &[22, 80, 443, 873, 3306, 5000, 6379, 8080];
/// ... and these UDP ports.
const UDP_PORTS: &[u16] = &[53, 443, 514, 5000];

const HTTP: Service = Service::Tcp(80);
const HTTPS: Service = Service::Tcp(443);
const SSH: Service = Service::Tcp(22);
const MYSQL: Service = Service::Tcp(3306);
const PING: Service = Service::Ping;

const BOTH: &[Family] = &Family::BOTH;

// ---------------------------------------------------------------------------
// The cases.

/// Case 1: a web service: TCP 80 and 443 from anywhere, nothing else.
#[test]
fn case01_web_service() -> Result<()> {
    let case = Case::new(
        "case01_web",
        &[("web", "a", 10), ("app", "b", 10)],
        &["client", "other"],
    )?;
    let (web, app, client, other) = case.nodes(["web", "app", "client", "other"])?;
    let doc = case.document(
        json!([
            group(
                "sg-web",
                "basic",
                &[
                    &accept_in("http", "tcp", "80/80", ANY),
                    &accept_in("https", "tcp", "443/443", ANY),
                ]
            ),
            group("sg-app", "basic", &[]),
        ]),
        json!([]),
        &[web.eni(&["sg-web"]), app.eni(&["sg-app"])],
    );
    case.apply(&doc)?;

    let mut checks = Checks::new();
    checks
        .works(&client, &web, HTTP)
        .works(&client, &web, HTTPS)
        .works(&other, &web, HTTPS)
        .works(&app, &web, HTTP)
        .fails(&client, &web, SSH)
        .fails(&client, &web, Service::Tcp(8080))
        .fails(&client, &web, Service::Udp(443))
        .fails(&client, &web, Service::Udp(53))
        .fails(&client, &web, PING)
        .fails(&app, &web, SSH);
    let results = checks.assert("case 1: web service")?;
    case.expect_reason(&client, &web, HTTP, "sg-web/http")?;
    case.expect_reason(&client, &web, SSH, "default-deny")?;
    case.expect_flows(&results)?;
    case.finish()
}

/// Case 2: remote access: SSH only from one admin address.
#[test]
fn case02_ssh_from_admin_only() -> Result<()> {
    let case = Case::new(
        "case02_ssh",
        &[("srv", "a", 10)],
        &["admin", "admin2", "client"],
    )?;
    let (srv, admin, admin2, client) = case.nodes(["srv", "admin", "admin2", "client"])?;
    let doc = case.document(
        json!([group(
            "sg-ssh",
            "basic",
            &[&accept_in(
                "ssh-admin",
                "tcp",
                "22/22",
                &["203.0.113.7/32", "2001:db8:ad::7/128"]
            ),]
        )]),
        json!([]),
        &[srv.eni(&["sg-ssh"])],
    );
    case.apply(&doc)?;

    let mut checks = Checks::new();
    checks
        .works(&admin, &srv, SSH)
        // The admin's neighbour on the same network is not the admin.
        .fails(&admin2, &srv, SSH)
        .fails(&client, &srv, SSH)
        .fails(&admin, &srv, HTTP)
        .fails(&admin, &srv, MYSQL)
        .fails(&admin, &srv, Service::Udp(53))
        .fails(&admin, &srv, PING);
    let results = checks.assert("case 2: SSH from the admin only")?;
    case.expect_reason(&admin, &srv, SSH, "sg-ssh/ssh-admin")?;
    case.expect_reason_v6(&admin, &srv, SSH, "sg-ssh/ssh-admin6")?;
    case.expect_reason(&admin2, &srv, SSH, "default-deny")?;
    case.expect_flows(&results)?;
    case.finish()
}

/// Case 3: a database: 3306 only from members of the web group (a group
/// reference: local ENIs and `member_ips` elsewhere), with a priority-100
/// drop for everyone else.
#[test]
fn case03_database_from_web_group() -> Result<()> {
    let case = Case::new(
        "case03_db",
        &[
            ("web1", "a", 10),
            ("web2", "a", 11),
            ("app", "a", 12),
            ("db", "b", 10),
        ],
        &["client", "web3"],
    )?;
    let (web1, web2, app, db) = case.nodes(["web1", "web2", "app", "db"])?;
    let (client, web3) = case.nodes2(["client", "web3"])?;
    let mut sg_web = group("sg-web", "basic", &[]);
    // web3 is a web server on another host: a member by address.
    sg_web["member_ips"] = json!([web3.v4.to_string(), web3.v6.to_string()]);
    let doc = case.document(
        json!([
            sg_web,
            group("sg-app", "basic", &[]),
            group(
                "sg-db",
                "basic",
                &[
                    &accept_in("mysql-web", "tcp", "3306/3306", &["group:sg-web"]),
                    &with_priority(drop_in("mysql-others", "tcp", "3306/3306", ANY), 100),
                ]
            ),
        ]),
        json!([]),
        &[
            web1.eni(&["sg-web"]),
            web2.eni(&["sg-web"]),
            app.eni(&["sg-app"]),
            db.eni(&["sg-db"]),
        ],
    );
    case.apply(&doc)?;

    let mut checks = Checks::new();
    checks
        .works(&web1, &db, MYSQL)
        .works(&web2, &db, MYSQL)
        .works(&web3, &db, MYSQL)
        .fails(&app, &db, MYSQL)
        .fails(&client, &db, MYSQL)
        .fails(&web1, &db, SSH)
        .fails(&web1, &db, PING);
    let results = checks.assert("case 3: database from the web group only")?;
    case.expect_reason(&web1, &db, MYSQL, "sg-db/mysql-web")?;
    case.expect_reason(&web3, &db, MYSQL, "sg-db/mysql-web")?;
    // Not default-deny: the explicit priority-100 drop names itself.
    case.expect_reason(&app, &db, MYSQL, "sg-db/mysql-others")?;
    case.expect_reason_v6(&client, &db, MYSQL, "sg-db/mysql-others6")?;
    case.expect_reason(&web1, &db, SSH, "default-deny")?;
    case.expect_flows(&results)?;
    case.finish()
}

/// Case 4: ICMP allowed from one client.
#[test]
fn case04_icmp_from_one_client() -> Result<()> {
    let case = Case::new("case04_icmp", &[("srv", "a", 10)], &["client", "other"])?;
    let (srv, client, other) = case.nodes3(["srv", "client", "other"])?;
    let doc = case.document(
        json!([group(
            "sg-ping",
            "basic",
            &[
                &accept_in("ping", "icmp", "-1/-1", &["198.51.100.20/32"]),
                &accept_in("ping6", "icmpv6", "-1/-1", &["2001:db8:c::20/128"]),
            ]
        )]),
        json!([]),
        &[srv.eni(&["sg-ping"])],
    );
    case.apply(&doc)?;

    let mut checks = Checks::new();
    checks
        .works(&client, &srv, PING)
        .fails(&other, &srv, PING)
        .fails(&client, &srv, HTTP)
        .fails(&client, &srv, Service::Udp(53));
    let results = checks.assert("case 4: ICMP from one client")?;
    case.expect_reason(&client, &srv, PING, "sg-ping/ping")?;
    case.expect_reason_v6(&client, &srv, PING, "sg-ping/ping6")?;
    case.expect_reason(&other, &srv, PING, "default-deny")?;
    case.expect_flows(&results)?;
    case.finish()
}

/// Case 5: internal communication between two groups by group reference: the
/// app tier calls the cache, the cache calls back.
#[test]
fn case05_two_groups_by_reference() -> Result<()> {
    let case = Case::new(
        "case05_groups",
        &[("app1", "a", 10), ("app2", "a", 11), ("cache", "b", 10)],
        &["client"],
    )?;
    let (app1, app2, cache, client) = case.nodes(["app1", "app2", "cache", "client"])?;
    let mut sg_app = group(
        "sg-app",
        "basic",
        &[&accept_in(
            "from-cache",
            "tcp",
            "8080/8080",
            &["group:sg-cache"],
        )],
    );
    sg_app["inner_access_policy"] = json!("drop");
    let doc = case.document(
        json!([
            sg_app,
            group(
                "sg-cache",
                "basic",
                &[&accept_in(
                    "from-app",
                    "tcp",
                    "6379/6379",
                    &["group:sg-app"]
                ),]
            ),
        ]),
        json!([]),
        &[
            app1.eni(&["sg-app"]),
            app2.eni(&["sg-app"]),
            cache.eni(&["sg-cache"]),
        ],
    );
    case.apply(&doc)?;

    let redis = Service::Tcp(6379);
    let callback = Service::Tcp(8080);
    let mut checks = Checks::new();
    checks
        .works(&app1, &cache, redis)
        .works(&app2, &cache, redis)
        .works(&cache, &app1, callback)
        .works(&cache, &app2, callback)
        .fails(&cache, &app1, redis)
        .fails(&app1, &cache, callback)
        .fails(&client, &cache, redis)
        .fails(&client, &app1, callback)
        // Same group, inner access `drop`: no free pass.
        .fails(&app1, &app2, callback);
    let results = checks.assert("case 5: two groups by reference")?;
    case.expect_reason(&app1, &cache, redis, "sg-cache/from-app")?;
    case.expect_reason(&cache, &app2, callback, "sg-app/from-cache")?;
    case.expect_reason(&app1, &app2, callback, "default-deny")?;
    case.expect_flows(&results)?;
    case.finish()
}

/// Case 6: an outbound whitelist: drop all at priority 2, accept two
/// destinations at priority 1.
#[test]
fn case06_outbound_whitelist() -> Result<()> {
    let case = Case::new(
        "case06_outbound",
        &[("srv", "a", 10), ("peer", "a", 11)],
        &["client", "admin", "other"],
    )?;
    let (srv, peer, client, admin) = case.nodes(["srv", "peer", "client", "admin"])?;
    let other = case.node("other")?;
    let doc = case.document(
        json!([
            group(
                "sg-out",
                "basic",
                &[
                    &with_priority(drop_out("deny-all", "all", "-1/-1", ANY), 2),
                    &accept_out(
                        "mirror",
                        "tcp",
                        "443/443",
                        &["198.51.100.20/32", "2001:db8:c::20/128"]
                    ),
                    &accept_out(
                        "admin",
                        "all",
                        "-1/-1",
                        &["203.0.113.7/32", "2001:db8:ad::7/128"]
                    ),
                ]
            ),
            group(
                "sg-peer",
                "basic",
                &[&accept_in("http", "tcp", "80/80", ANY)]
            ),
        ]),
        json!([]),
        &[srv.eni(&["sg-out"]), peer.eni(&["sg-peer"])],
    );
    case.apply(&doc)?;

    let mut checks = Checks::new();
    checks
        .works(&srv, &client, HTTPS)
        .works(&srv, &admin, Service::Tcp(873))
        .works(&srv, &admin, Service::Udp(514))
        .works(&srv, &admin, PING)
        .fails(&srv, &client, HTTP)
        .fails(&srv, &client, Service::Udp(443))
        .fails(&srv, &client, PING)
        .fails(&srv, &other, HTTPS)
        // Inside the VPC too: "all" means all.
        .fails(&srv, &peer, HTTP)
        // The whitelist is about srv's egress; the peer itself is open.
        .works(&client, &peer, HTTP);
    let results = checks.assert("case 6: outbound whitelist")?;
    case.expect_reason(&srv, &client, HTTPS, "sg-out/mirror")?;
    case.expect_reason_v6(&srv, &admin, PING, "sg-out/admin6")?;
    case.expect_reason(&srv, &client, HTTP, "sg-out/deny-all")?;
    case.expect_reason_v6(&srv, &other, HTTPS, "sg-out/deny-all6")?;
    case.expect_flows(&results)?;
    case.finish()
}

/// Case 7: basic vs advanced groups: intra-group traffic, the outbound default,
/// and the inner access policy switched at run time.
#[test]
fn case07_basic_vs_advanced() -> Result<()> {
    let case = Case::new(
        "case07_types",
        &[
            ("b1", "a", 10),
            ("b2", "b", 11),
            ("a1", "a", 20),
            ("a2", "b", 20),
        ],
        &["client"],
    )?;
    let (b1, b2, a1, a2) = case.nodes(["b1", "b2", "a1", "a2"])?;
    let client = case.node("client")?;
    let doc_with = |inner: &str| {
        let mut basic = group("sg-basic", "basic", &[]);
        basic["inner_access_policy"] = json!(inner);
        case.document(
            json!([
                basic,
                // Egress open inside the VPC, so a1 → a2 is decided by a2's
                // ingress: the isolation of an advanced group.
                group(
                    "sg-adv",
                    "advanced",
                    &[&accept_out(
                        "vpc",
                        "all",
                        "-1/-1",
                        &["192.0.2.0/24", "fd00:1::/48"]
                    ),]
                ),
            ]),
            json!([]),
            &[
                b1.eni(&["sg-basic"]),
                b2.eni(&["sg-basic"]),
                a1.eni(&["sg-adv"]),
                a2.eni(&["sg-adv"]),
            ],
        )
    };
    let tcp5000 = Service::Tcp(5000);
    let udp5000 = Service::Udp(5000);

    case.apply(&doc_with("accept"))?;
    let mut checks = Checks::new();
    checks
        // Basic, inner access accept: members talk freely, no rule needed.
        .works(&b1, &b2, tcp5000)
        .works(&b2, &b1, udp5000)
        .works(&b1, &b2, PING)
        // Basic: outbound is open by default.
        .works(&b1, &client, HTTP)
        // Advanced: members are isolated ...
        .fails(&a1, &a2, tcp5000)
        .fails(&a1, &a2, PING)
        // ... and outbound is closed by default.
        .fails(&a1, &client, HTTP)
        // Different groups.
        .fails(&b1, &a1, tcp5000);
    let mut results = checks.assert("case 7: basic and advanced, inner access accept")?;
    case.expect_reason(&b1, &b2, tcp5000, "inner-accept:sg-basic")?;
    case.expect_reason(&b1, &client, HTTP, "default-accept")?;
    case.expect_reason(&a1, &a2, tcp5000, "default-deny")?;
    case.expect_reason(&a1, &client, HTTP, "default-deny")?;

    // An advanced group cannot be made open: rejected, nothing changes.
    let mut bad = doc_with("accept");
    bad["security_groups"][1]["inner_access_policy"] = json!("accept");
    let path = case
        .daemon
        .write_file("advanced-accept", &bad.to_string())?;
    let (error, _) = case
        .daemon
        .ctl_json_err(&["apply", &path.to_string_lossy()])?;
    ensure!(
        error["code"] == "invalid_document",
        "an advanced group with inner access accept was not rejected: {error}"
    );

    // Switch the basic group's inner access policy at run time.
    case.apply(&doc_with("drop"))?;
    let mut checks = Checks::new();
    checks
        .fails(&b1, &b2, tcp5000)
        .fails(&b2, &b1, udp5000)
        .fails(&b1, &b2, PING)
        .works(&b1, &client, HTTP);
    results.extend(checks.assert("case 7: inner access switched to drop")?);
    case.expect_reason(&b1, &b2, tcp5000, "default-deny")?;

    case.apply(&doc_with("accept"))?;
    let mut checks = Checks::new();
    checks.works(&b1, &b2, tcp5000).works(&b2, &b1, udp5000);
    results.extend(checks.assert("case 7: inner access back to accept")?);
    case.expect_flows(&results)?;
    case.finish()
}

/// Case 8: a deny at the same priority as an accept, in two different groups of
/// one ENI: the deny wins; a stronger priority beats both.
#[test]
fn case08_deny_wins_a_tie_across_groups() -> Result<()> {
    let case = Case::new(
        "case08_tie",
        &[("srv", "a", 10)],
        &["client", "other", "admin"],
    )?;
    let (srv, client, other, admin) = case.nodes(["srv", "client", "other", "admin"])?;
    let doc = case.document(
        json!([
            group(
                "sg-open",
                "basic",
                &[
                    &with_priority(accept_in("http", "tcp", "80/80", ANY), 5),
                    &with_priority(
                        accept_in(
                            "http-other",
                            "tcp",
                            "80/80",
                            &["198.51.100.30/32", "2001:db8:c::30/128"]
                        ),
                        4,
                    ),
                ]
            ),
            group(
                "sg-block",
                "basic",
                &[&with_priority(
                    drop_in(
                        "block-net",
                        "tcp",
                        "80/80",
                        &["198.51.100.0/24", "2001:db8:c::/64"]
                    ),
                    5,
                ),]
            ),
        ]),
        json!([]),
        &[srv.eni(&["sg-open", "sg-block"])],
    );
    case.apply(&doc)?;

    let mut checks = Checks::new();
    checks
        .fails(&client, &srv, HTTP)
        .works(&other, &srv, HTTP)
        .works(&admin, &srv, HTTP);
    let results = checks.assert("case 8: deny wins a tie across groups")?;
    let tie = case.expect_reason(&client, &srv, HTTP, "sg-block/block-net")?;
    let lost = tie.result.trace.iter().any(|t| {
        matches!(&t.step, TraceStep::Rule { .. })
            && t.reason.to_string() == "sg-open/http"
            && t.lost.is_some()
    });
    ensure!(
        lost,
        "explain does not show sg-open/http losing the tie: {:?}",
        tie.result.trace
    );
    case.expect_reason(&other, &srv, HTTP, "sg-open/http-other")?;
    case.expect_reason(&admin, &srv, HTTP, "sg-open/http")?;
    case.expect_flows(&results)?;
    case.finish()
}

/// Case 9: a stateless network ACL: replies are blocked until an ephemeral-port
/// egress entry is added; traffic inside the vSwitch is not filtered.
#[test]
fn case09_stateless_nacl() -> Result<()> {
    let mut case = Case::new(
        "case09_nacl",
        &[("srv", "a", 10), ("peer", "a", 11)],
        &["client"],
    )?;
    case.cloud.bind_acl("vsw-a", Some("acl-a"))?;
    let (srv, peer, client) = case.nodes3(["srv", "peer", "client"])?;
    let doc_with = |egress: Value| {
        case.document(
            json!([group(
                "sg-web",
                "basic",
                &[&accept_in("http", "tcp", "80/80", ANY)]
            )]),
            json!([{
                "id": "acl-a",
                "ingress": [
                    nacl_in("http", "accept", "tcp", "80/80", "0.0.0.0/0"),
                    nacl_in("http6", "accept", "tcp", "80/80", "::/0"),
                ],
                "egress": egress,
            }]),
            &[srv.eni(&["sg-web"]), peer.eni(&["sg-web"])],
        )
    };

    case.apply(&doc_with(json!([])))?;
    let tcp5000 = Service::Tcp(5000);
    let mut checks = Checks::new();
    checks
        // The SYN gets in; the SYN-ACK is stopped by the ACL.
        .fails(&client, &srv, HTTP)
        // Inside the vSwitch the ACL does not apply, either way.
        .works(&peer, &srv, HTTP)
        .works(&peer, &srv, tcp5000)
        .works(&srv, &peer, PING);
    let mut results = checks.assert("case 9: NACL without an egress entry")?;
    let reply = case.explain_packet(
        &srv,
        Direction::Egress,
        "tcp",
        &format!("{}:80", srv.v4),
        &format!("{}:40000", client.v4),
    )?;
    ensure!(
        reply.reason() == "nacl:acl-a/default-deny" && reply.verdict() == Verdict::Drop,
        "the reply should be dropped by the ACL's default: {reply}"
    );

    case.apply(&doc_with(json!([
        nacl_out("ephemeral", "accept", "tcp", "1024/65535", "0.0.0.0/0"),
        nacl_out("ephemeral6", "accept", "tcp", "1024/65535", "::/0"),
    ])))?;
    let mut checks = Checks::new();
    checks
        .works(&client, &srv, HTTP)
        .works(&peer, &srv, tcp5000)
        // Still only port 80 gets in from outside.
        .fails(&client, &srv, tcp5000)
        .fails(&client, &srv, Service::Udp(53));
    results.extend(checks.assert("case 9: NACL with an ephemeral-port egress entry")?);
    let reply = case.explain_packet(
        &srv,
        Direction::Egress,
        "tcp",
        &format!("{}:80", srv.v4),
        &format!("{}:40000", client.v4),
    )?;
    ensure!(
        reply
            .result
            .trace
            .iter()
            .any(|t| t.reason.to_string() == "nacl:acl-a/ephemeral" && t.lost.is_none()),
        "the reply should pass nacl:acl-a/ephemeral: {reply}"
    );
    case.expect_reason(&client, &srv, tcp5000, "nacl:acl-a/default-deny")?;
    case.expect_flows(&results)?;
    case.finish()
}

/// Case 10: a rule change cuts an established connection (`on_change:
/// revalidate`, the default) and keeps it with `keep`.
#[test]
fn case10_rule_change_and_established_connections() -> Result<()> {
    let case = Case::new("case10_revalidate", &[("srv", "a", 10)], &["client"])?;
    let (srv, client) = (case.node("srv")?, case.node("client")?);
    let doc_with = |port: &str, on_change: &str| {
        let mut doc = case.document(
            json!([group(
                "sg-srv",
                "basic",
                &[&accept_in(
                    "app",
                    "tcp",
                    port,
                    &["198.51.100.20/32", "2001:db8:c::20/128"]
                ),]
            )]),
            json!([]),
            &[srv.eni(&["sg-srv"])],
        );
        doc["conntrack"]["on_change"] = json!(on_change);
        doc
    };
    let open = |label: &str| -> Result<Vec<Conversation>> {
        BOTH.iter()
            .map(|&f| {
                Conversation::open(&client, &srv, f, 5000)
                    .with_context(|| format!("case 10 ({label}): opening {f}"))
            })
            .collect()
    };

    for (on_change, survives) in [("revalidate", false), ("keep", true)] {
        case.apply(&doc_with("5000/5000", on_change))?;
        // Two connections per family: in one the client speaks first after
        // the change, in the other the server does.
        let mut client_first = open(on_change)?;
        let mut server_first = open(on_change)?;
        for c in client_first.iter_mut().chain(server_first.iter_mut()) {
            ensure!(
                c.exchange(Duration::from_secs(2)),
                "{on_change}: no echo before the change"
            );
        }
        // Let delayed ACKs go out under the old rules.
        thread::sleep(Duration::from_millis(300));
        let delay = Duration::from_millis(1500);
        for c in &mut server_first {
            c.request_delayed(delay)?;
        }
        // The rule that admitted them goes away.
        let started = Instant::now();
        case.apply(&doc_with("6000/6000", on_change))?;
        let took = started.elapsed();
        ensure!(
            took < delay,
            "the apply took {took:?}: the servers answered under the old rules; the test cannot \
             tell anything (a very loaded machine?)"
        );
        let wait = if survives {
            Duration::from_secs(6)
        } else {
            Duration::from_millis(1500)
        };
        let mut wrong = Vec::new();
        for c in &mut server_first {
            // The server's answer leaves after the change: its first packet
            // meets the new rules and cuts the connection. (Whether the
            // answer still trickles out, as a first packet that the egress
            // default lets through, is the rules' business; under `keep` it
            // must come.) What matters is that the client gets no further.
            let answered = c.answered(delay + wait);
            report(on_change, "server speaks first", c, answered);
            if survives && !answered {
                wrong.push(format!(
                    "{} -> {} (the server spoke first)",
                    c.local, c.remote
                ));
            }
        }
        for c in client_first.iter_mut().chain(server_first.iter_mut()) {
            let answered = c.exchange(wait);
            report(on_change, "client speaks", c, answered);
            if answered != survives {
                wrong.push(format!("{} -> {}", c.local, c.remote));
            }
        }
        ensure!(
            wrong.is_empty(),
            "on_change {on_change}: these established connections should {} after the rule \
             that admitted them went away:\n  {}",
            if survives { "keep working" } else { "be cut" },
            wrong.join("\n  ")
        );
        // Either way, a new connection is decided by the new rules.
        let mut checks = Checks::new();
        checks.fails(&client, &srv, Service::Tcp(5000));
        checks.assert(&format!(
            "case 10 ({on_change}): new connections after the change"
        ))?;
        let status = case.daemon.ctl_json(&["status"])?;
        let revalidated = status["stats"]
            .as_array()
            .and_then(|s| s.iter().find(|c| c["name"] == "drop_revalidated"))
            .and_then(|c| c["packets"].as_u64())
            .unwrap_or(0);
        println!("case 10 ({on_change}): drop_revalidated = {revalidated}");
        if !survives {
            ensure!(revalidated > 0, "no packet was counted as drop_revalidated");
        }
    }
    case.finish()
}

fn report(on_change: &str, what: &str, c: &Conversation, answered: bool) {
    println!(
        "case 10 ({on_change}): established {} -> {} after the change, {what}: {}",
        c.local,
        c.remote,
        if answered { "still works" } else { "cut" }
    );
}

/// Case 11: flow-log records (SPEC §7) for allowed and rejected traffic: the
/// fields, the text format, and `flows --follow`. (Every other case also
/// checks the records of its own traffic.)
#[test]
fn case11_flow_logs() -> Result<()> {
    let case = Case::new("case11_flows", &[("web", "a", 10)], &["client"])?;
    let (web, client) = (case.node("web")?, case.node("client")?);
    let doc = case.document(
        json!([group(
            "sg-web",
            "basic",
            &[
                &accept_in("http", "tcp", "80/80", ANY),
                &accept_in("dns", "udp", "53/53", ANY),
            ]
        )]),
        json!([]),
        &[web.eni(&["sg-web"])],
    );
    let generation = case.apply(&doc)?["generation"].as_u64();
    // Follow from before the traffic.
    let mut follow = FollowFlows::start(&case.daemon)?;
    let mut checks = Checks::new();
    checks
        .works(&client, &web, HTTP)
        .works(&client, &web, Service::Udp(53))
        .fails(&client, &web, SSH)
        .fails(&client, &web, PING);
    let results = checks.assert("case 11: traffic")?;
    let records = case.expect_flows(&results)?;

    let eni = web.eni_id().unwrap_or_default();
    for r in &records {
        ensure!(r.u64("version").is_some_and(|v| v >= 1), "version in {r}");
        ensure!(r.u64("start") <= r.u64("end"), "start after end in {r}");
        if r.str("log_status") != Some("OK") {
            continue;
        }
        ensure!(
            r.u64("packets").is_some_and(|p| p >= 1) && r.u64("bytes").is_some_and(|b| b >= 20),
            "no packets or bytes in {r}"
        );
        if r.str("eni_id") == Some(eni.as_str()) {
            ensure!(
                r.str("vswitch_id") == Some("vsw-a") && r.str("vpc_id") == Some("vpc-1"),
                "vSwitch or VPC wrong in {r}"
            );
        }
        ensure!(
            r.u64("generation") == generation,
            "generation {generation:?} expected in {r}"
        );
    }
    let find = |family: Family, port: u16, proto: u8| {
        records.iter().find(|r| {
            r.str("eni_id") == Some(eni.as_str())
                && r.str("direction") == Some("ingress")
                && r.addr("srcaddr") == Some(client.addr(family))
                && r.u64("dstport") == Some(u64::from(port))
                && r.u64("protocol") == Some(u64::from(proto))
        })
    };
    for family in Family::BOTH {
        let http_rule = match family {
            Family::V4 => "sg-web/http",
            Family::V6 => "sg-web/http6",
        };
        let http = find(family, 80, 6)
            .ok_or_else(|| anyhow!("no ingress record for HTTP over {family}"))?;
        ensure!(
            http.str("action") == Some("ACCEPT") && http.str("rule_id") == Some(http_rule),
            "HTTP record: {http}"
        );
        ensure!(
            http.u64("tcp_flags").is_some_and(|f| f & 2 != 0),
            "the HTTP record has no SYN among its flags: {http}"
        );
        let ssh = find(family, 22, 6)
            .ok_or_else(|| anyhow!("no ingress record for SSH over {family}"))?;
        ensure!(
            ssh.str("action") == Some("REJECT") && ssh.str("rule_id") == Some("default-deny"),
            "SSH record: {ssh}"
        );
        let dns = find(family, 53, 17)
            .ok_or_else(|| anyhow!("no ingress record for DNS over {family}"))?;
        ensure!(
            dns.str("action") == Some("ACCEPT") && dns.u64("tcp_flags").is_none(),
            "DNS record: {dns}"
        );
    }

    // The text form: the 19 fields of SPEC §7, `-` where none applies.
    let text = case
        .daemon
        .ctl_ok(&["flows", "--format", "text", "--eni", &eni])?;
    let line = text
        .lines()
        .find(|l| l.contains(" REJECT ") && l.contains(" 22 "))
        .ok_or_else(|| anyhow!("no REJECT line for port 22 in the text form:\n{text}"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    ensure!(fields.len() == 19, "{} fields in {line:?}", fields.len());
    ensure!(
        fields[1] == eni && fields[4] == "ingress" && fields[14] == "REJECT",
        "{line:?}"
    );

    // The follower saw the traffic as it came.
    let seen = follow.wait_for(Duration::from_secs(15), |r| {
        r.str("eni_id") == Some(eni.as_str())
            && r.u64("dstport") == Some(80)
            && r.str("action") == Some("ACCEPT")
    })?;
    ensure!(
        seen,
        "`filterctl flows --follow` streamed no record of the HTTP traffic"
    );
    drop(follow);
    case.finish()
}

/// The demo (`cargo xtask demo --no-follow` runs this binary after
/// building) goes from start to finish and leaves nothing behind.
#[test]
fn demo_runs_and_leaves_nothing_behind() -> Result<()> {
    filter_tests::require_root()?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_filter-demo"));
    cmd.arg("--no-follow");
    let out = filter_tests::daemon::output_within(&mut cmd, Duration::from_secs(300))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    ensure!(out.status.success(), "the demo failed ({})", out.status);
    // Check independently: `... nothing left behind (...) of ft-demo-<pid>-<n>)`.
    let prefix = stdout
        .lines()
        .find(|l| l.contains("nothing left behind"))
        .and_then(|l| l.rsplit(' ').next())
        .map(|p| p.trim_end_matches(')').to_owned())
        .ok_or_else(|| anyhow!("the demo did not confirm its clean-up"))?;
    let stem = prefix
        .strip_prefix("ft-")
        .ok_or_else(|| anyhow!("unexpected demo prefix {prefix:?}"))?;
    let mut left: Vec<String> = filter_tests::id::list_netns()?
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    for dir in [
        std::path::Path::new("/sys/fs/bpf").join(format!("filter-test-{stem}")),
        std::env::temp_dir().join(format!("filter-test-{stem}")),
    ] {
        if dir.exists() {
            left.push(dir.display().to_string());
        }
    }
    ensure!(left.is_empty(), "the demo left behind: {left:?}");
    Ok(())
}

/// Every document in `examples/` is valid and described in its README.
#[test]
fn examples_validate() -> Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let readme = std::fs::read_to_string(dir.join("README.md")).context("examples/README.md")?;
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        seen += 1;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let text = std::fs::read_to_string(&path)?;
        if let Err(errors) = filter::validate::load(&text) {
            bail!("examples/{name} does not validate:\n{errors}");
        }
        ensure!(
            readme.contains(&format!("`{name}`")),
            "examples/README.md does not describe {name}"
        );
    }
    ensure!(seen >= 2, "only {seen} documents in examples/");
    Ok(())
}

// ---------------------------------------------------------------------------
// One case: a cloud, a daemon guarding it, helpers.

/// A case's cloud and daemon. Field order is drop order: the daemon detaches
/// while the interfaces exist, then the cloud goes.
struct Case {
    daemon: DaemonGuard,
    cloud: Cloud,
    id: TestId,
}

impl Case {
    /// Instances `(name, vSwitch "a" | "b", host number)`; outside hosts by
    /// name from the table in the module docs. Starts every node's servers,
    /// checks the cloud routes, starts the daemon.
    fn new(test: &str, instances: &[(&str, &str, u8)], outside: &[&str]) -> Result<Case> {
        let id = TestId::new(test);
        let mut cloud = Cloud::new(
            &id,
            Vpc {
                id: "vpc-1".into(),
                cidr: "192.0.2.0/24".parse()?,
                ipv6_cidr: "fd00:1::/48".parse()?,
            },
        )?;
        cloud.vswitch("vsw-a", "192.0.2.0/26", "fd00:1:0:1::/64")?;
        cloud.vswitch("vsw-b", "192.0.2.64/26", "fd00:1:0:2::/64")?;
        for &(name, vsw, n) in instances {
            let (v4, v6) = match vsw {
                "a" => (format!("192.0.2.{n}"), format!("fd00:1:0:1::{n}")),
                "b" => (
                    format!("192.0.2.{}", 64 + u16::from(n)),
                    format!("fd00:1:0:2::{}", 64 + u16::from(n)),
                ),
                _ => bail!("no vSwitch {vsw:?}"),
            };
            let node = cloud.instance(name, &v4, &v6)?;
            cloud.serve(&node, TCP_PORTS, UDP_PORTS)?;
        }
        let table: BTreeMap<&str, (&str, &str)> = [
            ("admin", ("203.0.113.7/24", "2001:db8:ad::7/64")),
            ("admin2", ("203.0.113.8/24", "2001:db8:ad::8/64")),
            ("client", ("198.51.100.20/24", "2001:db8:c::20/64")),
            ("other", ("198.51.100.30/24", "2001:db8:c::30/64")),
            ("web3", ("198.51.100.40/24", "2001:db8:c::40/64")),
        ]
        .into_iter()
        .collect();
        for &name in outside {
            let (v4, v6) = table
                .get(name)
                .ok_or_else(|| anyhow!("no outside host {name} in the table"))?;
            let node = cloud.outside(name, v4, v6)?;
            cloud.serve(&node, TCP_PORTS, UDP_PORTS)?;
        }
        cloud.check_fabric()?;
        let daemon = DaemonGuard::start_with(
            &id,
            cloud.host(),
            DaemonOptions {
                args: vec!["--capture-window".into(), "1s".into()],
                ..DaemonOptions::default()
            },
        )?;
        Ok(Case { daemon, cloud, id })
    }

    fn node(&self, name: &str) -> Result<Node> {
        self.cloud.node(name).cloned()
    }

    fn nodes(&self, names: [&str; 4]) -> Result<(Node, Node, Node, Node)> {
        Ok((
            self.node(names[0])?,
            self.node(names[1])?,
            self.node(names[2])?,
            self.node(names[3])?,
        ))
    }

    fn nodes3(&self, names: [&str; 3]) -> Result<(Node, Node, Node)> {
        Ok((
            self.node(names[0])?,
            self.node(names[1])?,
            self.node(names[2])?,
        ))
    }

    fn nodes2(&self, names: [&str; 2]) -> Result<(Node, Node)> {
        Ok((self.node(names[0])?, self.node(names[1])?))
    }

    /// A whole document: the cloud's VPC and vSwitches, these groups, ACLs
    /// and ENIs, a one-second capture window.
    fn document(&self, groups: Value, acls: Value, enis: &[Value]) -> Value {
        let (vpcs, vswitches) = self.cloud.network_json();
        json!({
            "vpcs": vpcs,
            "vswitches": vswitches,
            "security_groups": groups,
            "network_acls": acls,
            "enis": enis,
            "conntrack": {},
            "flow_log": {"capture_window_s": 1},
        })
    }

    fn apply(&self, doc: &Value) -> Result<Value> {
        let result = self.daemon.apply(doc)?;
        println!(
            "{}: generation {} enforced",
            self.id.test(),
            result["generation"]
        );
        Ok(result)
    }

    fn explain_packet(
        &self,
        node: &Node,
        direction: Direction,
        proto: &str,
        src: &str,
        dst: &str,
    ) -> Result<Explained> {
        let eni = node
            .eni_id()
            .ok_or_else(|| anyhow!("{node} is not an instance"))?;
        let json = self.daemon.ctl_json(&[
            "explain",
            "--eni",
            &eni,
            "--direction",
            direction.as_str(),
            "--proto",
            proto,
            "--src",
            src,
            "--dst",
            dst,
        ])?;
        Ok(Explained {
            eni,
            direction,
            result: serde_json::from_value(json)?,
        })
    }

    /// `explain` of `from` → `to` over IPv4 must name `reason` at the ENI
    /// that decides (the one that drops, else the destination's).
    fn expect_reason(
        &self,
        from: &Node,
        to: &Node,
        service: Service,
        reason: &str,
    ) -> Result<Explained> {
        self.expect_reason_in(Family::V4, from, to, service, reason)
    }

    fn expect_reason_v6(
        &self,
        from: &Node,
        to: &Node,
        service: Service,
        reason: &str,
    ) -> Result<Explained> {
        self.expect_reason_in(Family::V6, from, to, service, reason)
    }

    fn expect_reason_in(
        &self,
        family: Family,
        from: &Node,
        to: &Node,
        service: Service,
        reason: &str,
    ) -> Result<Explained> {
        let mut checks = Checks::new();
        checks.add(from, to, service, &[family], Expect::Works);
        let check = &checks.list[0];
        let steps = explain(&self.daemon, check)?;
        let deciding = steps
            .iter()
            .find(|e| e.verdict() == Verdict::Drop)
            .or_else(|| steps.iter().find(|e| e.direction == Direction::Ingress))
            .or_else(|| steps.last())
            .cloned()
            .ok_or_else(|| anyhow!("{check}: no ENI on the way to explain"))?;
        let all: Vec<String> = steps.iter().map(ToString::to_string).collect();
        println!("  explain {check}: {}", all.join("; "));
        ensure!(
            deciding.reason() == reason,
            "{check}: explain says {deciding}, expected {reason}"
        );
        Ok(deciding)
    }

    /// Case 11 for this case's traffic: every connection has its records,
    /// ACCEPT at each instance ENI on the way when it worked, a REJECT at
    /// one of them when it failed. Waits for the capture windows to close.
    /// Returns every record of the daemon (for further checks).
    fn expect_flows(&self, results: &[CheckResult]) -> Result<Vec<Flow>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let records = Flow::all(&self.daemon.ctl_ok(&["--json", "flows"])?)?;
            let missing: Vec<String> = results
                .iter()
                .filter_map(|r| flow_expectation_unmet(r, &records))
                .collect();
            if missing.is_empty() {
                println!(
                    "{}: flow logs: {} records cover all {} connections",
                    self.id.test(),
                    records.len(),
                    results.len()
                );
                return Ok(records);
            }
            if Instant::now() > deadline {
                bail!(
                    "flow-log records missing ({} records in all):\n  {}",
                    records.len(),
                    missing.join("\n  ")
                );
            }
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// Stops the daemon, deletes the cloud and checks nothing is left.
    fn finish(self) -> Result<()> {
        let Case { daemon, cloud, id } = self;
        daemon.shutdown()?;
        drop(cloud);
        id.assert_nothing_left()
    }
}

/// Why the records do not account for `r`'s connection, or `None`.
fn flow_expectation_unmet(r: &CheckResult, records: &[Flow]) -> Option<String> {
    let c = &r.check;
    let proto = Some(u64::from(c.service.proto_number(c.family)));
    let port = c.service.port().map(u64::from);
    let enis: Vec<String> = [&c.from, &c.to].iter().filter_map(|n| n.eni_id()).collect();
    if enis.is_empty() {
        return None;
    }
    let request = |f: &Flow| {
        f.addr("srcaddr") == Some(c.src())
            && f.addr("dstaddr") == Some(c.dst())
            && (port.is_none() || f.u64("dstport") == port)
    };
    let reply = |f: &Flow| {
        f.addr("srcaddr") == Some(c.dst())
            && f.addr("dstaddr") == Some(c.src())
            && (port.is_none() || f.u64("srcport") == port)
    };
    if r.worked() {
        let at = |node: &Node, direction: &str| {
            let Some(eni) = node.eni_id() else {
                return true;
            };
            records.iter().any(|f| {
                f.str("eni_id") == Some(eni.as_str())
                    && f.str("direction") == Some(direction)
                    && f.u64("protocol") == proto
                    && f.str("action") == Some("ACCEPT")
                    && request(f)
            })
        };
        if at(&c.from, "egress") && at(&c.to, "ingress") {
            return None;
        }
        return Some(format!(
            "{c}: worked, but an ACCEPT record is missing at {}",
            enis.join(" or ")
        ));
    }
    let rejected = records.iter().any(|f| {
        f.str("eni_id").is_some_and(|e| enis.iter().any(|x| x == e))
            && f.u64("protocol") == proto
            && f.str("action") == Some("REJECT")
            && (request(f) || reply(f))
    });
    (!rejected).then(|| format!("{c}: failed, but no REJECT record at {}", enis.join(" or ")))
}

/// One flow-log record as `filterctl --json` prints it (SPEC §7 keys; JSON
/// `null` where the text form prints `-`).
#[derive(Clone, Debug)]
struct Flow(Value);

impl Flow {
    /// The records of a `flows` result.
    /// The records `filterctl --json flows` printed, one per line.
    fn all(lines: &str) -> Result<Vec<Flow>> {
        lines
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .map(Flow)
                    .with_context(|| format!("not a flow record: {l}"))
            })
            .collect()
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.0[key].as_str()
    }

    fn u64(&self, key: &str) -> Option<u64> {
        self.0[key].as_u64()
    }

    fn addr(&self, key: &str) -> Option<IpAddr> {
        self.str(key)?.parse().ok()
    }
}

impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `filterctl --json flows --follow`, read on a thread.
struct FollowFlows {
    child: std::process::Child,
    rx: std::sync::mpsc::Receiver<Flow>,
}

impl FollowFlows {
    fn start(daemon: &DaemonGuard) -> Result<FollowFlows> {
        use std::io::BufRead as _;
        let mut child = Command::new(&daemon.bins().filterctl)
            .arg("--socket")
            .arg(daemon.socket())
            .args(["flows", "--follow"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting `filterctl flows --follow`")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout from filterctl"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                // One record per line.
                let Ok(records) = Flow::all(&line) else {
                    continue;
                };
                for record in records {
                    if tx.send(record).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(FollowFlows { child, rx })
    }

    /// Whether a record that `pred` likes arrives within `limit`.
    fn wait_for(&mut self, limit: Duration, pred: impl Fn(&Flow) -> bool) -> Result<bool> {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(record) if pred(&record) => return Ok(true),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(false)
    }
}

impl Drop for FollowFlows {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Document pieces.

/// Both families from anywhere.
const ANY: &[&str] = &["0.0.0.0/0", "::/0"];

/// A group of `rules` (each helper returns one rule per peer).
fn group(id: &str, kind: &str, rules: &[&Vec<Value>]) -> Value {
    let rules: Vec<Value> = rules.iter().flat_map(|r| r.iter().cloned()).collect();
    json!({"id": id, "vpc_id": "vpc-1", "type": kind, "rules": rules})
}

/// One rule per peer: a CIDR (IPv4 or IPv6) or `group:<sg>`. The first
/// keeps `id`; the others get `id` plus `6` (an IPv6 CIDR) or their index.
fn rules(
    id: &str,
    direction: &str,
    policy: &str,
    proto: &str,
    ports: &str,
    peers: &[&str],
) -> Vec<Value> {
    let side = if direction == "ingress" {
        "source"
    } else {
        "dest"
    };
    peers
        .iter()
        .enumerate()
        .map(|(i, peer)| {
            let mut rule = json!({
                "direction": direction,
                "policy": policy,
                "priority": 1,
                "ip_protocol": proto,
            });
            if ports != "-1/-1" {
                rule["port_range"] = json!(ports);
            }
            let (key, value, suffix) = if let Some(g) = peer.strip_prefix("group:") {
                (format!("{side}_group_id"), g.to_owned(), i.to_string())
            } else if peer.contains(':') {
                (
                    format!("ipv6_{side}_cidr_ip"),
                    (*peer).to_owned(),
                    "6".to_owned(),
                )
            } else {
                (format!("{side}_cidr_ip"), (*peer).to_owned(), i.to_string())
            };
            rule[key] = json!(value);
            rule["id"] = json!(if i == 0 {
                id.to_owned()
            } else {
                format!("{id}{suffix}")
            });
            rule
        })
        .collect()
}

fn accept_in(id: &str, proto: &str, ports: &str, peers: &[&str]) -> Vec<Value> {
    rules(id, "ingress", "accept", proto, ports, peers)
}

fn drop_in(id: &str, proto: &str, ports: &str, peers: &[&str]) -> Vec<Value> {
    rules(id, "ingress", "drop", proto, ports, peers)
}

fn accept_out(id: &str, proto: &str, ports: &str, peers: &[&str]) -> Vec<Value> {
    rules(id, "egress", "accept", proto, ports, peers)
}

fn drop_out(id: &str, proto: &str, ports: &str, peers: &[&str]) -> Vec<Value> {
    rules(id, "egress", "drop", proto, ports, peers)
}

fn with_priority(mut rules: Vec<Value>, priority: u8) -> Vec<Value> {
    for r in &mut rules {
        r["priority"] = json!(priority);
    }
    rules
}

/// An ingress NACL entry from `source`.
fn nacl_in(name: &str, policy: &str, proto: &str, port: &str, source: &str) -> Value {
    let mut entry =
        json!({"name": name, "policy": policy, "protocol": proto, "source_cidr_ip": source});
    if port != "-1/-1" {
        entry["port"] = json!(port);
    }
    entry
}

/// An egress NACL entry to `destination`.
fn nacl_out(name: &str, policy: &str, proto: &str, port: &str, destination: &str) -> Value {
    let mut entry = json!({
        "name": name, "policy": policy, "protocol": proto, "destination_cidr_ip": destination
    });
    if port != "-1/-1" {
        entry["port"] = json!(port);
    }
    entry
}
