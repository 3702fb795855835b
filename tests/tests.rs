//! keywarden's integration tests: real child processes, real signals, real
//! files. One binary; fixtures in `util`, cases by area in `cases/`.

mod cases;
mod util;
