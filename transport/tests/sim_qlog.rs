//! qlog in the simulator, under loss and with key updates: every record of both
//! ends' traces deserialises into the `qlog` crate's types (the version quiche
//! uses), lost packets are ones that were sent, and key updates appear on both ends.

#[path = "support/sim_setup.rs"]
mod sim_setup;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qlog::events::quic::{KeyUpdateOrRetiredTrigger, PacketType};
use qlog::events::{Event, EventData};
use quill_transport::proto::{QlogSink, QlogStream, Side, TransportConfig};
use quill_transport::sim::{ClientApp, LinkConfig};
use quill_transport::wire::ConnectionId;
use sim_setup::{alice_policy, setup, sim_of, MB};

/// Keeps every trace in memory, by role.
#[derive(Debug, Default)]
struct Memory {
    traces: Mutex<BTreeMap<String, Arc<Mutex<Vec<u8>>>>>,
}

impl QlogSink for Memory {
    fn open(&self, odcid: &ConnectionId, side: Side) -> Option<Box<dyn QlogStream>> {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let name = format!("{odcid}_{side:?}");
        self.traces.lock().unwrap().insert(name, buf.clone());
        Some(Box::new(Stream(buf)))
    }
}

struct Stream(Arc<Mutex<Vec<u8>>>);

impl QlogStream for Stream {
    fn write(&mut self, batch: Vec<u8>) -> bool {
        self.0.lock().unwrap().extend_from_slice(&batch);
        true
    }
}

/// Every record after the header, strictly parsed.
fn events(bytes: &[u8]) -> Vec<Event> {
    let mut records = bytes.split(|&b| b == 0x1e).skip(1);
    let header: qlog::QlogSeq = serde_json::from_slice(records.next().unwrap()).unwrap();
    assert_eq!(header.file_schema, qlog::QLOGFILESEQ_URI);
    records
        .map(|r| {
            serde_json::from_slice(r)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(r)))
        })
        .collect()
}

#[test]
fn a_lossy_transfer_with_key_updates_is_traced_on_both_ends() {
    let sink = Arc::new(Memory::default());
    let transport = TransportConfig {
        key_update_interval: 1000,
        qlog: Some(sink.clone()),
        ..TransportConfig::default()
    };
    let link = LinkConfig {
        loss: 0.03,
        ..LinkConfig::default()
    };
    let mut sim = sim_of(
        5,
        setup(5, transport),
        link,
        ClientApp::new(4 * MB, 1),
        alice_policy(),
    );
    assert!(sim.run_until(Duration::from_secs(600), |s| {
        s.server_app.sink.finished.len() == 1 || s.client_app.lost.is_some()
    }));
    assert!(sim.client_app.lost.is_none(), "{:?}", sim.client_app.lost);
    let now = sim.now();
    sim.client().close(now, 0, "done");
    sim.run_until(Duration::from_secs(10), |s| {
        s.server().is_none_or(|c| c.is_closed())
    });
    drop(sim); // the connections end: their traces are flushed

    let traces = sink.traces.lock().unwrap();
    assert_eq!(traces.len(), 2, "{:?}", traces.keys());
    let by_role = |role: &str| {
        let (_, buf) = traces.iter().find(|(k, _)| k.ends_with(role)).unwrap();
        events(&buf.lock().unwrap())
    };
    let client = by_role("Client");
    let server = by_role("Server");

    // Lost packets are ones the client sent (1-RTT, by number).
    let sent: BTreeSet<u64> = client
        .iter()
        .filter_map(|e| match &e.data {
            EventData::QuicPacketSent(p) if p.header.packet_type == PacketType::OneRtt => {
                p.header.packet_number
            }
            _ => None,
        })
        .collect();
    let lost: Vec<u64> = client
        .iter()
        .filter_map(|e| match &e.data {
            EventData::QuicPacketLost(p) => {
                let h = p.header.as_ref().unwrap();
                (h.packet_type == PacketType::OneRtt).then_some(h.packet_number.unwrap())
            }
            _ => None,
        })
        .collect();
    assert!(!lost.is_empty(), "3% loss loses packets");
    assert!(lost.iter().all(|pn| sent.contains(pn)));

    // More than 1000 packets each way under one key: both ends update and follow.
    let triggers = |events: &[Event]| -> BTreeSet<String> {
        events
            .iter()
            .filter_map(|e| match &e.data {
                EventData::QuicKeyUpdated(k) => k.trigger.as_ref().map(|t| format!("{t:?}")),
                _ => None,
            })
            .collect()
    };
    let local = format!("{:?}", KeyUpdateOrRetiredTrigger::LocalUpdate);
    let remote = format!("{:?}", KeyUpdateOrRetiredTrigger::RemoteUpdate);
    assert!(
        triggers(&client).contains(&local),
        "{:?}",
        triggers(&client)
    );
    assert!(
        triggers(&server).contains(&remote),
        "{:?}",
        triggers(&server)
    );

    for events in [&client, &server] {
        let has = |f: &dyn Fn(&EventData) -> bool| events.iter().any(|e| f(&e.data));
        assert!(has(&|d| matches!(d, EventData::QuicConnectionClosed(_))));
        assert!(has(
            &|d| matches!(d, EventData::QuicMetricsUpdated(m) if m.smoothed_rtt.is_some())
        ));
        // Times never go backwards.
        assert!(events.windows(2).all(|w| w[0].time <= w[1].time));
    }
}
