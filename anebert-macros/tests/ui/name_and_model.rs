#[anebert::model(head = "mlm", seq = 64, name = "fill", model = "org/name")]
pub struct FillMask;

fn main() {}
