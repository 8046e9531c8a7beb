//! Tests of the registry (`registry.rs`).

use super::*;
use crate::stats::source::Counters;

struct Fixed(u64);
impl Source for Fixed {
    fn snapshot(&self) -> ComponentSnapshot {
        ComponentSnapshot {
            live_bytes: self.0,
            counters: Counters {
                exhausted: self.0,
                ..Counters::default()
            },
            ..ComponentSnapshot::default()
        }
    }
}

fn listed(id: ComponentId) -> bool {
    members().iter().any(|m| m.id == id)
}

/// Waits until no one holds the value behind `weak`. Tests run in parallel, and another
/// test's listing holds every live source it found until it drops its list: a source
/// a test drops is gone only once that list is dropped too.
fn wait_until_gone<T>(weak: &Weak<T>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while weak.strong_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "still held after 30 s"
        );
        std::thread::yield_now();
    }
}

fn weak_of(arc: &Arc<Fixed>) -> Weak<dyn Source> {
    let weak: Weak<dyn Source> = Arc::downgrade(arc) as _;
    weak
}

#[test]
fn register_then_unregister_on_drop() {
    let source = Arc::new(Fixed(7));
    let registration = register("reg-drop", Kind::Block, weak_of(&source));
    let id = registration.id();
    let me = members().into_iter().find(|m| m.id == id).unwrap();
    assert_eq!(&*me.name, "reg-drop");
    assert_eq!(me.kind, Kind::Block);
    assert_eq!(me.source.source().snapshot().live_bytes, 7);
    drop(me);
    drop(registration);
    assert!(!listed(id));
}

#[test]
fn sources_are_the_members_sources_without_the_dead_and_skipped_pools() {
    // Values no other test's source reports: the tests share the registry.
    let (a, b) = (Arc::new(Fixed(1_000_011)), Arc::new(Fixed(1_000_012)));
    let _ra = register("reg-sources-a", Kind::Typed, weak_of(&a));
    let _rb = register("reg-sources-b", Kind::Block, weak_of(&b));
    let pool: &'static Fixed = Box::leak(Box::new(Fixed(1_000_013)));
    register_static_pool("reg-sources-pool", pool);
    let block_pool = Arc::new(Fixed(1_000_014));
    let _rp = register_pool("reg-sources-block-pool", Kind::Block, weak_of(&block_pool));
    let bytes = |held: &Held| held.source().snapshot().live_bytes;
    // Sorted: another test's unregistering may move entries.
    let ours = |v: Vec<u64>| -> Vec<u64> {
        let mut v: Vec<u64> = v
            .into_iter()
            .filter(|b| (1_000_011..=1_000_014).contains(b))
            .collect();
        v.sort_unstable();
        v
    };
    let sources = |skip| ours(try_sources(skip).unwrap().iter().map(bytes).collect());
    let all = [1_000_011, 1_000_012, 1_000_013, 1_000_014];
    assert_eq!(sources(false), all);
    // Only what the crate listed as its pools is skipped: not a source a user listed
    // as a typed or block pool.
    assert_eq!(sources(true), [1_000_011, 1_000_012]);
    // Another test's list of members may still hold `b` for a while.
    let gone = Arc::downgrade(&b);
    drop(b);
    wait_until_gone(&gone);
    let members = try_members().unwrap();
    let of_members = ours(members.iter().map(|m| bytes(&m.source)).collect());
    assert_eq!(of_members, [1_000_011, 1_000_013, 1_000_014]);
    assert_eq!(sources(false), of_members);
}

#[test]
fn dead_sources_are_pruned() {
    let source = Arc::new(Fixed(1));
    let id = register("reg-prune", Kind::Arena, weak_of(&source)).leak();
    assert!(listed(id));
    let gone = Arc::downgrade(&source);
    drop(source);
    wait_until_gone(&gone);
    assert!(!listed(id));
    assert!(!lock(&REGISTRY).iter().any(|e| e.id == id));
}

#[test]
fn ids_are_unique_names_need_not_be() {
    let a = Arc::new(Fixed(1));
    let b = Arc::new(Fixed(2));
    let ra = register("twin", Kind::Typed, weak_of(&a));
    let rb = register("twin", Kind::Typed, weak_of(&b));
    assert_ne!(ra.id(), rb.id());
    assert!(listed(ra.id()) && listed(rb.id()));
}

#[test]
fn static_members_stay() {
    let leaked: &'static Fixed = Box::leak(Box::new(Fixed(3)));
    let id = register_static("reg-static", Kind::Typed, leaked);
    assert!(listed(id));
    assert!(listed(id));
}

#[test]
fn a_source_dropped_by_the_reader_unregisters_without_deadlock() {
    // The registration lives inside the source: dropping the last Arc (held by
    // `members()`'s result) re-enters the registry.
    struct SelfRegistered(Mutex<Option<Registration>>);
    impl Source for SelfRegistered {
        fn snapshot(&self) -> ComponentSnapshot {
            ComponentSnapshot::default()
        }
    }
    let source = Arc::new(SelfRegistered(Mutex::new(None)));
    let weak: Weak<dyn Source> = Arc::downgrade(&source) as _;
    let registration = register("reg-self", Kind::Arena, weak);
    let id = registration.id();
    *lock(&source.0) = Some(registration);
    let held = members();
    let gone = Arc::downgrade(&source);
    drop(source); // the last strong reference is now in `held` (or another test's list)
    drop(held); // drops the Registration: must not deadlock
    wait_until_gone(&gone);
    assert!(!listed(id));
}

#[test]
fn exhausted_is_counted_since_the_last_call() {
    let source = Arc::new(Fixed(0));
    let registration = register("reg-exhausted", Kind::Block, weak_of(&source));
    let id = registration.id();
    assert_eq!(exhausted_since_last(&[(id, 5)], false), vec![5]);
    assert_eq!(exhausted_since_last(&[(id, 5)], true), vec![5]);
    assert_eq!(exhausted_since_last(&[(id, 5)], true), vec![0]);
    assert_eq!(exhausted_since_last(&[(id, 8)], true), vec![3]);
    // A counter that went back (a pool rebuilt) never gives a negative count.
    assert_eq!(exhausted_since_last(&[(id, 2)], true), vec![0]);
    assert_eq!(
        exhausted_since_last(&[(ComponentId(u64::MAX), 4)], true),
        vec![4]
    );
}

#[test]
fn peaks_are_the_highest_live_count_any_snapshot_saw() {
    let source = Arc::new(Fixed(0));
    let registration = register("reg-peak", Kind::Typed, weak_of(&source));
    let id = registration.id();
    let live = |n: u64| ComponentSnapshot {
        live_objects: n,
        ..ComponentSnapshot::default()
    };
    let mut seen = vec![live(40)];
    fill_peaks(&[id], &mut seen);
    assert_eq!(seen[0].peak_live_objects, 40);
    let mut seen = vec![live(10)];
    fill_peaks(&[id], &mut seen);
    assert_eq!((seen[0].live_objects, seen[0].peak_live_objects), (10, 40));
    let mut seen = vec![live(70)];
    fill_peaks(&[id], &mut seen);
    assert_eq!(seen[0].peak_live_objects, 70);
    // A source's own, higher figure wins, and is remembered.
    let mut own = live(5);
    own.peak_live_objects = 100;
    let mut seen = vec![own];
    fill_peaks(&[id], &mut seen);
    assert_eq!(seen[0].peak_live_objects, 100);
    let mut seen = vec![live(0)];
    fill_peaks(&[id], &mut seen);
    assert_eq!(seen[0].peak_live_objects, 100);
    // Unknown ids keep their own figures.
    let mut seen = vec![live(3)];
    fill_peaks(&[ComponentId(u64::MAX)], &mut seen);
    assert_eq!(seen[0].peak_live_objects, 3);
}

#[test]
fn members_found_by_id_after_removals_reorder_the_list() {
    let source = Arc::new(Fixed(0));
    let mut held: Vec<Registration> = (0..8)
        .map(|i| register(format!("reg-order-{i}"), Kind::Block, weak_of(&source)))
        .collect();
    // Removals move the last member into the gap: the list is no longer in id order.
    drop(held.remove(1));
    drop(held.remove(4));
    let ids: Vec<ComponentId> = held.iter().map(Registration::id).rev().collect();
    let current: Vec<(ComponentId, u64)> = ids.iter().map(|&id| (id, id.get())).collect();
    assert_eq!(
        exhausted_since_last(&current, true),
        ids.iter().map(|id| id.get()).collect::<Vec<_>>()
    );
    let more: Vec<(ComponentId, u64)> = ids.iter().map(|&id| (id, id.get() + 2)).collect();
    assert_eq!(exhausted_since_last(&more, true), vec![2; ids.len()]);
    let mut seen: Vec<ComponentSnapshot> = ids
        .iter()
        .map(|id| ComponentSnapshot {
            live_objects: id.get(),
            ..ComponentSnapshot::default()
        })
        .collect();
    fill_peaks(&ids, &mut seen);
    let mut zero = vec![ComponentSnapshot::default(); ids.len()];
    fill_peaks(&ids, &mut zero);
    for (id, snapshot) in ids.iter().zip(&zero) {
        assert_eq!(snapshot.peak_live_objects, id.get());
    }
}

#[test]
fn kind_names() {
    for (kind, name) in [
        (Kind::Typed, "typed"),
        (Kind::Block, "block"),
        (Kind::Allocator, "allocator"),
        (Kind::Arena, "arena"),
        (Kind::User, "user"),
    ] {
        assert_eq!(kind.to_string(), name);
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
    }
}
