//! TCP throughput through a guarded link per ingress hook (issue 18): the
//! real `filterd` guards the host end of a container's veth or a VM's tap
//! in `tap` mode, the instance behind it; one TCP stream each way
//! (`traffic::tcp_stream_to`). The instance sending arrives on the guarded
//! end's ingress, where the hook (XDP or tcx) runs; the instance receiving
//! leaves through its tcx egress whatever the hook.
use anyhow::{anyhow, Result};
use filter::compile::synthetic::Generator;
use filter_tests::{
    daemon::{DaemonGuard, DaemonOptions},
    id::TestId,
};
use serde_json::{json, Value};

use crate::{
    pair::Pair,
    rules::{BENCH_PORT, CLIENT_V4, ENI_V4},
    traffic::{self, Timing},
};

/// The rows: no filter, then filter with each `hook` value.
pub const HOOKS: [Option<&str>; 4] = [None, Some("xdp"), Some("tc"), Some("auto")];
/// Rules in the guarded document (the services generator's).
const RULES: usize = 1_000;

/// The instance's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// A container's: a veth pair.
    Veth,
    /// A VM's: a tap whose frames (with offloads) a backend relays
    /// ([`Pair::taps`]).
    Tap,
}

impl Link {
    pub fn name(self) -> &'static str {
        match self {
            Link::Veth => "veth",
            Link::Tap => "tap",
        }
    }

    fn pair(self, tag: &str) -> Result<Pair> {
        match self {
            Link::Veth => Pair::new(tag),
            Link::Tap => Pair::taps(tag),
        }
    }
}

/// One row: Gbit/s with the instance sending and receiving (medians).
#[derive(Clone, Debug)]
pub struct Row {
    pub hook: Option<&'static str>,
    pub sending: f64,
    pub receiving: f64,
}

impl Row {
    pub fn label(&self) -> String {
        self.hook
            .map_or("no filter".into(), |h| format!("filter, hook {h}"))
    }
}

/// The document: the services generator's rules on the ENI of the
/// instance (the client end, [`CLIENT_V4`]) behind `iface`, in `tap` mode
/// with `hook`, plus a rule that admits the stream to it.
fn document(iface: &str, hook: &str) -> Value {
    let mut doc = Generator::Services.document(RULES, iface);
    doc["vpcs"][0]["cidr"] = json!("192.0.2.0/24");
    doc["vswitches"][0]["cidr"] = json!("192.0.2.0/24");
    let eni = &mut doc["enis"][0];
    eni["ips"] = json!([CLIENT_V4.to_string()]);
    eni["attach_mode"] = json!("tap");
    eni["hook"] = json!(hook);
    if let Some(rules) = doc["security_groups"][0]["rules"].as_array_mut() {
        rules.push(
            json!({"id": "stream", "direction": "ingress", "policy": "accept",
                          "priority": 1, "ip_protocol": "tcp",
                          "port_range": format!("{BENCH_PORT}/{BENCH_PORT}"),
                          "source_cidr_ip": format!("{ENI_V4}/32")}),
        );
    }
    doc
}

pub fn run(timing: Timing, link: Link) -> Result<Vec<Row>> {
    println!("## TCP through a guarded {}, per hook\n", link.name());
    let how = match link {
        Link::Veth => "a veth",
        Link::Tap => {
            "a VM's tap (two taps with checksum and TSO offloads, their frames and \
             `virtio_net_hdr`s relayed by the benchmark as a VM's backend)"
        }
    };
    println!(
        "The real `filterd` guards the host end of {how} in `tap` mode ({} services rules); \
         one TCP stream from and to the instance behind it, {} rounds of {:.1} s (median), the \
         rows measured in turn each round.\n",
        crate::thousands(RULES),
        timing.repeats,
        timing.measure.as_secs_f64()
    );
    let mut cells = Vec::new();
    let result = (|| -> Result<()> {
        for hook in HOOKS {
            let pair = link.pair(&format!("p{}", hook.unwrap_or("n")))?;
            let daemon = match hook {
                None => None,
                Some(h) => {
                    let id = TestId::new("bench");
                    let options = DaemonOptions {
                        ruleset: Some(document(&pair.server_if, h)),
                        ..Default::default()
                    };
                    Some(DaemonGuard::start_with(&id, &pair.server, options)?)
                }
            };
            if let Some(d) = &daemon {
                let (status, _) = d.status_json()?;
                if status["generation"].is_null() {
                    return Err(anyhow!("filterd applied nothing: {}", d.log()));
                }
            }
            cells.push((hook, daemon, pair, Vec::new(), Vec::new()));
        }
        for _ in 0..timing.repeats.max(1) {
            for (_, _, pair, sending, receiving) in cells.iter_mut() {
                sending.push(traffic::tcp_stream_to(
                    &pair.client,
                    &pair.server,
                    ENI_V4,
                    timing,
                )?);
                receiving.push(traffic::tcp_stream_to(
                    &pair.server,
                    &pair.client,
                    CLIENT_V4,
                    timing,
                )?);
            }
        }
        Ok(())
    })();
    let rows: Vec<Row> = cells
        .iter()
        .map(|(hook, _, _, s, r)| Row {
            hook: *hook,
            sending: crate::veth::median(s.clone()),
            receiving: crate::veth::median(r.clone()),
        })
        .collect();
    // The daemons go before their namespaces.
    for (_, daemon, pair, _, _) in cells {
        drop(daemon);
        drop(pair);
    }
    result?;
    println!("| ingress hook | instance sends Gbit/s | × no filter | instance receives Gbit/s | × no filter |");
    println!("|---|---:|---:|---:|---:|");
    let none = rows.iter().find(|r| r.hook.is_none()).cloned();
    for r in &rows {
        let ratio = |v: f64, f: fn(&Row) -> f64| {
            none.as_ref()
                .map_or("-".into(), |n| format!("{:.2}", v / f(n)))
        };
        println!(
            "| {} | {:.2} | {} | {:.2} | {} |",
            r.label(),
            r.sending,
            ratio(r.sending, |r| r.sending),
            r.receiving,
            ratio(r.receiving, |r| r.receiving)
        );
    }
    println!();
    Ok(rows)
}
