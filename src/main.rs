//! The keywarden binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    keywarden::cli::main()
}
