//! One Kafka partition: where its chain ends (the tip), found and kept current by applying
//! the chain rule to what the broker holds, and where a reader of a given seq starts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{Chain, Client, Verdict, writer};
use crate::chain::Hash;
use crate::envelope::ChainFields;
use crate::log::partition::{Head, Partition, Source};
use crate::log::{LogConfig, LogError, Mode};

/// Where the chain of a partition ends, and how far the broker's records were examined.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tip {
    pub chain: Chain,
    pub last_recorded_at: i64,
    /// Offset of the chain's last event (-1: none).
    pub last_offset: i64,
    /// Every record below this offset has been judged.
    pub end: i64,
}

pub(crate) struct Shared {
    pub client: Arc<Client>,
    pub topic: String,
    pub kafka_topic: String,
    pub id: u32,
    tip: Mutex<Tip>,
    /// The chain length last seen (readers wait for events up to it).
    seen: AtomicU64,
    /// Whether this process writes the partition (then its writer keeps the tip current).
    writing: bool,
    pub watch: watch::Sender<u64>,
}

/// Opens partition `id` of `topic`: finds the chain's tip and, for writing, starts the writer.
pub(crate) fn open(
    client: &Arc<Client>,
    topic: &str,
    id: u32,
    cfg: &LogConfig,
    mode: Mode,
) -> Result<Partition, LogError> {
    let (watch, _) = watch::channel(0);
    let shared = Arc::new(Shared {
        client: client.clone(),
        topic: topic.to_owned(),
        kafka_topic: client.kafka_topic(topic),
        id,
        tip: Mutex::new(Tip {
            chain: Chain::genesis(),
            last_recorded_at: 0,
            last_offset: -1,
            end: 0,
        }),
        seen: AtomicU64::new(0),
        writing: mode == Mode::ReadWrite,
        watch,
    });
    shared.refresh(None)?;
    let writer = match (mode, client.producer()) {
        (Mode::ReadWrite, Some(producer)) => {
            Some(writer::spawn(shared.clone(), producer.clone(), cfg)?)
        }
        _ => None,
    };
    Ok(Partition::new(topic, id, Source::Kafka(shared), writer))
}

impl Shared {
    pub fn corrupt(&self, seq: u64, detail: impl Into<String>) -> LogError {
        LogError::corrupt(&self.topic, self.id, seq, detail)
    }

    pub fn tip(&self) -> Tip {
        *self.tip.lock().expect("tip lock")
    }

    /// The chain length last seen.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Acquire)
    }

    /// Records a tip this process established (the writer's acknowledged appends).
    pub fn set_tip(&self, tip: Tip) {
        *self.tip.lock().expect("tip lock") = tip;
        self.seen.store(tip.chain.next_seq, Ordering::Release);
        self.watch.send_replace(tip.chain.next_seq);
    }

    /// The durable head. A partition another process writes is looked up on the broker (one
    /// offsets request, and a read of the new records); a broker that does not answer leaves
    /// the last head seen.
    pub fn head(&self) -> Head {
        if !self.writing
            && let Err(e) = self.refresh(None)
        {
            tracing::warn!(topic = %self.topic, partition = self.id, error = %e, "cannot refresh the head from Kafka");
        }
        let tip = self.tip();
        Head {
            next_seq: tip.chain.next_seq,
            last_hash: tip.chain.last_hash,
            last_recorded_at: tip.last_recorded_at,
            // Not known without reading every record; Kafka's own tools report sizes.
            bytes: 0,
        }
    }

    /// Judges the records the broker holds beyond the tip and moves the tip along the chain.
    /// `accepted` collects the hashes of the events found on the chain.
    pub fn refresh(&self, mut accepted: Option<&mut Vec<Hash>>) -> Result<Tip, LogError> {
        let mut tip = self.tip();
        let (low, high) = self.client.watermarks(&self.kafka_topic, self.id)?;
        if high <= tip.end {
            return Ok(tip);
        }
        if low > 0 && tip.end < low {
            return Err(self.corrupt(
                tip.chain.next_seq,
                format!(
                    "Kafka no longer holds offsets below {low} of {}: the topic must keep every record (retention.ms=-1)",
                    self.kafka_topic
                ),
            ));
        }
        // While every record so far is on the chain (offsets are seqs), a last record whose seq
        // equals its offset means the new ones are too: the tip is that record, found with one
        // read instead of reading every new record (which this partition's readers read anyway).
        if tip.end == tip.chain.next_seq as i64 && accepted.is_none() {
            let mut last = None;
            self.client
                .read_range(&self.kafka_topic, self.id, high - 1, high, |_, v| {
                    let f = ChainFields::decode(v)
                        .map_err(|e| self.corrupt(high as u64 - 1, e.to_string()))?;
                    last = Some((f.seq, *f.hash, f.recorded_at));
                    Ok(())
                })?;
            if let Some((seq, hash, at)) = last
                && seq == high as u64 - 1
            {
                tip = Tip {
                    chain: Chain {
                        next_seq: high as u64,
                        last_hash: hash,
                    },
                    last_recorded_at: at,
                    last_offset: high - 1,
                    end: high,
                };
                self.set_tip(tip);
                return Ok(tip);
            }
            tracing::warn!(topic = %self.topic, partition = self.id, "records off the chain (copies or a fork) found: reading the new records one by one");
        }
        self.client
            .read_range(&self.kafka_topic, self.id, tip.end, high, |offset, v| {
                let (verdict, f) = tip.chain.judge(self.id, v).map_err(|(_, d)| {
                    self.corrupt(tip.chain.next_seq, format!("offset {offset}: {d}"))
                })?;
                if verdict == Verdict::Next {
                    tip.last_offset = offset;
                    tip.last_recorded_at = f.recorded_at;
                    if let Some(a) = accepted.as_deref_mut() {
                        a.push(*f.hash);
                    }
                }
                Ok(())
            })?;
        tip.end = high;
        self.set_tip(tip);
        Ok(tip)
    }

    /// Where a reader of seq `seq` starts: an offset and the chain as of just before it.
    pub fn start_point(&self, seq: u64) -> Result<(i64, Chain), LogError> {
        if seq == 0 {
            return Ok((0, Chain::genesis()));
        }
        let tip = self.tip();
        if tip.chain.next_seq == seq {
            return Ok((tip.last_offset + 1, tip.chain));
        }
        let at = seq as i64 - 1;
        let (_, high) = self.client.watermarks(&self.kafka_topic, self.id)?;
        if at < high {
            let mut found: Option<(u64, Hash)> = None;
            self.client
                .read_range(&self.kafka_topic, self.id, at, at + 1, |_, v| {
                    let f =
                        ChainFields::decode(v).map_err(|e| self.corrupt(seq - 1, e.to_string()))?;
                    found = Some((f.seq, *f.hash));
                    Ok(())
                })?;
            if let Some((s, hash)) = found
                && s == seq - 1
            {
                return Ok((
                    seq as i64,
                    Chain {
                        next_seq: seq,
                        last_hash: hash,
                    },
                ));
            }
        }
        Ok((0, Chain::genesis()))
    }

    /// The first seq recorded at or after `micros`, or the head's next seq.
    pub fn seq_at_time(self: &Arc<Self>, micros: i64) -> Result<u64, LogError> {
        let tip = if self.writing {
            self.tip()
        } else {
            self.refresh(None)?
        };
        if tip.chain.next_seq == 0 || micros > tip.last_recorded_at {
            return Ok(tip.chain.next_seq);
        }
        // Without records off the chain, offsets are seqs and the broker's time index finds it.
        let from = if tip.last_offset == tip.chain.next_seq as i64 - 1 {
            self.client
                .offset_for_time(&self.kafka_topic, self.id, micros.div_euclid(1000))?
                .unwrap_or(0)
                .min(tip.last_offset) as u64
        } else {
            0
        };
        let mut reader = super::reader::KafkaReader::new(self.clone(), from);
        while let Some(env) = reader.next_ref()? {
            if env.recorded_at >= micros {
                return Ok(env.seq);
            }
            if env.seq + 1 >= tip.chain.next_seq {
                break;
            }
        }
        Ok(tip.chain.next_seq)
    }
}
