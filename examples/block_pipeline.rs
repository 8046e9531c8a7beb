//! A two-stage market-data pipeline on the block allocator.
//!
//! A feed thread allocates 64-byte quote blocks from one `BlockPool`, fills them and sends
//! them through a bounded queue; a strategy thread reads each quote, keeps a running
//! mid-price, and frees the block on its own thread. At the end it prints the throughput
//! and the pool's statistics, then reclaims the pool's memory. It exits non-zero if either
//! stage fails, the strategy thread's panic included (`--panic-at N` makes it panic at
//! quote `N`, to check that).
//!
//! ```sh
//! cargo run --release --example block_pipeline                   # 5,000,000 quotes
//! cargo run --release --example block_pipeline -- --messages 1000
//! cargo run --release --example block_pipeline -- --messages 1000 --panic-at 500  # exits 1
//! ```

use std::alloc::Layout;
use std::fmt;
use std::process::ExitCode;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel};
use tally_pool::PoolError;

/// The payload of one block.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Quote {
    seq: u64,
    instrument: u64,
    bid: i64,
    ask: i64,
    bid_qty: u32,
    ask_qty: u32,
    ts: u64,
    _pad: [u64; 2],
}

/// A block pointer that crosses threads; the queue transfers ownership of the block.
struct Block(NonNull<u8>);

// SAFETY: a `Block` is the only handle to its pool block; sending it moves that ownership
// to the receiving thread, and `Quote` is plain data.
unsafe impl Send for Block {}

/// What to run.
struct Args {
    messages: u64,
    /// The quote at which the strategy thread panics, if any.
    panic_at: Option<u64>,
}

fn number(flag: &str, value: Option<String>) -> Result<u64, String> {
    let v = value.ok_or(format!("{flag} needs a number"))?;
    v.replace('_', "")
        .parse()
        .map_err(|e| format!("{flag} {v}: {e}"))
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        messages: 5_000_000,
        panic_at: None,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--messages" => parsed.messages = number("--messages", args.next())?,
            "--panic-at" => parsed.panic_at = Some(number("--panic-at", args.next())?),
            "-h" | "--help" => {
                return Err("usage: block_pipeline [--messages N] [--panic-at N]".into())
            }
            other => return Err(format!("unknown argument `{other}`; try --help")),
        }
    }
    Ok(parsed)
}

/// Why a run failed.
#[derive(Debug)]
enum Failure {
    Pool(PoolError),
    /// The strategy thread panicked; the panic message was printed when it did.
    StrategyPanicked,
}

impl From<PoolError> for Failure {
    fn from(e: PoolError) -> Self {
        Self::Pool(e)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pool(e) => write!(f, "{e}"),
            Self::StrategyPanicked => write!(f, "the strategy thread panicked"),
        }
    }
}

fn run(Args { messages, panic_at }: Args) -> Result<(), Failure> {
    let pool = BlockPool::new(
        BlockPoolConfig::new(Layout::new::<Quote>())
            .name("quotes")
            .capacity(4096)
            .max_capacity(1 << 20)
            .guard(GuardLevel::Canary),
    )?;
    let queue = Arc::new(ArrayQueue::<Block>::new(1024));
    let start = Instant::now();

    let consumer = {
        let (pool, queue) = (pool.clone(), Arc::clone(&queue));
        std::thread::spawn(move || -> Result<(u64, i64), PoolError> {
            let (mut seen, mut mid_sum) = (0u64, 0i64);
            while seen < messages {
                let Some(Block(ptr)) = queue.pop() else {
                    std::thread::yield_now();
                    continue;
                };
                // SAFETY: the feed wrote a whole `Quote` into this block before sending it,
                // and the block is 64-byte aligned (the pool's layout is `Quote`'s).
                let q = unsafe { ptr.cast::<Quote>().as_ptr().read() };
                if panic_at == Some(q.seq) {
                    #[allow(clippy::panic)] // the failure `--panic-at` asks for
                    {
                        panic!("asked to panic at quote {}", q.seq);
                    }
                }
                mid_sum = mid_sum.wrapping_add((q.bid + q.ask) / 2);
                seen += 1;
                // SAFETY: the feed allocated this block and gave it up by sending it; this
                // thread, its only holder, frees it once and does not use it afterwards.
                unsafe { pool.free(ptr) }?;
            }
            Ok((seen, mid_sum))
        })
    };

    'feed: for seq in 0..messages {
        let ptr = pool.allocate()?;
        let quote = Quote {
            seq,
            instrument: seq % 64,
            bid: 10_000 + (seq % 7) as i64,
            ask: 10_002 + (seq % 5) as i64,
            bid_qty: 100,
            ask_qty: 200,
            ts: seq,
            _pad: [0; 2],
        };
        // SAFETY: the block is fresh, sized and aligned for a `Quote` (the pool's layout).
        unsafe { ptr.cast::<Quote>().as_ptr().write(quote) };
        let mut item = Block(ptr);
        while let Err(back) = queue.push(item) {
            // The strategy stops early only if it fails: the queue would stay full.
            if consumer.is_finished() {
                // SAFETY: allocated above and never sent, so this thread still owns it.
                unsafe { pool.free(back.0) }?;
                break 'feed;
            }
            item = back;
            std::thread::yield_now();
        }
    }
    let (seen, mid_sum) = consumer.join().map_err(|_| Failure::StrategyPanicked)??;
    let elapsed = start.elapsed();
    let stats = pool.stats();
    println!("quotes         {seen}");
    println!("elapsed        {:.3} s", elapsed.as_secs_f64());
    println!(
        "throughput     {:.1} M quotes/s",
        seen as f64 / elapsed.as_secs_f64() / 1e6
    );
    println!(
        "per quote      {:.1} ns",
        elapsed.as_nanos() as f64 / seen.max(1) as f64
    );
    println!("mid checksum   {mid_sum}");
    println!("pool stats     {stats:#?}");
    let reclaimed = pool.reclaim();
    println!(
        "reclaimed      {reclaimed} bytes, chunks left {}",
        pool.stats().chunks
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
