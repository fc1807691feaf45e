// No build script produced a model and the attribute names none.
#[anebert::model(head = "mlm", seq = 64)]
pub struct FillMask;

// Options that only apply when the attribute converts the model itself.
#[anebert::model(head = "embedding", seq = 64, weights = "fp32")]
pub struct Embedder;

// Required arguments.
#[anebert::model(seq = 64)]
pub struct NoHead;

fn main() {}

// `#[anebert::model]` as the facade re-exports it, without compiling the runtime for this test.
use anebert_macros as anebert;
