//! `moltmate-agent`: the agent alone (and the exec policy), the program of the sandbox image.
//! `moltmate agent` runs the same code from the all-in-one binary.

fn main() -> std::process::ExitCode {
    moltmates::agent::process::main()
}
