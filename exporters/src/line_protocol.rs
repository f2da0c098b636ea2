//! InfluxDB line protocol (`measurement,tag=v field=1i 1700000000000000000`), as InfluxDB 2's
//! write API and VictoriaMetrics take it: integer fields (the ledger's mJ, mL, mg and ns are
//! integers), nanosecond timestamps, and the escaping the protocol asks for.

use std::fmt::Write;

/// One point.
#[derive(Clone, Debug, PartialEq)]
pub struct Point<'a> {
    pub measurement: &'a str,
    /// Tags in the order given; empty values are left out (the protocol has none).
    pub tags: Vec<(&'a str, String)>,
    pub fields: Vec<(&'a str, i64)>,
    pub time_ns: i64,
}

fn escape(out: &mut String, text: &str, also_equals: bool) {
    for c in text.chars() {
        match c {
            ',' | ' ' => out.push('\\'),
            '=' if also_equals => out.push('\\'),
            '\\' => out.push('\\'),
            // A newline would end the line: written as a space.
            '\n' | '\r' => {
                out.push_str("\\ ");
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
}

/// Appends `point` as one line (with its newline); a point without fields writes nothing (the
/// protocol needs one).
pub fn write_point(out: &mut String, point: &Point<'_>) {
    if point.fields.is_empty() {
        return;
    }
    escape(out, point.measurement, false);
    for (key, value) in &point.tags {
        if value.is_empty() {
            continue;
        }
        out.push(',');
        escape(out, key, true);
        out.push('=');
        escape(out, value, true);
    }
    for (index, (key, value)) in point.fields.iter().enumerate() {
        out.push(if index == 0 { ' ' } else { ',' });
        escape(out, key, true);
        let _ = write!(out, "={value}i");
    }
    let _ = writeln!(out, " {}", point.time_ns);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn points_are_written_with_integer_fields_and_escaped_names() {
        let mut out = String::new();
        write_point(
            &mut out,
            &Point {
                measurement: "footprint job",
                tags: vec![("job", "train 1,a=b".into()), ("project", String::new())],
                fields: vec![("gpu_mj", 42), ("water_ml", -1)],
                time_ns: 1_699_228_800_000_000_000,
            },
        );
        assert_eq!(
            out,
            "footprint\\ job,job=train\\ 1\\,a\\=b gpu_mj=42i,water_ml=-1i 1699228800000000000\n"
        );
        let mut empty = String::new();
        write_point(
            &mut empty,
            &Point {
                measurement: "m",
                tags: vec![],
                fields: vec![],
                time_ns: 0,
            },
        );
        assert!(empty.is_empty());
    }

    proptest! {
        /// Whatever the names: one line per point, and the tag values come back unescaped.
        #[test]
        fn any_tag_value_stays_on_one_line_and_reads_back(value in "\\PC{1,20}") {
            let mut out = String::new();
            write_point(&mut out, &Point { measurement: "m", tags: vec![("t", value.clone())], fields: vec![("f", 1)], time_ns: 5 });
            prop_assert_eq!(out.matches('\n').count(), 1);
            let tag = out.strip_prefix("m,t=").unwrap().rsplit_once(" f=1i 5\n").unwrap().0;
            let mut unescaped = String::new();
            let mut chars = tag.chars();
            while let Some(c) = chars.next() {
                if c == '\\' { unescaped.push(chars.next().unwrap()); } else { unescaped.push(c); }
            }
            prop_assert_eq!(unescaped, value.replace(['\n', '\r'], " "));
        }
    }
}
