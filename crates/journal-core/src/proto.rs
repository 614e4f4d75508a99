//! The protobuf types of `proto/journal/v1/journal.proto`, generated at build
//! time, and constructors so that users do not fill them by hand.

#![allow(clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/journal.v1.rs"));
