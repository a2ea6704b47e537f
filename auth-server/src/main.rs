//! `auth-server`: accounts, sessions and tokens.

fn main() {
    auth_server::cli::main()
}
