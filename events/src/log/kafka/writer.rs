//! The writer of one Kafka partition: seals each event with its seq and chain link, produces
//! it (idempotent, `acks=all`), and acknowledges a group only when the broker placed it right
//! after the chain's last event (see the rule in [`super`]).

use std::sync::Arc;
use std::time::Duration;

use futures::executor::block_on;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::sync::mpsc;

use super::partition::{Shared, Tip};
use crate::chain;
use crate::envelope::NewEvent;
use crate::log::append::{Request, WriterHandle, gather, spawn_writer};
use crate::log::partition::Appended;
use crate::log::{LogConfig, LogError};

pub(crate) fn spawn(
    shared: Arc<Shared>,
    producer: FutureProducer,
    cfg: &LogConfig,
) -> Result<WriterHandle, LogError> {
    let writer = Writer {
        shared: shared.clone(),
        producer,
        max_batch_bytes: cfg.max_batch_bytes,
        resync: false,
        buf: Vec::with_capacity(4096),
    };
    spawn_writer(&shared.topic, shared.id, cfg.queue_depth, move |rx| {
        writer.run(rx)
    })
}

struct Writer {
    shared: Arc<Shared>,
    producer: FutureProducer,
    max_batch_bytes: usize,
    /// The broker may hold records this writer has not judged (a failed or unclear send):
    /// re-read before the next group.
    resync: bool,
    buf: Vec<u8>,
}

/// One event handed to the producer.
struct Sent {
    request: usize,
    ack: Appended,
    delivery: Option<DeliveryFuture>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(reqs) = gather(&mut rx, self.max_batch_bytes) {
            let results = self.commit(&reqs);
            for (req, result) in reqs.into_iter().zip(results) {
                // A caller that stopped waiting still has its events written.
                req.reply.send(result).ok();
            }
        }
    }

    /// Writes a group and answers each request of it.
    fn commit(&mut self, reqs: &[Request]) -> Vec<Result<Vec<Appended>, LogError>> {
        let fail = |e: &LogError| reqs.iter().map(|_| Err(e.duplicate())).collect();
        if self.resync {
            if let Err(e) = self.shared.refresh(None) {
                return fail(&e);
            }
            self.resync = false;
        }
        let tip = self.shared.tip();
        let (sent, send_error) = self.send(reqs, &tip);
        // Wait for every delivery report, in order.
        let mut failure = send_error;
        let mut offsets: Vec<Option<i64>> = Vec::with_capacity(sent.len());
        let mut sent = sent;
        for s in &mut sent {
            let offset = match s.delivery.take().map(block_on) {
                Some(Ok(Ok(d))) => Some(d.offset),
                Some(Ok(Err((e, _)))) => {
                    failure.get_or_insert(e);
                    None
                }
                Some(Err(_)) => {
                    failure.get_or_insert(KafkaError::Canceled);
                    None
                }
                None => None,
            };
            offsets.push(offset);
        }
        let contiguous = offsets
            .iter()
            .enumerate()
            .all(|(i, o)| *o == Some(tip.last_offset + 1 + i as i64));
        if failure.is_none() && contiguous && !sent.is_empty() {
            let last = sent.last().expect("not empty");
            self.shared.set_tip(Tip {
                chain: super::Chain {
                    next_seq: last.ack.seq + 1,
                    last_hash: last.ack.hash,
                },
                last_recorded_at: last.ack.recorded_at,
                last_offset: tip.last_offset + sent.len() as i64,
                end: tip.last_offset + 1 + sent.len() as i64,
            });
            return split(reqs.len(), sent);
        }
        // Another record got in between, or a send failed: the broker decides. Re-read from
        // the last known event, keep what the rule says, and answer each request by whether
        // all of its events are on the chain (an event's hash covers its id: the same hash on
        // the chain is this very event, wherever a retry put it).
        self.resync = failure.is_some();
        let mut accepted = Vec::new();
        if let Err(e) = self.shared.refresh(Some(&mut accepted)) {
            self.resync = true;
            return fail(&e);
        }
        if let Some(e) = &failure {
            tracing::warn!(topic = %self.shared.topic, partition = self.shared.id, error = %e, "a Kafka send failed");
        }
        // A request the producer refused before all its events were sent is lost whole.
        let mut ok: Vec<bool> = reqs
            .iter()
            .enumerate()
            .map(|(i, r)| sent.iter().filter(|s| s.request == i).count() == r.events.len())
            .collect();
        let mut first_lost = vec![None; reqs.len()];
        let accepted: std::collections::HashSet<[u8; 32]> = accepted.into_iter().collect();
        for s in &sent {
            if !accepted.contains(&s.ack.hash) {
                ok[s.request] = false;
                first_lost[s.request].get_or_insert(s.ack.seq);
            }
        }
        let mut acks = split(reqs.len(), sent);
        for (i, a) in acks.iter_mut().enumerate() {
            if !ok[i] {
                *a = Err(match &failure {
                    Some(e) => self.shared.client.error(
                        format!(
                            "cannot append to {}/{}",
                            self.shared.kafka_topic, self.shared.id
                        ),
                        e.clone(),
                    ),
                    None => LogError::Superseded {
                        topic: self.shared.topic.clone(),
                        partition: self.shared.id,
                        seq: first_lost[i].unwrap_or_default(),
                    },
                });
            }
        }
        acks
    }

    /// Seals and produces every event of the group, in order. Stops at the first event the
    /// producer refuses (the rest of the group is not sent).
    fn send(&mut self, reqs: &[Request], tip: &Tip) -> (Vec<Sent>, Option<KafkaError>) {
        let now = crate::time::now_micros().max(tip.last_recorded_at);
        let id = self.shared.id;
        let mut chain = tip.chain;
        let mut sent = Vec::with_capacity(reqs.iter().map(|r| r.events.len()).sum());
        for (ri, req) in reqs.iter().enumerate() {
            for ev in &req.events {
                let seq = chain.next_seq;
                self.buf.clear();
                ev.at(now, id, seq, &chain.last_hash)
                    .encode_without_hash(&mut self.buf);
                let hash = chain::event_hash(id, seq, &chain.last_hash, &self.buf);
                self.buf.extend_from_slice(&hash);
                let delivery = match self.produce(ev, seq, now) {
                    Ok(d) => d,
                    Err(e) => return (sent, Some(e)),
                };
                sent.push(Sent {
                    request: ri,
                    ack: Appended {
                        event_id: ev.event_id,
                        partition: id,
                        seq,
                        hash,
                        recorded_at: now,
                    },
                    delivery: Some(delivery),
                });
                chain.next_seq += 1;
                chain.last_hash = hash;
            }
        }
        (sent, None)
    }

    /// Hands the sealed event in `buf` to the producer, waiting while its queue is full.
    fn produce(&self, ev: &NewEvent, seq: u64, now: i64) -> Result<DeliveryFuture, KafkaError> {
        let seq_text = seq.to_string();
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: "annals.event_type",
                value: Some(ev.event_type.as_bytes()),
            })
            .insert(Header {
                key: "annals.tenant",
                value: Some(ev.tenant.as_bytes()),
            })
            .insert(Header {
                key: "annals.stream",
                value: Some(ev.stream.as_bytes()),
            })
            .insert(Header {
                key: "annals.seq",
                value: Some(seq_text.as_bytes()),
            });
        let mut record = FutureRecord::to(&self.shared.kafka_topic)
            .partition(self.shared.id as i32)
            .key(ev.tenant.as_bytes())
            .payload(&self.buf[..])
            .timestamp(now.div_euclid(1000));
        if self.shared.client.cfg.headers {
            record = record.headers(headers);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(d) => return Ok(d),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

/// The acknowledgements of each request, in order.
fn split(requests: usize, sent: Vec<Sent>) -> Vec<Result<Vec<Appended>, LogError>> {
    let mut out: Vec<Vec<Appended>> = (0..requests).map(|_| Vec::new()).collect();
    for s in sent {
        out[s.request].push(s.ack);
    }
    out.into_iter().map(Ok).collect()
}
