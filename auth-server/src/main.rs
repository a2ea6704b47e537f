//! `auth-server`: accounts, sessions and tokens.

// jemalloc gives the memory of a connection or login flood back within a second; glibc kept it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    auth_server::cli::main()
}
