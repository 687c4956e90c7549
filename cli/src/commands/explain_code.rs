//! `polc explain-code CODE`: the documentation of a diagnostic code.

use crate::{EXIT_CLEAN, EXIT_USAGE, Io};
use polc_compiler::diag::Code;

/// Arguments of `polc explain-code`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// A code (`S0218`) or name (`combined-peer-kinds`); without it, every code is listed.
    pub code: Option<String>,
}

/// Prints one code's documentation, or the list of codes.
pub fn run(args: &ExplainArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let Some(query) = &args.code else {
        for c in Code::ALL {
            writeln!(
                io.stdout,
                "{}  {:<8} {:<36} {}",
                c.as_str(),
                c.severity().as_str(),
                c.name(),
                c.summary()
            )?;
        }
        return Ok(EXIT_CLEAN);
    };
    let Some(code) = Code::lookup(query) else {
        writeln!(
            io.stderr,
            "polc: error: `{query}` is not a polc diagnostic code; `polc explain-code` lists them"
        )?;
        return Ok(EXIT_USAGE);
    };
    writeln!(
        io.stdout,
        "{} {} ({})",
        code.as_str(),
        code.name(),
        code.severity()
    )?;
    writeln!(io.stdout)?;
    writeln!(io.stdout, "{}", code.summary())?;
    writeln!(io.stdout)?;
    writeln!(io.stdout, "{}", textwrap(code.doc(), 88))?;
    Ok(EXIT_CLEAN)
}

fn textwrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out
}
