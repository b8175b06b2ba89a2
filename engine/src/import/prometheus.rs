//! The Prometheus text exposition format (0.0.4), read strictly: `# HELP` and `# TYPE` lines,
//! samples `name{label="value",...} value [timestamp]`, other comments and empty lines. Only
//! what a scrape of an exporter holds is accepted: anything else is an error naming its line,
//! so a truncated or hand-edited file is refused instead of read as fewer metrics.

use std::collections::{HashMap, HashSet};
use std::fmt;

/// What a `# TYPE` line declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// A cumulative count.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Cumulative buckets (`_bucket{le=...}`), `_sum` and `_count`.
    Histogram,
    /// Quantiles, `_sum` and `_count`.
    Summary,
    /// No type given.
    Untyped,
}

impl MetricType {
    fn parse(word: &str) -> Option<MetricType> {
        Some(match word {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" => MetricType::Untyped,
            _ => return None,
        })
    }
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Its line in the text, from 1.
    pub line: usize,
    /// The metric name as written (`..._bucket`, `..._sum` included).
    pub name: String,
    /// Labels in the order written (no name twice).
    pub labels: Vec<(String, String)>,
    /// The value (`+Inf`, `-Inf` and `NaN` are values too).
    pub value: f64,
    /// Milliseconds since the epoch, when given.
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    /// `name{a="x",b="y"}` with the labels sorted: the series, whatever order they came in.
    pub fn series(&self) -> String {
        let mut labels: Vec<&(String, String)> = self.labels.iter().collect();
        labels.sort();
        let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        format!("{}{{{}}}", self.name, inner.join(","))
    }

    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed exposition: the samples in order and the declared types.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// Every sample, in the order of the text.
    pub samples: Vec<Sample>,
    /// `# TYPE` declarations by metric family name.
    pub types: HashMap<String, MetricType>,
}

/// Why a line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// A metric name is empty or has a character outside `[a-zA-Z0-9_:]` (or starts with a digit).
    #[error("`{0}` is not a valid metric name")]
    BadMetricName(String),
    /// A label name is empty or has a character outside `[a-zA-Z0-9_]` (or starts with a digit).
    #[error("`{0}` is not a valid label name")]
    BadLabelName(String),
    /// A label set is not `{name="value",...}`: what was expected where.
    #[error("labels: {0}")]
    BadLabels(String),
    /// A backslash in a label value or help text is followed by something other than `\`, `"`
    /// (label values only) or `n`.
    #[error("unknown escape `\\{0}` (allowed: \\\\, \\\", \\n)")]
    BadEscape(char),
    /// A label appears twice in one sample.
    #[error("label `{0}` given twice")]
    DuplicateLabel(String),
    /// The value is missing or not a number (`+Inf`, `-Inf`, `NaN` or a decimal float).
    #[error("value `{0}` is not a number")]
    BadValue(String),
    /// The timestamp is not a whole number of milliseconds.
    #[error("timestamp `{0}` is not a whole number of milliseconds")]
    BadTimestamp(String),
    /// Something follows the timestamp.
    #[error("unexpected `{0}` after the sample")]
    TrailingText(String),
    /// `# TYPE` with a type other than counter, gauge, histogram, summary, untyped.
    #[error("`{0}` is not a metric type (counter, gauge, histogram, summary, untyped)")]
    BadType(String),
    /// `# TYPE` or `# HELP` without a metric name (or a TYPE without its type).
    #[error("`# {0}` needs a metric name{1}")]
    IncompleteComment(&'static str, &'static str),
    /// A second `# TYPE` or `# HELP` for one metric.
    #[error("second `# {0}` for `{1}`")]
    RepeatedComment(&'static str, String),
    /// `# TYPE` after samples of its metric: the format requires it first.
    #[error("`# TYPE` for `{0}` after its samples")]
    TypeAfterSamples(String),
    /// The same metric name and label set twice.
    #[error("series `{0}` given twice")]
    DuplicateSeries(String),
}

/// A refused exposition: the first line at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct ParseError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub error: LineError,
}

/// Parses a whole exposition, or names the first line at fault.
pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    let mut out = Exposition::default();
    let mut helped: HashSet<String> = HashSet::new();
    let mut sampled: HashSet<String> = HashSet::new();
    let mut series: HashSet<String> = HashSet::new();
    for (k, raw) in text.split('\n').enumerate() {
        let line = k + 1;
        let at = |error| ParseError { line, error };
        let body = raw.strip_suffix('\r').unwrap_or(raw);
        if body.trim_matches([' ', '\t']).is_empty() {
            continue;
        }
        if let Some(comment) = body.strip_prefix('#') {
            comment_line(comment, &mut out, &mut helped, &sampled).map_err(at)?;
            continue;
        }
        let sample = sample_line(body, line).map_err(at)?;
        let key = sample.series();
        if !series.insert(key.clone()) {
            return Err(at(LineError::DuplicateSeries(key)));
        }
        sampled.insert(sample.name.clone());
        out.samples.push(sample);
    }
    Ok(out)
}

fn comment_line(
    comment: &str,
    out: &mut Exposition,
    helped: &mut HashSet<String>,
    sampled: &HashSet<String>,
) -> Result<(), LineError> {
    let mut words = Tokens(comment);
    let keyword = words.word();
    if keyword != "TYPE" && keyword != "HELP" {
        return Ok(()); // a plain comment
    }
    let name = words.word();
    if name.is_empty() {
        let what = if keyword == "TYPE" {
            (" and a type", "TYPE")
        } else {
            ("", "HELP")
        };
        return Err(LineError::IncompleteComment(what.1, what.0));
    }
    check_metric_name(name)?;
    if keyword == "HELP" {
        // The text runs to the end of the line; only its escapes are checked.
        let mut chars = words.rest().chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('\\') | Some('n') => {}
                    Some(other) => return Err(LineError::BadEscape(other)),
                    None => return Err(LineError::BadEscape(' ')),
                }
            }
        }
        if !helped.insert(name.to_string()) {
            return Err(LineError::RepeatedComment("HELP", name.to_string()));
        }
        return Ok(());
    }
    let word = words.word();
    if word.is_empty() {
        return Err(LineError::IncompleteComment("TYPE", " and a type"));
    }
    let kind = MetricType::parse(word).ok_or_else(|| LineError::BadType(word.to_string()))?;
    let rest = words.rest().trim_matches([' ', '\t']);
    if !rest.is_empty() {
        return Err(LineError::TrailingText(rest.to_string()));
    }
    if out.types.contains_key(name) {
        return Err(LineError::RepeatedComment("TYPE", name.to_string()));
    }
    let family = ["", "_bucket", "_sum", "_count"];
    if family
        .iter()
        .any(|s| sampled.contains(&format!("{name}{s}")))
    {
        return Err(LineError::TypeAfterSamples(name.to_string()));
    }
    out.types.insert(name.to_string(), kind);
    Ok(())
}

/// Words separated by blanks (spaces or tabs).
struct Tokens<'a>(&'a str);

impl<'a> Tokens<'a> {
    fn word(&mut self) -> &'a str {
        let s = self.0.trim_start_matches([' ', '\t']);
        let end = s.find([' ', '\t']).unwrap_or(s.len());
        self.0 = &s[end..];
        &s[..end]
    }

    /// What is left after one separating blank.
    fn rest(&self) -> &'a str {
        self.0
            .strip_prefix([' ', '\t'])
            .unwrap_or(self.0)
            .trim_start_matches([' ', '\t'])
    }
}

fn check_metric_name(name: &str) -> Result<(), LineError> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if ok {
        Ok(())
    } else {
        Err(LineError::BadMetricName(name.to_string()))
    }
}

fn check_label_name(name: &str) -> Result<(), LineError> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(LineError::BadLabelName(name.to_string()))
    }
}

fn sample_line(body: &str, line: usize) -> Result<Sample, LineError> {
    let s = body.trim_start_matches([' ', '\t']);
    let name_end = s.find(['{', ' ', '\t']).unwrap_or(s.len());
    let name = &s[..name_end];
    check_metric_name(name)?;
    let mut rest = &s[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = label_set(after)?;
        labels = parsed;
        rest = tail;
    }
    let mut words = Tokens(rest);
    let value_text = words.word();
    let value = parse_value(value_text)?;
    let ts_text = words.word();
    let timestamp_ms = if ts_text.is_empty() {
        None
    } else {
        let digits = ts_text.strip_prefix('-').unwrap_or(ts_text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(LineError::BadTimestamp(ts_text.to_string()));
        }
        Some(
            ts_text
                .parse::<i64>()
                .map_err(|_| LineError::BadTimestamp(ts_text.to_string()))?,
        )
    };
    let trailing = words.rest().trim_matches([' ', '\t']);
    if !trailing.is_empty() {
        return Err(LineError::TrailingText(trailing.to_string()));
    }
    Ok(Sample {
        line,
        name: name.to_string(),
        labels,
        value,
        timestamp_ms,
    })
}

/// A sample value (or a bucket bound): `+Inf`, `-Inf`, `Inf`, `NaN`, or a decimal float with an optional exponent
/// (no hexadecimal, no `infinity` spelled out, no `_` separators).
pub fn parse_value(text: &str) -> Result<f64, LineError> {
    let bad = || LineError::BadValue(text.to_string());
    match text {
        "+Inf" | "Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        "NaN" => return Ok(f64::NAN),
        _ => {}
    }
    let decimal = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
        && text.bytes().any(|b| b.is_ascii_digit());
    if !decimal {
        return Err(bad());
    }
    text.parse::<f64>().map_err(|_| bad())
}

/// Label names and values in the order written.
type Labels = Vec<(String, String)>;

/// The labels after `{` up to the closing `}`; returns them and the text after it.
fn label_set(mut s: &str) -> Result<(Labels, &str), LineError> {
    let mut labels: Labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', '\t']);
        if let Some(tail) = s.strip_prefix('}') {
            return Ok((labels, tail));
        }
        let name_end = s.find(['=', ' ', '\t', ',', '}', '"']).unwrap_or(s.len());
        let name = &s[..name_end];
        if name.is_empty() {
            return Err(LineError::BadLabels(match s.chars().next() {
                None => "missing `}`".to_string(),
                Some(c) => format!("expected a label name or `}}`, found `{c}`"),
            }));
        }
        check_label_name(name)?;
        s = s[name_end..].trim_start_matches([' ', '\t']);
        s = s
            .strip_prefix('=')
            .ok_or_else(|| LineError::BadLabels(format!("expected `=` after `{name}`")))?;
        s = s.trim_start_matches([' ', '\t']);
        s = s.strip_prefix('"').ok_or_else(|| {
            LineError::BadLabels(format!("the value of `{name}` must be in double quotes"))
        })?;
        let (value, tail) = quoted(s, name)?;
        if labels.iter().any(|(k, _)| k == name) {
            return Err(LineError::DuplicateLabel(name.to_string()));
        }
        labels.push((name.to_string(), value));
        s = tail.trim_start_matches([' ', '\t']);
        if let Some(tail) = s.strip_prefix(',') {
            s = tail;
        } else if !s.starts_with('}') {
            return Err(LineError::BadLabels(match s.chars().next() {
                None => "missing `}`".to_string(),
                Some(c) => format!("expected `,` or `}}` after `{name}`, found `{c}`"),
            }));
        }
    }
}

/// A label value up to its closing quote (the opening one is consumed), unescaped.
fn quoted<'a>(s: &'a str, name: &str) -> Result<(String, &'a str), LineError> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                Some((_, other)) => return Err(LineError::BadEscape(other)),
                None => break,
            },
            c => value.push(c),
        }
    }
    Err(LineError::BadLabels(format!(
        "the value of `{name}` has no closing quote"
    )))
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
        })
    }
}

/// Writes a label value with the escapes [`parse`] reads back.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_types_escapes_and_special_values() {
        let text = "# HELP a_total Requests \\\\ counted.\n# TYPE a_total counter\n\
                    a_total{client=\"us\\\"er\",server=\"x\\ny\",} 1.5e3 1700000000000\n\
                    # a plain comment\n\n\
                    # TYPE h histogram\n\
                    h_bucket{le=\"+Inf\"} +Inf\nh_sum NaN\nh_count\t-2\n";
        let e = parse(text).expect("valid");
        assert_eq!(e.types["a_total"], MetricType::Counter);
        assert_eq!(e.types["h"], MetricType::Histogram);
        let a = &e.samples[0];
        assert_eq!(
            (a.line, a.value, a.timestamp_ms),
            (3, 1500.0, Some(1700000000000))
        );
        assert_eq!(a.label("client"), Some("us\"er"));
        assert_eq!(a.label("server"), Some("x\ny"));
        assert_eq!(e.samples[1].value, f64::INFINITY);
        assert!(e.samples[2].value.is_nan());
        assert_eq!((e.samples[3].line, e.samples[3].value), (9, -2.0));
    }

    #[test]
    fn malformed_lines_are_refused_with_their_line_and_reason() {
        // (text, line, what the message says)
        let table: &[(&str, usize, &str)] = &[
            ("a 1\n9a 2\n", 2, "`9a` is not a valid metric name"),
            (
                "a{b=\"1\" 2\n",
                1,
                "expected `,` or `}` after `b`, found `2`",
            ),
            ("a{b=1} 2\n", 1, "the value of `b` must be in double quotes"),
            ("a{b=\"1} 2\n", 1, "the value of `b` has no closing quote"),
            ("a{b=\"\\t\"} 2\n", 1, "unknown escape `\\t`"),
            ("a{b=\"1\",b=\"2\"} 3\n", 1, "label `b` given twice"),
            ("a{1b=\"1\"} 3\n", 1, "`1b` is not a valid label name"),
            ("a{,} 3\n", 1, "expected a label name or `}`, found `,`"),
            ("a{b=\"1\"\n", 1, "missing `}`"),
            ("a\n", 1, "value `` is not a number"),
            ("a 0x10\n", 1, "value `0x10` is not a number"),
            ("a infinity\n", 1, "value `infinity` is not a number"),
            ("a 1.2.3\n", 1, "value `1.2.3` is not a number"),
            ("a 1 12.5\n", 1, "timestamp `12.5` is not a whole number"),
            ("a 1 2 3\n", 1, "unexpected `3` after the sample"),
            ("# TYPE a countr\n", 1, "`countr` is not a metric type"),
            ("# TYPE a\n", 1, "`# TYPE` needs a metric name and a type"),
            ("# HELP\n", 1, "`# HELP` needs a metric name"),
            (
                "# TYPE a gauge\n# TYPE a gauge\n",
                2,
                "second `# TYPE` for `a`",
            ),
            ("# HELP a x\n# HELP a y\n", 2, "second `# HELP` for `a`"),
            ("# HELP a bad \\q\n", 1, "unknown escape `\\q`"),
            (
                "h_sum 1\n# TYPE h histogram\n",
                2,
                "`# TYPE` for `h` after its samples",
            ),
            (
                "a{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 2\n",
                2,
                "given twice",
            ),
        ];
        for (text, line, reason) in table {
            let err = parse(text).expect_err(text);
            assert_eq!(err.line, *line, "{text:?}: {err}");
            assert!(err.to_string().contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn escaped_values_read_back() {
        let value = "a\\b\"c\nd";
        let text = format!("m{{l=\"{}\"}} 1\n", escape_label_value(value));
        assert_eq!(parse(&text).unwrap().samples[0].label("l"), Some(value));
    }
}
