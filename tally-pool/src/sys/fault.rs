//! Fault injection: the OS calls of `sys` refuse when a test asks them to, so that tests
//! exercise the error paths the library has for a real refusal.
//!
//! Built only with `RUSTFLAGS="--cfg tally_fault_injection"` (declared in the workspace's
//! `unexpected_cfgs` check-cfg, as `loom` is). A cfg rather than a Cargo feature: features
//! unify, so any crate in a dependency graph could switch a feature on in someone's release
//! build; a cfg is set only by whoever builds, for every crate of that build, and no
//! published build sets it. Without it this module holds one macro, `refused!`, which
//! expands to `false`: each hook is `if false { refusal } else { the call }`, and no code,
//! state or branch of it is left in the binary.
//!
//! With the cfg, every hooked call asks `refused` first. It refuses when a rule of the
//! calling thread ([`refuse`]) or of the process ([`refuse_everywhere`]) says so, and then
//! the call is not made: `errno` is set to the rule's value and the hook returns what the
//! OS returns on failure (`MAP_FAILED`, `-1`), so the code after it takes the path a real
//! refusal takes.
//!
//! | call | where | what a refusal does |
//! |---|---|---|
//! | `mmap` | `map`, `map_aligned`, `Region::remap` (`mremap`) | `MapFailed` (ENOMEM): a pool reports `OutOfMemory`, the depot or a token table maps nothing, the global allocator returns null |
//! | `mbind` | `bind_to_node` | `SysFailed` (ENOMEM): the pool counts a bind failure and goes on |
//! | `madvise` | `Region::discard_from` (`MADV_DONTNEED`), `Region::populate` (`MADV_POPULATE_WRITE`) | nothing is given back, and nothing is counted as given back; prefaulting falls back to touching the pages, or faults nothing in ahead |
//! | `munmap` | `Region`'s drop, the trimmed ends of `map_aligned` | the range stays mapped and is leaked, never used or unmapped again: counted by [`unmap_refusals`]; its pages go back by `MADV_DONTNEED` where that is allowed |
//!
//! `mremap` (the global allocator's large `realloc`) is refused as a `mmap`: both ask the
//! OS for memory.
//!
//! Rules decide from a count of the calls they have seen, never from time, so a failing
//! run repeats: [`When::Chance`] draws from a seeded, stateless generator (SplitMix64 of
//! the seed and the call's number).
//!
//! ```
//! # #[cfg(tally_fault_injection)] {
//! use core::alloc::Layout;
//! use tally_pool::block::{BlockPool, BlockPoolConfig};
//! use tally_pool::fault::{self, Call, When};
//! use tally_pool::PoolError;
//!
//! let config = BlockPoolConfig::new(Layout::new::<u64>()).capacity(0);
//! let pool = BlockPool::new(config).unwrap();
//! {
//!     let refusal = fault::refuse(Call::Mmap, When::Always);
//!     assert!(matches!(pool.allocate(), Err(PoolError::OutOfMemory { .. })));
//!     assert!(refusal.refused() > 0);
//! }
//! // The OS says yes again, and so does the pool.
//! let block = pool.allocate().unwrap();
//! // SAFETY: allocated above, freed once.
//! unsafe { pool.free(block) }.unwrap();
//! # }
//! ```

use core::sync::atomic::{AtomicU64, AtomicUsize};

/// A hook before a raw OS call: `refused!(Mmap)` is `true` when the call must not be made
/// (see the module docs). Without `cfg(tally_fault_injection)` it is the literal `false`.
#[cfg(not(tally_fault_injection))]
macro_rules! refused {
    ($call:ident) => {
        false
    };
}

/// A hook before a raw OS call: `refused!(Mmap)` is `true` when the call must not be made,
/// with `errno` already set to the refusal's (see the module docs).
#[cfg(tally_fault_injection)]
macro_rules! refused {
    ($call:ident) => {
        $crate::sys::fault::refused($crate::sys::fault::Call::$call)
    };
}

pub(super) use refused;

/// Ranges whose `munmap` the OS refused, and their bytes (see `mem::Region`'s drop):
/// leaked address space, counted here because nothing else can see it. Counted with or
/// without `cfg(tally_fault_injection)`, which lets tests read them (`unmap_refusals`).
#[cfg_attr(miri, allow(dead_code))]
static UNMAP_REFUSED: AtomicU64 = AtomicU64::new(0);
#[cfg_attr(miri, allow(dead_code))]
static UNMAP_REFUSED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Counts `len` bytes whose `munmap` the OS refused.
#[cfg(not(miri))]
pub(super) fn count_unmap_refusal(len: usize) {
    use core::sync::atomic::Ordering::Relaxed;
    UNMAP_REFUSED.fetch_add(1, Relaxed);
    UNMAP_REFUSED_BYTES.fetch_add(len, Relaxed);
}

#[cfg(tally_fault_injection)]
pub use imp::*;

#[cfg(all(tally_fault_injection, not(target_os = "linux")))]
compile_error!("`--cfg tally_fault_injection` sets `errno` the Linux way and needs Linux");

#[cfg(tally_fault_injection)]
mod imp {
    use std::cell::RefCell;
    use std::marker::PhantomData;
    use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

    /// An OS call that [`refuse`] can make fail.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Call {
        /// `mmap`: every new mapping (chunks, depot segments, token tables, the registry).
        Mmap,
        /// `mbind`: binding a chunk to its node (real topologies only; synthetic ones
        /// record bindings without a call).
        Mbind,
        /// `madvise`: giving reclaimed pages back (`MADV_DONTNEED`) and faulting pages in
        /// (`MADV_POPULATE_WRITE`).
        Madvise,
        /// `munmap`: a dropped region, and the trimmed ends of an aligned mapping.
        Munmap,
    }

    impl Call {
        /// Every call that can be refused.
        ///
        /// ```
        /// # #[cfg(tally_fault_injection)] {
        /// use tally_pool::fault::Call;
        /// assert_eq!(Call::ALL.len(), 4);
        /// # }
        /// ```
        pub const ALL: [Call; 4] = [Call::Mmap, Call::Mbind, Call::Madvise, Call::Munmap];

        /// The `errno` a refusal reports unless [`Injection::with_errno`] says otherwise:
        /// ENOMEM for `mmap`, `mbind` and `madvise` (out of memory, the refusal all three
        /// document), EINVAL for `munmap`.
        ///
        /// ```
        /// # #[cfg(tally_fault_injection)] {
        /// use tally_pool::fault::Call;
        /// assert_eq!(Call::Mmap.default_errno(), libc::ENOMEM);
        /// # }
        /// ```
        pub const fn default_errno(self) -> i32 {
            match self {
                Call::Mmap | Call::Mbind | Call::Madvise => libc::ENOMEM,
                Call::Munmap => libc::EINVAL,
            }
        }

        const fn index(self) -> usize {
            self as usize
        }
    }

    /// Which of the calls a rule sees it refuses, counting from 1 at the first call after
    /// the rule was made.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum When {
        /// Only the `n`-th call (1 is the first).
        Nth(u64),
        /// The `n`-th call and every one after it.
        From(u64),
        /// Every call.
        Always,
        /// Each call with probability `per_million / 1_000_000`, drawn from `seed` and the
        /// call's number: the same seed refuses the same call numbers in every run.
        Chance {
            /// Refusals per million calls (1 % is 10,000).
            per_million: u32,
            /// The generator's seed.
            seed: u64,
        },
    }

    impl When {
        /// Whether the `n`-th call (from 1) is refused.
        fn refuses(self, n: u64) -> bool {
            match self {
                When::Nth(k) => n == k,
                When::From(k) => n >= k,
                When::Always => true,
                When::Chance { per_million, seed } => {
                    splitmix64(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % 1_000_000
                        < u64::from(per_million)
                }
            }
        }
    }

    /// SplitMix64's output function: a well-mixed 64-bit value from any input.
    fn splitmix64(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// One rule: which call, when, with which `errno`, and what it has seen.
    #[derive(Debug)]
    struct Rule {
        call: Call,
        when: When,
        errno: AtomicI32,
        seen: AtomicU64,
        refused: AtomicU64,
    }

    impl Rule {
        /// Counts a call of `call` and tells whether to refuse it, with which `errno`.
        fn judge(&self, call: Call) -> Option<i32> {
            if self.call != call {
                return None;
            }
            let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
            if !self.when.refuses(n) {
                return None;
            }
            self.refused.fetch_add(1, Ordering::Relaxed);
            Some(self.errno.load(Ordering::Relaxed))
        }
    }

    /// Where a rule applies.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Scope {
        Thread,
        Process,
    }

    std::thread_local! {
        /// The rules of the calling thread.
        static THREAD_RULES: RefCell<Vec<Arc<Rule>>> = const { RefCell::new(Vec::new()) };
    }

    /// The rules of every thread, and how many there are (read without the lock).
    static PROCESS_RULES: Mutex<Vec<Arc<Rule>>> = Mutex::new(Vec::new());
    static PROCESS_RULE_COUNT: AtomicUsize = AtomicUsize::new(0);

    /// Calls seen and refused since the process started, by [`Call::index`].
    static SEEN: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
    static REFUSED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

    fn process_rules() -> MutexGuard<'static, Vec<Arc<Rule>>> {
        PROCESS_RULES.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A rule in force until this value is dropped: then the OS says yes again (to what
    /// this rule refused). Not `Send`: a rule of one thread ends on that thread.
    #[derive(Debug)]
    #[must_use = "the rule ends when the injection is dropped"]
    pub struct Injection {
        rule: Arc<Rule>,
        scope: Scope,
        _one_thread: PhantomData<*const ()>,
    }

    impl Injection {
        /// Calls of the rule's kind that the rule has seen (refused or not).
        pub fn calls(&self) -> u64 {
            self.rule.seen.load(Ordering::Relaxed)
        }

        /// Calls the rule has refused.
        pub fn refused(&self) -> u64 {
            self.rule.refused.load(Ordering::Relaxed)
        }

        /// Reports `errno` for the refusals from now on, instead of
        /// [`Call::default_errno`].
        ///
        /// ```
        /// # #[cfg(tally_fault_injection)] {
        /// use tally_pool::fault::{self, Call, When};
        /// let rule = fault::refuse(Call::Mbind, When::Always).with_errno(libc::EPERM);
        /// assert_eq!(rule.refused(), 0);
        /// # }
        /// ```
        pub fn with_errno(self, errno: i32) -> Self {
            self.rule.errno.store(errno, Ordering::Relaxed);
            self
        }
    }

    impl Drop for Injection {
        fn drop(&mut self) {
            let mine = |r: &Arc<Rule>| !Arc::ptr_eq(r, &self.rule);
            match self.scope {
                Scope::Thread => {
                    let _ = THREAD_RULES.try_with(|rules| {
                        if let Ok(mut rules) = rules.try_borrow_mut() {
                            rules.retain(mine);
                        }
                    });
                }
                Scope::Process => {
                    let mut rules = process_rules();
                    rules.retain(mine);
                    PROCESS_RULE_COUNT.store(rules.len(), Ordering::Relaxed);
                }
            }
        }
    }

    fn new_rule(call: Call, when: When) -> Arc<Rule> {
        Arc::new(Rule {
            call,
            when,
            errno: AtomicI32::new(call.default_errno()),
            seen: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Refuses `call` on the calling thread, `when` says, until the returned value drops.
    /// Other threads' calls are neither refused nor counted by it.
    ///
    /// ```
    /// # #[cfg(tally_fault_injection)] {
    /// use core::alloc::Layout;
    /// use tally_pool::block::{BlockPool, BlockPoolConfig};
    /// use tally_pool::fault::{self, Call, When};
    ///
    /// let refusal = fault::refuse(Call::Mmap, When::Nth(1));
    /// let config = BlockPoolConfig::new(Layout::new::<u64>()).capacity(1);
    /// assert!(BlockPool::new(config.clone()).is_err());
    /// assert!(BlockPool::new(config).is_ok(), "only the first mmap is refused");
    /// assert_eq!(refusal.refused(), 1);
    /// # }
    /// ```
    pub fn refuse(call: Call, when: When) -> Injection {
        let rule = new_rule(call, when);
        // A thread whose locals are being destroyed has no rules to add to.
        let _ = THREAD_RULES.try_with(|rules| {
            if let Ok(mut rules) = rules.try_borrow_mut() {
                rules.push(Arc::clone(&rule));
            }
        });
        Injection {
            rule,
            scope: Scope::Thread,
            _one_thread: PhantomData,
        }
    }

    /// Refuses `call` on every thread, `when` says, counting the calls of all threads
    /// together, until the returned value drops. Tests that use it must not run beside
    /// tests that need the OS to say yes.
    ///
    /// ```
    /// # #[cfg(tally_fault_injection)] {
    /// use tally_pool::fault::{self, Call, When};
    /// let refusal = fault::refuse_everywhere(Call::Munmap, When::Nth(3));
    /// assert_eq!(refusal.calls(), 0);
    /// # }
    /// ```
    pub fn refuse_everywhere(call: Call, when: When) -> Injection {
        let rule = new_rule(call, when);
        // Nothing is allocated while the lock is held: the global allocator may be this
        // crate's, whose `mmap` asks `refused`, which takes the same lock. A list that is
        // full is replaced by a larger one allocated outside the lock.
        loop {
            let mut rules = process_rules();
            if rules.len() < rules.capacity() {
                rules.push(Arc::clone(&rule));
                PROCESS_RULE_COUNT.store(rules.len(), Ordering::Relaxed);
                break;
            }
            let want = rules.len() * 2 + 4;
            drop(rules);
            let mut larger = Vec::with_capacity(want);
            let mut rules = process_rules();
            if rules.len() <= larger.capacity() {
                larger.extend(rules.drain(..));
                core::mem::swap(&mut *rules, &mut larger);
            }
            drop(rules);
            // `larger` (now the old, empty list) is freed here, outside the lock.
        }
        Injection {
            rule,
            scope: Scope::Process,
            _one_thread: PhantomData,
        }
    }

    /// Calls of `call` the process has made or had refused, and how many of them were
    /// refused, since it started.
    ///
    /// ```
    /// # #[cfg(tally_fault_injection)] {
    /// use tally_pool::fault::{self, Call};
    /// let (seen, refused) = fault::totals(Call::Mmap);
    /// assert!(refused <= seen);
    /// # }
    /// ```
    pub fn totals(call: Call) -> (u64, u64) {
        let i = call.index();
        let load = |a: &[AtomicU64; 4]| a.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
        (load(&SEEN), load(&REFUSED))
    }

    /// Ranges whose `munmap` the OS refused since the process started: how many, and
    /// their bytes. Such a range stays mapped and is never used or unmapped again; the
    /// pages of a whole region go back by `MADV_DONTNEED` where the OS allows, so what it
    /// holds of memory is only address space (the process-wide mapped count keeps any bytes
    /// that could not be given back).
    ///
    /// ```
    /// # #[cfg(tally_fault_injection)] {
    /// let (ranges, bytes) = tally_pool::fault::unmap_refusals();
    /// assert!(ranges > 0 || bytes == 0);
    /// # }
    /// ```
    pub fn unmap_refusals() -> (u64, usize) {
        (
            super::UNMAP_REFUSED.load(Ordering::Relaxed),
            super::UNMAP_REFUSED_BYTES.load(Ordering::Relaxed),
        )
    }

    /// The hook behind `refused!`: counts a call of `call` and tells whether to refuse it;
    /// if so, sets `errno` to the refusal's.
    pub(in crate::sys) fn refused(call: Call) -> bool {
        let i = call.index();
        if let Some(c) = SEEN.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        // Every rule of the call sees it, refusing or not, so counts stay exact.
        let mut errno = None;
        let _ = THREAD_RULES.try_with(|rules| {
            if let Ok(rules) = rules.try_borrow() {
                for rule in rules.iter() {
                    errno = rule.judge(call).or(errno);
                }
            }
        });
        if PROCESS_RULE_COUNT.load(Ordering::Relaxed) > 0 {
            for rule in process_rules().iter() {
                errno = rule.judge(call).or(errno);
            }
        }
        let Some(errno) = errno else {
            return false;
        };
        if let Some(c) = REFUSED.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `__errno_location` takes no arguments and only returns the address of
        // the calling thread's `errno`.
        let location = unsafe { libc::__errno_location() };
        // SAFETY: that address is a valid, aligned `int` for the thread's lifetime, which
        // only this thread uses; writing it is what a failing call does.
        unsafe { *location = errno };
        true
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The calling thread's `errno`, as a failing call left it.
        fn errno() -> i32 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        }

        #[test]
        fn nth_refuses_that_call_only() {
            let rule = refuse(Call::Mbind, When::Nth(2));
            let got: Vec<bool> = (0..4).map(|_| refused(Call::Mbind)).collect();
            assert_eq!(got, [false, true, false, false]);
            assert_eq!((rule.calls(), rule.refused()), (4, 1));
            // Other calls are not the rule's.
            assert!(!refused(Call::Mmap));
            assert_eq!(rule.calls(), 4);
        }

        #[test]
        fn from_refuses_every_call_after() {
            let rule = refuse(Call::Madvise, When::From(3));
            let got: Vec<bool> = (0..5).map(|_| refused(Call::Madvise)).collect();
            assert_eq!(got, [false, false, true, true, true]);
            assert_eq!(rule.refused(), 3);
            drop(rule);
            assert!(!refused(Call::Madvise), "the rule ended");
        }

        #[test]
        fn a_refusal_sets_errno() {
            let _rule = refuse(Call::Munmap, When::Always);
            assert!(refused(Call::Munmap));
            assert_eq!(errno(), libc::EINVAL);
            let _rule = refuse(Call::Mmap, When::Always).with_errno(libc::EAGAIN);
            assert!(refused(Call::Mmap));
            assert_eq!(errno(), libc::EAGAIN);
        }

        #[test]
        fn chance_is_near_its_rate_and_repeats_with_its_seed() {
            let draw = |seed| {
                let _rule = refuse(
                    Call::Mmap,
                    When::Chance {
                        per_million: 10_000,
                        seed,
                    },
                );
                (0..100_000)
                    .map(|_| refused(Call::Mmap))
                    .collect::<Vec<bool>>()
            };
            let a = draw(7);
            let hits = a.iter().filter(|&&r| r).count();
            // 1 % of 100,000 is 1,000; the standard deviation is about 31.
            assert!((850..1150).contains(&hits), "{hits} refusals");
            assert_eq!(a, draw(7), "the same seed refuses the same calls");
            assert_ne!(a, draw(8), "another seed refuses other calls");
            let none = When::Chance {
                per_million: 0,
                seed: 1,
            };
            let all = When::Chance {
                per_million: 1_000_000,
                seed: 1,
            };
            assert!((1..1000).all(|n| !none.refuses(n) && all.refuses(n)));
        }

        #[test]
        fn a_thread_rule_is_that_threads_alone() {
            let rule = refuse(Call::Mbind, When::Always);
            let other = std::thread::spawn(|| refused(Call::Mbind)).join().unwrap();
            assert!(!other, "another thread's call is not refused");
            assert_eq!(rule.calls(), 0, "nor counted");
            assert!(refused(Call::Mbind));
        }

        #[test]
        fn totals_count_seen_and_refused() {
            let (seen, refused_before) = totals(Call::Mbind);
            let _rule = refuse(Call::Mbind, When::Always);
            assert!(refused(Call::Mbind));
            let (seen_after, refused_after) = totals(Call::Mbind);
            // Other tests may run meanwhile: at least this thread's call is in.
            assert!(seen_after > seen && refused_after > refused_before);
        }

        #[test]
        fn a_refused_mmap_is_a_map_failure_with_its_errno() {
            let _rule = refuse(Call::Mmap, When::Always);
            assert_eq!(
                crate::sys::map(4096).err().map(|e| e.errno),
                Some(libc::ENOMEM)
            );
            assert!(crate::sys::map_aligned(1 << 20, 1 << 20).is_err());
        }

        #[test]
        fn a_refused_munmap_leaks_the_region_and_counts_it() {
            let r = crate::sys::map(3 * 4096).unwrap();
            let (ranges, bytes) = unmap_refusals();
            {
                let _rule = refuse(Call::Munmap, When::Always);
                drop(r);
            }
            let (ranges_after, bytes_after) = unmap_refusals();
            assert!(ranges_after > ranges);
            assert!(bytes_after >= bytes + 3 * 4096);
        }

        #[test]
        fn a_refused_trim_of_an_aligned_map_leaks_only_the_trimmed_ends() {
            let (ranges, _) = unmap_refusals();
            let r = {
                let _rule = refuse(Call::Munmap, When::Always);
                crate::sys::map_aligned(1 << 20, 1 << 20).unwrap()
            };
            assert_eq!(r.ptr().as_ptr() as usize % (1 << 20), 0);
            assert_eq!(r.len(), 1 << 20);
            // One or two ends (head, tail), at least one of which is not empty.
            assert!(unmap_refusals().0 > ranges);
        }
    }
}
