//! Compiles every kernel file with NVRTC for sm_80 and sm_90 with `-Xptxas -v`, prints each
//! kernel's registers, stack, spills and shared memory, and fails on any compile error, any
//! warning or any spill. Needs no GPU, only libnvrtc on `LD_LIBRARY_PATH`:
//!
//! ```text
//! cargo xtask kernels                  # sets up NVRTC from PyPI, then runs this
//! cargo xtask kernels extra.cu ...     # also checks files outside sources::FILES
//! ```

use std::process::ExitCode;

use ember_tensor::cuda::{nvrtc, sources};

const ARCHITECTURES: [u32; 2] = [80, 90];

/// What ptxas reports for one function (a kernel, or a device function not inlined).
#[derive(Default)]
struct Usage {
    name: String,
    registers: u64,
    stack_bytes: u64,
    spill_store_bytes: u64,
    spill_load_bytes: u64,
    shared_bytes: u64,
}

fn main() -> ExitCode {
    let mut files: Vec<(String, String)> = sources::FILES.iter().map(|(name, text)| (name.to_string(), text.to_string())).collect();
    for path in std::env::args().skip(1) {
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push((path, text)),
            Err(e) => {
                eprintln!("check_kernels: cannot read {path}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match nvrtc::version() {
        Ok((major, minor)) => println!("NVRTC {major}.{minor}, {} kernel file(s)\n", files.len()),
        Err(e) => {
            eprintln!("check_kernels: {e}");
            return ExitCode::FAILURE;
        }
    }

    let mut rows: Vec<[String; 9]> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for (file, source) in &files {
        for arch in ARCHITECTURES {
            let log = match nvrtc::compile_cubin(file, source, arch, true) {
                Ok(compiled) => compiled.log,
                Err(e) => {
                    rows.push(file_row(file, arch, "COMPILE ERROR"));
                    problems.push(format!("{file} (sm_{arch}): {e}"));
                    continue;
                }
            };
            let warnings: Vec<&str> = log.lines().filter(|line| is_warning(line)).collect();
            if !warnings.is_empty() {
                rows.push(file_row(file, arch, &format!("{} WARNING(S)", warnings.len())));
            }
            for line in warnings {
                problems.push(format!("{file} (sm_{arch}): {}", line.trim()));
            }
            for usage in parse_ptxas_log(&log) {
                let spills = usage.spill_store_bytes + usage.spill_load_bytes > 0;
                if spills {
                    problems.push(format!(
                        "{file} (sm_{arch}): {} spills registers ({} B stored, {} B loaded)",
                        usage.name, usage.spill_store_bytes, usage.spill_load_bytes
                    ));
                }
                rows.push([
                    file.clone(),
                    usage.name,
                    format!("sm_{arch}"),
                    usage.registers.to_string(),
                    usage.stack_bytes.to_string(),
                    usage.spill_store_bytes.to_string(),
                    usage.spill_load_bytes.to_string(),
                    usage.shared_bytes.to_string(),
                    (if spills { "SPILLS" } else { "ok" }).to_string(),
                ]);
            }
        }
    }
    print_table(&rows);

    if problems.is_empty() {
        println!("\nall kernels compile with no warning and no spill");
        ExitCode::SUCCESS
    } else {
        eprintln!("\n{} problem(s):", problems.len());
        for problem in &problems {
            eprintln!("- {problem}");
        }
        ExitCode::FAILURE
    }
}

/// A warning from the compiler front end (`file(12): warning #177-D: ...`) or from ptxas
/// (`ptxas warning : ...`); not the remark that follows front-end warnings.
fn is_warning(line: &str) -> bool {
    let line = line.trim_start().to_ascii_lowercase();
    line.contains("warning") && !line.starts_with("remark") && !line.starts_with("ptxas info")
}

/// A table row about a whole compile (an error, warnings) rather than one function.
fn file_row(file: &str, arch: u32, status: &str) -> [String; 9] {
    let mut row = [(); 9].map(|()| "-".to_string());
    row[0] = file.to_string();
    row[2] = format!("sm_{arch}");
    row[8] = status.to_string();
    row
}

/// Left-aligned text columns, right-aligned numbers, under a header.
fn print_table(rows: &[[String; 9]]) {
    let header = ["file", "function", "arch", "regs", "stack", "spill st", "spill ld", "smem", "status"];
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: [&str; 9]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(column, (cell, width))| match column {
                3..=7 => format!("{cell:>width$}"),
                _ => format!("{cell:<width$}"),
            })
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header);
    for row in rows {
        line(row.each_ref().map(String::as_str));
    }
}

/// The functions in a `-Xptxas -v` log, in order. ptxas reports, per function:
///
/// ```text
/// ptxas info    : Compiling entry function 'affine_f32' for 'sm_90'
/// ptxas info    : Function properties for affine_f32
/// ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 10 registers, used 1 barriers, 1024 bytes smem
/// ```
fn parse_ptxas_log(log: &str) -> Vec<Usage> {
    let mut functions: Vec<Usage> = Vec::new();
    for line in log.lines() {
        let text = line.trim_start().strip_prefix("ptxas info").map_or(line, |rest| rest.trim_start().trim_start_matches(':'));
        let name = quoted(text, "Compiling entry function '").or_else(|| text.trim().strip_prefix("Function properties for ").map(str::trim));
        if let Some(name) = name {
            if functions.last().is_none_or(|usage| usage.name != name) {
                functions.push(Usage { name: name.to_string(), ..Usage::default() });
            }
            continue;
        }
        let Some(usage) = functions.last_mut() else {
            continue;
        };
        for (value, unit) in numbered_fields(text) {
            match unit.as_str() {
                "registers" => usage.registers = value,
                "bytes stack frame" => usage.stack_bytes = value,
                "bytes spill stores" => usage.spill_store_bytes = value,
                "bytes spill loads" => usage.spill_load_bytes = value,
                "bytes smem" => usage.shared_bytes = value,
                _ => {}
            }
        }
    }
    functions
}

/// The text between `prefix` and the next `'`.
fn quoted<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let start = text.find(prefix)? + prefix.len();
    let end = text[start..].find('\'')?;
    Some(&text[start..start + end])
}

/// "Used 10 registers, 0 bytes smem" -> [(10, "registers"), (0, "bytes smem")].
fn numbered_fields(text: &str) -> Vec<(u64, String)> {
    text.split(',')
        .filter_map(|part| {
            let mut words = part.split_whitespace().skip_while(|w| w.parse::<u64>().is_err());
            let value = words.next()?.parse().ok()?;
            Some((value, words.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}
