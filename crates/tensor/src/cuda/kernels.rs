//! The host side of every kernel: argument checks, grid and block sizes, the launch.
