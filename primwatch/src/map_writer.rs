//! Stage 4: writes the desired `names` entries into the BPF map.
//!
//! A BPF hash map update swaps a whole element under RCU, so a query sees either the
//! old or the new records of a name, never a mix; entries are only rewritten when
//! their bytes changed, and names no longer wanted are deleted after the others are in.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use aya::maps::{HashMap, MapData};
use primwatch_common::{NameKey, NameRecords};

pub struct NameMapWriter {
    map: HashMap<MapData, NameKey, NameRecords>,
    /// What we last wrote, as bytes, so unchanged entries are not rewritten.
    written: BTreeMap<u64, Vec<u8>>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub written: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

fn as_bytes(records: &NameRecords) -> &[u8] {
    // SAFETY: NameRecords is repr(C) plain data with explicit padding fields.
    unsafe {
        std::slice::from_raw_parts(
            (records as *const NameRecords).cast::<u8>(),
            std::mem::size_of::<NameRecords>(),
        )
    }
}

impl NameMapWriter {
    pub fn new(map: HashMap<MapData, NameKey, NameRecords>) -> Self {
        NameMapWriter { map, written: BTreeMap::new() }
    }

    /// Writes one entry (one atomic element replacement in the kernel).
    pub fn insert(&mut self, key: &NameKey, records: &NameRecords) -> Result<()> {
        self.map
            .insert(key, records, 0)
            .with_context(|| format!("writing name hash {:#018x} to the names map", key.name_hash))?;
        self.written.insert(key.name_hash, as_bytes(records).to_vec());
        Ok(())
    }

    pub fn sync(&mut self, desired: &BTreeMap<NameKey, NameRecords>) -> Result<SyncStats> {
        let mut stats = SyncStats::default();
        for (key, records) in desired {
            let bytes = as_bytes(records);
            if self.written.get(&key.name_hash).is_some_and(|old| old == bytes) {
                stats.unchanged += 1;
                continue;
            }
            self.insert(key, records)?;
            stats.written += 1;
        }
        // Also catch entries left by anyone else (a previous run) that we do not want.
        let present: Vec<NameKey> = self.map.keys().filter_map(|k| k.ok()).collect();
        for key in present {
            if !desired.contains_key(&key) {
                self.map
                    .remove(&key)
                    .with_context(|| format!("deleting name hash {:#018x}", key.name_hash))?;
                self.written.remove(&key.name_hash);
                stats.deleted += 1;
            }
        }
        Ok(stats)
    }
}
