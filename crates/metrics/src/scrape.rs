//! Series computed when scraped (tunnels, certificate expiries, versions):
//! [`Collector`]s report the state of the moment as [`Family`]s, written in
//! the Prometheus text format after the facade's series. Nothing of them is
//! kept between scrapes, so a removed connector's series go with it.

use std::fmt::Write;
use std::future::Future;
use std::pin::Pin;

/// A boxed future of a [`Collector`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Reports gauges of the moment at each scrape.
pub trait Collector: Send + Sync {
    /// The current values.
    fn collect(&self) -> BoxFuture<'_, Vec<Family>>;
}

/// One gauge series family: a name, its help text, and a value per label set.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// The series name (`postern_…`).
    pub name: &'static str,
    /// The help text.
    pub help: &'static str,
    /// Each label set (name, value) with its value.
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    /// An empty family.
    pub fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            samples: Vec::new(),
        }
    }

    /// Adds one sample.
    pub fn push(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push((labels, value));
    }

    /// Appends the family to `out` in the Prometheus text format (nothing
    /// when it has no sample).
    pub fn write_to(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} gauge", self.name);
        for (labels, value) in &self.samples {
            out.push_str(self.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (name, value)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{name}=\"{}\"", escape(value));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {value}");
        }
        out.push('\n');
    }
}

/// A label value as the text format wants it: backslash, quote and newline
/// escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_escaped_labels_and_empty_ones_not_at_all() {
        let mut f = Family::new("postern_x", "An x.");
        f.push(vec![("a", "1".into()), ("b", "q\"\\\n".into())], 2.5);
        f.push(Vec::new(), 3.0);
        let mut out = String::new();
        f.write_to(&mut out);
        Family::new("postern_empty", "Nothing.").write_to(&mut out);
        assert_eq!(
            out,
            "# HELP postern_x An x.\n# TYPE postern_x gauge\npostern_x{a=\"1\",b=\"q\\\"\\\\\\n\"} 2.5\npostern_x 3\n\n"
        );
    }
}
