#[anebert::model(head = "mlm", seq = 64, sequence = 5, seq = 128)]
pub struct FillMask;

fn main() {}

// `#[anebert::model]` as the facade re-exports it, without compiling the runtime for this test.
use anebert_macros as anebert;
