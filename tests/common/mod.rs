//! Helpers shared by the black-box tests: the namespace LAN harness and
//! running real daemons.
#![allow(dead_code)]

pub mod lan;
