// A repo id that could escape the cache is refused before any network access.
#[anebert::model(head = "mlm", seq = 64, model = "org/name/../../etc")]
pub struct FillMask;

// A local directory that is not a checkpoint (absolute, so the message names no machine path).
#[anebert::model(head = "mlm", seq = 64, model = "/nonexistent/checkpoint")]
pub struct Local;

fn main() {}

// `#[anebert::model]` as the facade re-exports it, without compiling the runtime for this test.
use anebert_macros as anebert;
