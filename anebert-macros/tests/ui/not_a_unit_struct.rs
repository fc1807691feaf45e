#[anebert::model(head = "mlm", seq = 64)]
pub struct FillMask {
    x: u32,
}

#[anebert::model(head = "mlm", seq = 64)]
pub fn not_a_struct() {}

fn main() {}

// `#[anebert::model]` as the facade re-exports it, without compiling the runtime for this test.
use anebert_macros as anebert;
