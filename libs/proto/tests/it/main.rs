//! Integration tests of the generated contract: message encoding, the embedded descriptor set,
//! and real tonic servers on 127.0.0.1:0 called through the generated clients.

mod codec;
mod delivery;
mod pod_commands;
mod reflection;
