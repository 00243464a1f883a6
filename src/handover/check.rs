//! `hotswap upgrade-check`: what a new binary answers when the old image
//! asks whether it can take over ([`CheckAnswer`]), and what the old image
//! reads from that answer ([`capabilities`]). Apart from the exec because
//! it is the contract between two releases: fields are only ever added.

use std::ffi::OsString;
use std::io::Read;

use serde::{Deserialize, Serialize};

use super::state::State;
use super::{HANDOVER_LEVEL, HOLDS_SIGNALS, HOLDS_SIGNALS_SINCE, STATE_FORMAT};

/// The last line of `upgrade-check`'s answer: what the new binary is and
/// can do, for the old image to read (the first line is for people).
/// Fields may be added; an image ignores those it does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckAnswer {
    /// The package version.
    pub hotswap: String,
    /// Its [`STATE_FORMAT`].
    pub state_format: u32,
    /// Its [`HANDOVER_LEVEL`].
    pub handover: u32,
}

impl CheckAnswer {
    /// This binary's answer.
    pub fn this() -> Self {
        CheckAnswer {
            hotswap: env!("CARGO_PKG_VERSION").to_string(),
            state_format: STATE_FORMAT,
            handover: HANDOVER_LEVEL,
        }
    }
}

/// What a new image's side of the handover can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// It unblocks the signals held across the exec.
    pub holds_signals: bool,
}

/// Reads a new binary's `upgrade-check` answer: its [`CheckAnswer`] line's
/// level, or, from an image that has none, the [`HOLDS_SIGNALS`] phrase
/// (level 1) or nothing (level 0).
pub fn capabilities(answer: &str) -> Capabilities {
    let declared = answer.lines().rev().find_map(|l| serde_json::from_str::<CheckAnswer>(l.trim()).ok());
    let level = match declared {
        Some(a) => a.handover,
        None if answer.contains(HOLDS_SIGNALS) => 1,
        None => 0,
    };
    Capabilities { holds_signals: level >= HOLDS_SIGNALS_SINCE }
}

/// The human line of an `upgrade-check` answer, for the log.
pub fn answer_summary(answer: &str) -> &str {
    answer.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('{')).unwrap_or(answer.trim())
}

/// Parses a state, refusing another format version.
pub fn check_state(text: &str) -> std::result::Result<State, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("unreadable state: {e}"))?;
    let format = v.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
    if format != u64::from(STATE_FORMAT) {
        return Err(format!("state format {format} is not this binary's ({STATE_FORMAT})"));
    }
    serde_json::from_value(v).map_err(|e| format!("unreadable state: {e}"))
}

/// `hotswap upgrade-check`: run by the old image on the new binary, with
/// the state on stdin. `parse_argv` is the new binary's own command-line
/// parser: the primary's argv must parse as it will after the exec.
pub fn check_main(parse_argv: impl Fn(&[OsString]) -> std::result::Result<(), String>) -> std::process::ExitCode {
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("reading the state: {e}");
        return std::process::ExitCode::FAILURE;
    }
    match check_state(&text).and_then(|state| parse_argv(&state.argv)) {
        Ok(()) => {
            println!("hotswap {} (state format {STATE_FORMAT}, {HOLDS_SIGNALS})", env!("CARGO_PKG_VERSION"));
            match serde_json::to_string(&CheckAnswer::this()) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("writing the answer: {e}"),
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_binarys_answer_declares_that_it_holds_signals() {
        let line = serde_json::to_string(&CheckAnswer::this()).unwrap();
        let answer = format!("hotswap 9.9.9 (state format 1, {HOLDS_SIGNALS})\n{line}\n");
        assert_eq!(capabilities(&answer), Capabilities { holds_signals: true });
        assert_eq!(answer_summary(&answer), "hotswap 9.9.9 (state format 1, unblocks held signals)");
    }

    #[test]
    fn the_declared_level_decides_not_the_phrase() {
        // A future image that says the phrase in passing but declares level 0.
        let answer = format!("{HOLDS_SIGNALS}?\n{{\"hotswap\":\"2.0.0\",\"state_format\":1,\"handover\":0}}");
        assert!(!capabilities(&answer).holds_signals);
        // A later level, with fields this image does not know.
        let answer = "hotswap 3.0.0\n{\"hotswap\":\"3.0.0\",\"state_format\":1,\"handover\":7,\"new\":true}";
        assert!(capabilities(answer).holds_signals);
        // The declaration alone, without any human line.
        let answer = serde_json::to_string(&CheckAnswer::this()).unwrap();
        assert!(capabilities(&answer).holds_signals);
    }

    #[test]
    fn older_images_are_read_by_their_phrase() {
        // Images before the CheckAnswer line: level 1 by the phrase ...
        assert!(capabilities("hotswap 0.1.0 (state format 1, unblocks held signals)").holds_signals);
        // ... and level 0 without it.
        assert!(!capabilities("hotswap 0.1.0 (state format 1)").holds_signals);
        assert!(!capabilities("").holds_signals);
        assert_eq!(answer_summary("hotswap 0.1.0 (state format 1)\n"), "hotswap 0.1.0 (state format 1)");
    }

    #[test]
    fn other_state_formats_are_refused() {
        assert!(check_state("{\"format\":99}").unwrap_err().contains("format 99"));
        assert!(check_state("garbage").unwrap_err().contains("unreadable"));
    }
}
