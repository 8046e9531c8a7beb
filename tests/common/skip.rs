//! What a test does when the OS refuses what it needs (memory policies, affinity, a sysfs
//! node tree): a note, except where the environment variable `CI` is `true`. The CI machine
//! grants all of it, so a skip there would hide a failure: it fails instead.

/// Notes that the calling test skips a check because of `why`; panics where `CI` is `true`.
#[track_caller]
pub(crate) fn skip(why: impl std::fmt::Display) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("skipped, which CI=true forbids: {why}");
    }
    println!("skipped: {why}");
}
