//! The compiled-module cache, keyed by the SHA-256 of the module's bytes.

use std::collections::{HashMap, VecDeque};

use crate::Module;

/// Modules kept: a policy rollout replaces a handful, so the last 64 covers rollbacks.
const CAPACITY: usize = 64;

/// Compiled modules by digest, oldest evicted first.
#[derive(Default)]
pub(crate) struct ModuleCache {
    modules: HashMap<[u8; 32], Module>,
    order: VecDeque<[u8; 32]>,
}

impl ModuleCache {
    pub(crate) fn get(&mut self, digest: &[u8; 32]) -> Option<Module> {
        let module = self.modules.get(digest)?.clone();
        // Most recently used goes last, so eviction drops what nobody loaded lately.
        if let Some(at) = self.order.iter().position(|d| d == digest) {
            self.order.remove(at);
        }
        self.order.push_back(*digest);
        Some(module)
    }

    pub(crate) fn insert(&mut self, module: Module) {
        let digest = module.sha256();
        if self.modules.insert(digest, module).is_none() {
            self.order.push_back(digest);
        }
        while self.order.len() > CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.modules.remove(&old);
            }
        }
    }
}
