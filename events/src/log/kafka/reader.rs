//! The Kafka reader: a consumer assigned the one partition (no group, no committed offsets:
//! positions are annals' own), handing out the chain's events in seq order and skipping
//! records off the chain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;

use super::partition::Shared;
use super::{Chain, Polled, Verdict, assign, poll_record};
use crate::envelope::{Envelope, EnvelopeRef};
use crate::log::LogError;

/// What one poll did.
enum Step {
    /// The next event is in `buf`.
    Event,
    /// A record before the wanted seq, or off the chain.
    Skipped,
    /// The consumer reached the end of what the broker holds.
    End,
    Nothing,
}

pub struct KafkaReader {
    shared: Arc<Shared>,
    consumer: Option<BaseConsumer>,
    chain: Chain,
    /// The seq of the next event handed out.
    want: u64,
    /// The offset the consumer reads next.
    next_offset: i64,
    at_end: bool,
    buf: Vec<u8>,
}

impl KafkaReader {
    pub(crate) fn new(shared: Arc<Shared>, from_seq: u64) -> KafkaReader {
        KafkaReader {
            shared,
            consumer: None,
            chain: Chain::genesis(),
            want: from_seq,
            next_offset: 0,
            at_end: false,
            buf: Vec::new(),
        }
    }

    pub fn position(&self) -> u64 {
        self.want
    }

    fn start(&mut self) -> Result<(), LogError> {
        let (offset, chain) = self.shared.start_point(self.want)?;
        let client = &self.shared.client;
        let consumer: BaseConsumer = client
            .cfg
            .reader_config()
            .create()
            .map_err(|e| client.error("cannot create a consumer", e))?;
        assign(&consumer, &self.shared.kafka_topic, self.shared.id, offset)
            .map_err(|e| client.error("cannot assign a partition", e))?;
        self.consumer = Some(consumer);
        self.chain = chain;
        self.next_offset = offset;
        Ok(())
    }

    fn step(&mut self, wait: Duration) -> Result<Step, LogError> {
        if self.consumer.is_none() {
            self.start()?;
        }
        let consumer = self.consumer.as_ref().expect("started");
        let shared = &self.shared;
        let polled = poll_record(consumer, wait).map_err(|e| {
            shared.client.error(
                format!("cannot read {}/{}", shared.kafka_topic, shared.id),
                e,
            )
        })?;
        let m = match polled {
            Polled::Record(m) => m,
            Polled::End => {
                self.at_end = true;
                return Ok(Step::End);
            }
            Polled::Nothing => return Ok(Step::Nothing),
        };
        self.at_end = false;
        self.next_offset = m.offset() + 1;
        let value = m.payload().unwrap_or_default();
        let (verdict, f) = self.chain.judge(shared.id, value).map_err(|(_, d)| {
            shared.corrupt(self.chain.next_seq, format!("offset {}: {d}", m.offset()))
        })?;
        if verdict == Verdict::Off || f.seq < self.want {
            return Ok(Step::Skipped);
        }
        self.buf.clear();
        self.buf.extend_from_slice(value);
        self.want += 1;
        Ok(Step::Event)
    }

    /// Whether the consumer has read everything the broker holds: its end-of-partition event,
    /// or (some brokers do not always send one) the high watermark.
    fn at_broker_end(&mut self) -> Result<bool, LogError> {
        if !self.at_end {
            let (_, high) = self
                .shared
                .client
                .watermarks(&self.shared.kafka_topic, self.shared.id)?;
            self.at_end = self.next_offset >= high;
        }
        Ok(self.at_end)
    }

    /// Moves to the next event (into `buf`); `false` when caught up with what the broker holds.
    fn advance(&mut self) -> Result<bool, LogError> {
        let timeout = self.shared.client.cfg.timeout;
        let mut deadline = Instant::now() + timeout;
        loop {
            // Caught up, unless the chain is known to go further: then wait for its records.
            let caught_up = self.at_end && self.want >= self.shared.seen();
            let wait = if caught_up {
                Duration::ZERO
            } else {
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(250))
            };
            match self.step(wait)? {
                Step::Event => return Ok(true),
                Step::Skipped => deadline = Instant::now() + timeout,
                Step::End if self.want >= self.shared.seen() => return Ok(false),
                Step::End => {}
                Step::Nothing if caught_up => return Ok(false),
                Step::Nothing if self.at_broker_end()? && self.want >= self.shared.seen() => {
                    return Ok(false);
                }
                Step::Nothing if Instant::now() < deadline => {}
                Step::Nothing => {
                    return Err(self.shared.client.error(
                        format!(
                            "cannot read {}/{} at seq {}",
                            self.shared.kafka_topic, self.shared.id, self.want
                        ),
                        rdkafka::error::KafkaError::MessageConsumption(
                            rdkafka::types::RDKafkaErrorCode::RequestTimedOut,
                        ),
                    ));
                }
            }
        }
    }

    fn current(&self) -> Result<EnvelopeRef<'_>, LogError> {
        EnvelopeRef::decode(&self.buf)
            .map_err(|e| self.shared.corrupt(self.want - 1, e.to_string()))
    }

    pub fn next_ref(&mut self) -> Result<Option<EnvelopeRef<'_>>, LogError> {
        if !self.advance()? {
            return Ok(None);
        }
        self.current().map(Some)
    }

    pub fn next_blocking(&mut self, timeout: Duration) -> Result<Option<Envelope>, LogError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.advance()? {
                return Ok(Some(self.current()?.to_owned()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            if let Step::Event = self.step(left.min(Duration::from_millis(100)))? {
                return Ok(Some(self.current()?.to_owned()));
            }
        }
    }

    /// Waits for this process's writer to acknowledge more, or polls the broker every 10 ms
    /// (another process's appends arrive only through the consumer).
    pub async fn next_async(&mut self) -> Result<Envelope, LogError> {
        let mut rx = self.shared.watch.subscribe();
        loop {
            if self.advance()? {
                return Ok(self.current()?.to_owned());
            }
            let want = self.want;
            tokio::select! {
                _ = rx.wait_for(|&n| n > want) => {}
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    }
}
