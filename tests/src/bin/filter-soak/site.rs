//! The soak's cloud and the documents it alternates between.
//!
//! ```text
//!  client ─ wan-client ┐          ┌ tap-web  ─ web   (vsw-a)
//!                      │ fabric  ├ tap-app  ─ app   (vsw-a)
//!                      │         ├ tap-db   ─ db    (vsw-b)
//!                      │         └ tap-flap ─ flap  (vsw-b, deleted and re-created)
//! ```
//!
//! Three documents guard the same four ENIs with rules whose verdicts
//! differ on the probed UDP ports (`PORTS`): an open one, a locked one
//! (isolated groups, a drop that wins on priority, egress drops), and one
//! with a network ACL on `vsw-b`. The reference evaluator says what each
//! one decides; the probes need no hand-written expectations.
use anyhow::{anyhow, Context as _, Result};
use filter::{
    eval::evaluate,
    ruleset::{Direction, Ruleset},
    validate::{parse_document, validate},
    verdict::{Packet, Verdict},
};
use filter_tests::{
    cloud::{Cloud, Family, Node, NodeKind, Vpc},
    id::TestId,
};
use serde_json::{json, Value};

/// The UDP ports every probed node receives on.
pub const PORTS: [u16; 3] = [5001, 5002, 5003];

/// The nodes of the soak.
pub struct Site {
    pub cloud: Cloud,
    /// Probed: everything but `flap`.
    pub probed: Vec<Node>,
    /// The instance whose interface comes and goes.
    pub flap: Node,
}

impl Site {
    pub fn build(id: &TestId) -> Result<Site> {
        let mut cloud = Cloud::new(
            id,
            Vpc {
                id: "vpc-soak".into(),
                cidr: "192.0.2.0/24".parse()?,
                ipv6_cidr: "fd00:5::/48".parse()?,
            },
        )?;
        cloud.vswitch("vsw-a", "192.0.2.0/26", "fd00:5:0:1::/64")?;
        cloud.vswitch("vsw-b", "192.0.2.64/26", "fd00:5:0:2::/64")?;
        let web = cloud.instance("web", "192.0.2.10", "fd00:5:0:1::10")?;
        let app = cloud.instance("app", "192.0.2.11", "fd00:5:0:1::11")?;
        let db = cloud.instance("db", "192.0.2.74", "fd00:5:0:2::74")?;
        let flap = cloud.instance("flap", "192.0.2.75", "fd00:5:0:2::75")?;
        let client = cloud.outside("client", "198.51.100.20/24", "2001:db8:c::20/64")?;
        cloud.check_fabric()?;
        Ok(Site {
            cloud,
            probed: vec![web, app, db, client],
            flap,
        })
    }

    fn node(&self, name: &str) -> Result<&Node> {
        self.cloud.node(name)
    }

    /// The three documents, as JSON.
    pub fn documents(&self) -> Result<Vec<Value>> {
        let (web, app, db, flap) = (
            self.node("web")?,
            self.node("app")?,
            self.node("db")?,
            &self.flap,
        );
        let enis = json!([
            web.eni(&["sg-web"]),
            app.eni(&["sg-web"]),
            db.eni(&["sg-db"]),
            flap.eni(&["sg-db"]),
        ]);
        let (vpcs, vswitches) = self.cloud.network_json();
        let doc = |groups: Value, acl: Option<Value>| {
            let mut vswitches = vswitches.clone();
            let mut acls = json!([]);
            if let Some(acl) = acl {
                vswitches[1]["network_acl_id"] = json!("acl-b");
                acls = json!([acl]);
            }
            json!({"vpcs": vpcs, "vswitches": vswitches, "security_groups": groups,
                   "network_acls": acls, "enis": enis})
        };
        let open = doc(
            json!([
                group(
                    "sg-web",
                    "accept",
                    &[
                        rule("ingress", "accept", 1, 5001, "source_cidr_ip", "0.0.0.0/0"),
                        rule("ingress", "accept", 1, 5001, "ipv6_source_cidr_ip", "::/0"),
                        rule("ingress", "accept", 1, 5002, "source_group_id", "sg-db"),
                    ]
                ),
                group(
                    "sg-db",
                    "accept",
                    &[
                        rule("ingress", "accept", 1, 5001, "source_group_id", "sg-web"),
                        rule("ingress", "accept", 1, 5003, "source_group_id", "sg-web"),
                    ]
                ),
            ]),
            None,
        );
        let locked = doc(
            json!([
                group(
                    "sg-web",
                    "drop",
                    &[
                        rule(
                            "ingress",
                            "accept",
                            1,
                            5002,
                            "source_cidr_ip",
                            "198.51.100.0/24"
                        ),
                        rule(
                            "ingress",
                            "accept",
                            1,
                            5002,
                            "ipv6_source_cidr_ip",
                            "2001:db8:c::/64"
                        ),
                        rule("ingress", "drop", 1, 5001, "source_cidr_ip", "0.0.0.0/0"),
                        rule(
                            "ingress",
                            "accept",
                            2,
                            5001,
                            "source_cidr_ip",
                            "192.0.2.0/24"
                        ),
                        rule(
                            "ingress",
                            "accept",
                            2,
                            5003,
                            "ipv6_source_cidr_ip",
                            "fd00:5::/48"
                        ),
                        rule("egress", "drop", 1, 5003, "dest_cidr_ip", "0.0.0.0/0"),
                    ]
                ),
                group(
                    "sg-db",
                    "accept",
                    &[
                        rule("ingress", "accept", 1, 5003, "source_group_id", "sg-web"),
                        rule("egress", "drop", 1, 5001, "dest_cidr_ip", "198.51.100.0/24"),
                        rule("egress", "drop", 1, 5002, "dest_cidr_ip", "198.51.100.0/24"),
                    ]
                ),
            ]),
            None,
        );
        let acl = json!({
            "id": "acl-b",
            "ingress": [
                {"name": "no-5002", "policy": "drop", "protocol": "udp",
                 "source_cidr_ip": "0.0.0.0/0", "port": "5002/5002"},
                {"name": "v4", "policy": "accept", "protocol": "all",
                 "source_cidr_ip": "0.0.0.0/0", "port": "-1/-1"},
                {"name": "v6", "policy": "accept", "protocol": "all",
                 "source_cidr_ip": "::/0", "port": "-1/-1"},
            ],
            "egress": [
                {"name": "v4-not-client", "policy": "drop", "protocol": "udp",
                 "destination_cidr_ip": "198.51.100.0/24", "port": "5003/5003"},
                {"name": "v4", "policy": "accept", "protocol": "all",
                 "destination_cidr_ip": "0.0.0.0/0", "port": "-1/-1"},
                {"name": "v6", "policy": "accept", "protocol": "all",
                 "destination_cidr_ip": "::/0", "port": "-1/-1"},
            ],
        });
        let with_acl = doc(
            json!([
                group(
                    "sg-web",
                    "accept",
                    &[
                        rule(
                            "ingress",
                            "accept",
                            1,
                            5003,
                            "source_cidr_ip",
                            "198.51.100.0/24"
                        ),
                        rule("ingress", "accept", 1, 5001, "source_group_id", "sg-db"),
                    ]
                ),
                group(
                    "sg-db",
                    "accept",
                    &[
                        rule("ingress", "accept", 1, 5002, "source_cidr_ip", "0.0.0.0/0"),
                        rule("ingress", "accept", 1, 5003, "source_cidr_ip", "0.0.0.0/0"),
                        rule("ingress", "accept", 1, 5003, "ipv6_source_cidr_ip", "::/0"),
                    ]
                ),
            ]),
            Some(acl),
        );
        Ok(vec![open, locked, with_acl])
    }
}

/// A basic group of the soak's VPC.
fn group(id: &str, inner: &str, rules: &[Value]) -> Value {
    json!({"id": id, "vpc_id": "vpc-soak", "type": "basic",
           "inner_access_policy": inner, "rules": rules})
}

/// A UDP rule for one port; `peer` is the peer field's name.
fn rule(direction: &str, policy: &str, priority: u8, port: u16, peer: &str, value: &str) -> Value {
    let mut rule = json!({"direction": direction, "policy": policy, "priority": priority,
                          "ip_protocol": "udp", "port_range": format!("{port}/{port}")});
    rule[peer] = json!(value);
    rule
}

/// A validated document and what it decides.
pub struct Judge {
    pub document: Value,
    ruleset: Ruleset,
}

impl Judge {
    pub fn new(document: Value) -> Result<Judge> {
        let doc = parse_document(&document.to_string())
            .map_err(|e| anyhow!("a soak document does not parse: {e:?}"))?;
        let ruleset = validate(&doc).map_err(|e| anyhow!("a soak document is invalid: {e:?}"))?;
        Ok(Judge { document, ruleset })
    }

    /// Whether the first UDP datagram `from` → `to`:`port` gets through:
    /// the sender's ENI on egress, then the receiver's on ingress (those
    /// that are instances), as the reference evaluator sees it.
    pub fn accepts(&self, from: &Node, to: &Node, family: Family, port: u16) -> Result<bool> {
        let packet = Packet {
            src: from.addr(family),
            dst: to.addr(family),
            proto: 17,
            // Any ephemeral port: no rule names source ports.
            src_port: 40000,
            dst_port: port,
            icmp_type: 0,
        };
        for (node, direction) in [(from, Direction::Egress), (to, Direction::Ingress)] {
            if node.kind != NodeKind::Instance {
                continue;
            }
            let eni_id = node.eni_id().unwrap_or_default();
            let eni = self
                .ruleset
                .eni_by_id(&eni_id)
                .with_context(|| format!("no ENI {eni_id} in a soak document"))?;
            if evaluate(&self.ruleset, eni, direction, &packet)
                .decision
                .verdict
                == Verdict::Drop
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
