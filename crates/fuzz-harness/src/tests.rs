//! Every harness over random inputs (proptest, stable Rust): what the libFuzzer targets
//! do, in miniature, on every `cargo test`.

use proptest::collection::vec;
use proptest::prelude::any;
use proptest::test_runner::{Config, TestRunner};

use crate::{net, ring, vhost_user};

/// A harness, how many random inputs of up to how many bytes it gets, and what each input
/// starts with.
type Case = (&'static str, fn(&[u8]), u32, &'static [u8], usize);

const CASES: &[Case] = &[
    ("ring", ring::fuzz_ring, 2000, &[], 200),
    ("packed ring", ring::fuzz_packed, 2000, &[], 400),
    (
        "vhost-user messages",
        vhost_user::fuzz_messages,
        500,
        &[],
        600,
    ),
    (
        "vhost-user handler",
        vhost_user::fuzz_handler,
        500,
        &[],
        400,
    ),
    ("gso", net::fuzz_gso, 512, &[], 96),
    // A first byte with bit 0 set: the header and frame are the raw bytes.
    ("gso, raw bytes", net::fuzz_gso, 512, &[1], 400),
    ("csum", net::fuzz_csum, 512, &[], 256),
    // A first byte with bit 0 clear: a built frame, then mutated.
    ("csum, built frames", net::fuzz_csum, 512, &[0], 64),
    ("offload", net::fuzz_offload, 512, &[], 40),
];

/// Runs every harness on random inputs; a failure names the harness and reports the
/// smallest input proptest found.
#[test]
fn every_harness_on_random_inputs() {
    for &(name, harness, cases, prefix, max_len) in CASES {
        let mut runner = TestRunner::new(Config::with_cases(cases));
        let result = runner.run(&vec(any::<u8>(), 0..max_len), |data| {
            let mut input = prefix.to_vec();
            input.extend_from_slice(&data);
            harness(&input);
            Ok(())
        });
        if let Err(e) = result {
            panic!("{name} harness: {e}");
        }
    }
}
