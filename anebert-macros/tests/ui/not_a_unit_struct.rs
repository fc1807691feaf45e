#[anebert::model(head = "mlm", seq = 64)]
pub struct FillMask {
    x: u32,
}

#[anebert::model(head = "mlm", seq = 64)]
pub fn not_a_struct() {}

fn main() {}
