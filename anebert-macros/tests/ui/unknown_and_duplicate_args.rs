#[anebert::model(head = "mlm", seq = 64, sequence = 5, seq = 128)]
pub struct FillMask;

fn main() {}
