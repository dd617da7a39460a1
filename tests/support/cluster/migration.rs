//! Moving a slot between primaries, step by step as `redis-cli --cluster
//! reshard` does (SETSLOT IMPORTING / MIGRATING, MIGRATE, SETSLOT NODE), so
//! a test can act between the steps.

use super::{connect, ok, owner_in, query, RedisCluster, READY_TIMEOUT};

impl RedisCluster {
    /// Step 1 of moving `slot`: IMPORTING on `to`, then MIGRATING on `from`.
    pub fn begin_migration(&self, slot: u16, from: u16, to: u16) {
        let (from_id, to_id, slot) = (self.node_id(from), self.node_id(to), slot.to_string());
        ok(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        ok(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
    }

    /// Step 2, repeated: moves up to `batch` keys of `slot` from `from` to
    /// `to` with MIGRATE; returns how many moved (0 when none are left).
    pub fn migrate_keys_batch(&self, slot: u16, from: u16, to: u16, batch: usize) -> usize {
        let (slot, batch) = (slot.to_string(), batch.to_string());
        let keys: Vec<Vec<u8>> = query(from, &["CLUSTER", "GETKEYSINSLOT", &slot, &batch])
            .unwrap_or_else(|e| panic!("CLUSTER GETKEYSINSLOT on {from}: {e}"));
        if keys.is_empty() {
            return 0;
        }
        let mut migrate = redis::cmd("MIGRATE");
        migrate
            .arg("127.0.0.1")
            .arg(to)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys);
        let reply: Result<String, _> = connect(from).and_then(|mut c| migrate.query(&mut c));
        match reply {
            Ok(s) if s == "OK" => keys.len(),
            other => panic!("MIGRATE from {from} to {to}: {other:?}"),
        }
    }

    /// Step 3: moves any keys left, then SETSLOT NODE on the target, the
    /// source and every other primary; waits until all nodes agree.
    pub fn finish_migration(&self, slot: u16, from: u16, to: u16) {
        self.migrate_all_keys(slot, from, to);
        let to_id = self.node_id(to);
        let mut order = vec![to, from];
        order.extend(
            self.primaries()
                .into_iter()
                .filter(|p| ![to, from].contains(p)),
        );
        for port in order {
            ok(
                port,
                &["CLUSTER", "SETSLOT", &slot.to_string(), "NODE", &to_id],
            );
        }
        self.wait_until(READY_TIMEOUT, "the slot's new owner", || {
            self.agreement()?;
            match owner_in(&self.view(self.any_live()), slot) {
                Some(owner) if owner == to => Ok(()),
                owner => Err(format!("slot {slot} owned by {owner:?}")),
            }
        })
    }

    /// From an async test: runs `step` (a migration's, which blocks) on
    /// a blocking thread.
    pub async fn off_runtime(
        self: &std::sync::Arc<Self>,
        step: impl FnOnce(&Self) + Send + 'static,
    ) {
        let cluster = self.clone();
        tokio::task::spawn_blocking(move || step(&cluster))
            .await
            .expect("the migration step");
    }

    /// Step 2 to the end: moves every key of `slot` left on `from`.
    pub fn migrate_all_keys(&self, slot: u16, from: u16, to: u16) {
        while self.migrate_keys_batch(slot, from, to, 100) > 0 {}
    }

    /// Mid-migration with every key moved: `from` answers ASK for them.
    pub fn migrate_keys_only(&self, slot: u16, from: u16, to: u16) {
        self.begin_migration(slot, from, to);
        self.migrate_all_keys(slot, from, to);
    }

    /// `slot`'s owner, and a primary to move it to.
    pub fn owner_and_another(&self, slot: u16) -> (u16, u16) {
        let from = self.primary_for_slot(slot);
        (from, self.another_primary(from))
    }

    /// Moves `slot` and its keys from `from` to `to` in one go.
    pub fn migrate_slot(&self, slot: u16, from: u16, to: u16) {
        self.begin_migration(slot, from, to);
        self.finish_migration(slot, from, to);
    }
}
