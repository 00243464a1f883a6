//! `--surge`: how many new-generation workers a reload may run beyond the
//! N the pool keeps, as Kubernetes' `maxSurge`.
//!
//! A reload never stops an old worker before its replacement is ready, so
//! the only way to make it faster is to start several replacements at once;
//! each one costs a worker's memory until the old worker it replaces has
//! exited. The surge is that trade, stated by the operator: `1` (the
//! default) replaces one worker at a time, `N` (or `100%`) starts every
//! replacement at once. `0` is refused: hotswap never lowers capacity to
//! make room, so a reload with no room at all could not start.
//!
//! It lives with the vocabulary because it travels: the `surge` option
//! (flag and config key) and the `surge` field of a reload request over the
//! control socket parse and print it the same way.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest count accepted: the largest pool (`--workers`).
const MAX_COUNT: u32 = 4096;

/// `--surge N` or `--surge P%`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surge {
    /// At most this many extra workers.
    Count(u32),
    /// This percentage of the pool, rounded up (so never less than one).
    Percent(u32),
}

impl Default for Surge {
    /// One at a time: a rolling reload as it always was.
    fn default() -> Surge {
        Surge::Count(1)
    }
}

impl Surge {
    /// How many new workers may start at once for a pool of `workers`:
    /// at least 1.
    pub fn of(self, workers: usize) -> usize {
        match self {
            Surge::Count(n) => n as usize,
            Surge::Percent(p) => (workers * p as usize).div_ceil(100),
        }
        .max(1)
    }
}

impl std::str::FromStr for Surge {
    type Err = String;
    fn from_str(s: &str) -> Result<Surge, String> {
        let t = s.trim();
        let refuse_zero = "must be at least 1: hotswap never stops an old worker before its replacement is ready, \
                           so a reload needs room for at least one new worker";
        if let Some(p) = t.strip_suffix('%') {
            return match p.trim().parse::<u32>() {
                Ok(0) => Err(refuse_zero.into()),
                Ok(p @ 1..=100) => Ok(Surge::Percent(p)),
                Ok(_) => Err(format!("surge {t} is more than 100% (100% already starts every new worker at once)")),
                Err(_) => Err(format!("invalid surge {s:?} (a number of workers like 2, or a percentage like 50%)")),
            };
        }
        match t.parse::<u32>() {
            Ok(0) => Err(refuse_zero.into()),
            Ok(n @ 1..=MAX_COUNT) => Ok(Surge::Count(n)),
            Ok(_) => Err(format!("surge {t} is more than {MAX_COUNT} (the most workers a pool can have)")),
            Err(_) => Err(format!("invalid surge {s:?} (a number of workers like 2, or a percentage like 50%)")),
        }
    }
}

impl std::fmt::Display for Surge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Surge::Count(n) => write!(f, "{n}"),
            Surge::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// As text: `"2"`, `"50%"`.
impl Serialize for Surge {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// From text (`"50%"`, `"2"`) or a bare number (`surge = 2` in the config file).
impl<'de> Deserialize<'de> for Surge {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Surge, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Text(String),
            Number(i64),
        }
        let text = match Given::deserialize(d)? {
            Given::Text(t) => t,
            Given::Number(n) => n.to_string(),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_percentages() {
        assert_eq!("3".parse::<Surge>().unwrap(), Surge::Count(3));
        assert_eq!(" 50% ".parse::<Surge>().unwrap(), Surge::Percent(50));
        assert_eq!(Surge::Count(3).of(8), 3);
        assert_eq!(Surge::Count(9).of(2), 9, "more than the pool is allowed; the reload just runs out of work");
        assert_eq!(Surge::Percent(50).of(5), 3, "rounded up");
        assert_eq!(Surge::Percent(1).of(2), 1, "at least one");
        assert_eq!(Surge::Percent(100).of(16), 16);
        assert_eq!(Surge::default().of(16), 1, "the default replaces one at a time");
        assert_eq!(Surge::Percent(25).to_string(), "25%");
    }

    #[test]
    fn zero_and_nonsense_are_refused_with_the_reason() {
        for zero in ["0", "0%"] {
            let err = zero.parse::<Surge>().unwrap_err();
            assert!(err.contains("at least 1") && err.contains("replacement is ready"), "{err}");
        }
        assert!("150%".parse::<Surge>().unwrap_err().contains("more than 100%"));
        assert!("5000".parse::<Surge>().unwrap_err().contains("4096"));
        for bad in ["", "two", "-1", "%", "1.5"] {
            assert!(bad.parse::<Surge>().unwrap_err().contains("invalid surge"), "{bad}");
        }
    }

    #[test]
    fn text_or_number_in_json_and_toml() {
        assert_eq!(serde_json::from_str::<Surge>("2").unwrap(), Surge::Count(2));
        assert_eq!(serde_json::from_str::<Surge>("\"50%\"").unwrap(), Surge::Percent(50));
        assert!(serde_json::from_str::<Surge>("0").unwrap_err().to_string().contains("at least 1"));
        assert_eq!(serde_json::to_string(&Surge::Percent(50)).unwrap(), "\"50%\"");
        let back: Surge = serde_json::from_str(&serde_json::to_string(&Surge::Count(4)).unwrap()).unwrap();
        assert_eq!(back, Surge::Count(4));
    }
}
