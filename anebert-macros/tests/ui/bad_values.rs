#[anebert::model(head = "mask", seq = 0, rotate = "yes")]
pub struct FillMask;

#[anebert::model(head = "mlm", seq = "512")]
pub struct Other;

fn main() {}
