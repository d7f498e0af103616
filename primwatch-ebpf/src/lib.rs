#![no_std]
// The program itself is the `primwatch` binary target (src/main.rs); this empty library
// lets the controller crate name this package as a build dependency.
