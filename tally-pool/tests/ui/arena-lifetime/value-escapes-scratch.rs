// A value allocated in a scratch arena cannot leave the `scratch` closure: the arena is
// reset when the closure returns, so the borrow checker refuses to return or keep anything
// that borrows it. Copy what you need into an owned value instead.
use tally_pool::arena;

fn main() {
    let ids: &mut [u64] = arena::scratch(|bump| bump.alloc_slice_copy(&[1, 2, 3]));
    let mut kept = None;
    arena::scratch(|bump| kept = Some(bump.alloc(42_u64)));
    println!("{ids:?} {kept:?}");
}
