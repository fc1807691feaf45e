#[anebert::model(head = "mask", seq = 0, rotate = "yes")]
pub struct FillMask;

#[anebert::model(head = "mlm", seq = "512")]
pub struct Other;

fn main() {}

// `#[anebert::model]` as the facade re-exports it, without compiling the runtime for this test.
use anebert_macros as anebert;
