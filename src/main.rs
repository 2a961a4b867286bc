fn main() {
    print!("{}", moltmates::crd::crd_yaml());
}
