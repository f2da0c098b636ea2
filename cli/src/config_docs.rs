//! `docs/configuration.md`, written from the config types themselves: their JSON Schemas
//! (schemars, from the doc comments, serde's names and defaults) rendered as one table per file.
//! `footprint config-docs --out docs/configuration.md` writes it; a test fails when it drifts.

use footprint_aggregator::AggregatorConfig;
use footprint_aggregator::auth::WebConfig;
use footprint_collector::config::CollectorConfig;
use serde_json::{Map, Value};

/// The whole page.
pub fn render() -> String {
    let mut page = String::from(
        "# Configuration\n\n\
         Every key of every config file, generated from the code (the config types' doc comments, \
         names and defaults) by `footprint config-docs --out docs/configuration.md`; \
         `cargo test -p footprint-cli config_docs` fails when this page and the code differ. \
         Annotated examples: [`deploy/examples/`](../deploy/examples/). \
         `footprint check-config --aggregator FILE | --collector FILE | --web-config FILE` \
         checks a file and names every problem by its key path.\n",
    );
    section(
        &mut page,
        "Aggregator",
        "`footprint-aggregator --config FILE`, TOML.",
        schemars::schema_for!(AggregatorConfig).to_value(),
    );
    section(
        &mut page,
        "Collector",
        "`footprint-collector --config FILE`, TOML.",
        schemars::schema_for!(CollectorConfig).to_value(),
    );
    section(
        &mut page,
        "Web config",
        "The aggregator's `web_config_file`, YAML: the Prometheus exporter toolkit's \
         `tls_server_config` and Footprint's bearer tokens ([SECURITY.md](SECURITY.md)). \
         Relative file names are taken from the file's directory.",
        schemars::schema_for!(WebConfig).to_value(),
    );
    page
}

/// One config file: its own keys in one table, then each variant of a list of tagged tables
/// (the collector's sources) in its own.
fn section(page: &mut String, title: &str, intro: &str, schema: Value) {
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut rows = Vec::new();
    let mut variants = Vec::new();
    walk(&schema, "", &defs, &mut rows, &mut variants);
    page.push_str(&format!("\n## {title}\n\n{intro}\n"));
    table(page, &rows);
    for (heading, rows) in variants {
        page.push_str(&format!("\n### {heading}\n"));
        table(page, &rows);
    }
}

struct Row {
    key: String,
    kind: String,
    default: String,
    what: String,
}

fn table(page: &mut String, rows: &[Row]) {
    page.push_str("\n| key | type | default | what |\n| --- | --- | --- | --- |\n");
    for row in rows {
        page.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            row.key,
            row.kind,
            row.default,
            cell(&row.what)
        ));
    }
}

/// Text for a table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn resolve<'a>(schema: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix("#/$defs/")
            .and_then(|name| defs.get(name))
            .unwrap_or(schema),
        None => schema,
    }
}

/// The schema without its `null` alternative, and whether there was one.
fn unwrap_optional<'a>(schema: &'a Value, defs: &'a Map<String, Value>) -> (&'a Value, bool) {
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array)
        && options.len() == 2
        && let Some(null) = options
            .iter()
            .position(|o| o.get("type") == Some(&"null".into()))
    {
        return (resolve(&options[1 - null], defs), true);
    }
    let nullable = schema
        .get("type")
        .and_then(Value::as_array)
        .is_some_and(|types| types.contains(&"null".into()));
    (resolve(schema, defs), nullable)
}

fn is_table(schema: &Value) -> bool {
    schema.get("properties").is_some()
}

/// The variants of a list of tables tagged by `type`, if that is what `schema` is.
fn tagged_variants(schema: &Value) -> Option<Vec<(String, &Value)>> {
    schema
        .get("oneOf")?
        .as_array()?
        .iter()
        .map(|variant| {
            let tag = variant.pointer("/properties/type/const")?.as_str()?;
            Some((tag.to_owned(), variant))
        })
        .collect()
}

/// The rows of `schema`'s keys under `prefix`; tagged variants go to `variants`.
fn walk(
    schema: &Value,
    prefix: &str,
    defs: &Map<String, Value>,
    rows: &mut Vec<Row>,
    variants: &mut Vec<(String, Vec<Row>)>,
) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, property) in properties {
        let key = format!("{prefix}{name}");
        let what = property
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (inner, optional) = unwrap_optional(property, defs);
        let what = if what.is_empty() {
            inner
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        } else {
            what
        };
        let default = match property.get("default") {
            _ if required.contains(&name.as_str()) => "required".to_owned(),
            Some(Value::Null) | None => String::new(),
            Some(Value::Object(_)) => String::new(),
            Some(value) => format!("`{value}`"),
        };
        let items = (inner.get("type") == Some(&"array".into()))
            .then(|| inner.get("items").map(|items| resolve(items, defs)))
            .flatten();
        if let Some(items) = items
            && let Some(tagged) = tagged_variants(items)
        {
            rows.push(Row {
                key: format!("[[{key}]]"),
                kind: format!(
                    "list of tables, `type` one of {}",
                    tagged
                        .iter()
                        .map(|(tag, _)| format!("`{tag}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                default,
                what,
            });
            for (tag, variant) in tagged {
                let mut variant_rows = Vec::new();
                let intro = variant
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                variant_rows.push(Row {
                    key: format!("{key}[].type"),
                    kind: format!("`\"{tag}\"`"),
                    default: "required".into(),
                    what: intro.to_owned(),
                });
                let mut nested = Vec::new();
                let mut body = variant.clone();
                if let Some(properties) = body.get_mut("properties").and_then(Value::as_object_mut)
                {
                    properties.remove("type");
                }
                walk(
                    &body,
                    &format!("{key}[]."),
                    defs,
                    &mut variant_rows,
                    &mut nested,
                );
                variants.push((format!("`[[{key}]]` with `type = \"{tag}\"`"), variant_rows));
                variants.extend(nested);
            }
            continue;
        }
        if let Some(items) = items
            && is_table(items)
        {
            rows.push(Row {
                key: format!("[[{key}]]"),
                kind: "list of tables".into(),
                default,
                what,
            });
            walk(items, &format!("{key}[]."), defs, rows, variants);
            continue;
        }
        if is_table(inner) {
            rows.push(Row {
                key: format!("[{key}]"),
                kind: if optional {
                    "table, optional".into()
                } else {
                    "table".into()
                },
                default,
                what,
            });
            walk(inner, &format!("{key}."), defs, rows, variants);
            continue;
        }
        let mut kind = kind_of(inner, defs);
        if optional {
            kind.push_str(", optional");
        }
        rows.push(Row {
            key,
            kind,
            default,
            what,
        });
    }
}

/// A scalar's or a list's type, in words.
fn kind_of(schema: &Value, defs: &Map<String, Value>) -> String {
    let schema = resolve(schema, defs);
    let choices = |options: &[Value]| -> Option<String> {
        let names: Option<Vec<String>> = options
            .iter()
            .map(|o| {
                o.get("const")
                    .or_else(|| o.get("enum").and_then(|e| e.get(0)))
                    .map(|c| format!("`{c}`"))
            })
            .collect();
        names.map(|n| format!("one of {}", n.join(", ")))
    };
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
        return format!("one of {}", names.join(", "));
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array)
            && let Some(text) = choices(options)
        {
            return text;
        }
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    };
    match types.first().copied() {
        Some("array") => {
            let item = schema
                .get("items")
                .map_or_else(|| "values".to_owned(), |i| kind_of(i, defs));
            format!("list of {item}")
        }
        Some("integer") if schema.get("minimum") == Some(&Value::from(0)) => "integer ≥ 0".into(),
        Some(other) => other.to_owned(),
        None => "value".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_docs_match_the_code() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let written = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = super::render();
        assert!(
            written == generated,
            "docs/configuration.md differs from the config types: run \
             `cargo run -p footprint-cli -- config-docs --out docs/configuration.md`"
        );
        // Every key says what it does.
        let undocumented: Vec<&str> = generated
            .lines()
            .filter(|line| line.starts_with("| `") && line.ends_with("|  |"))
            .collect();
        assert!(
            undocumented.is_empty(),
            "keys without a doc comment:\n{}",
            undocumented.join("\n")
        );
        for key in [
            "`grpc_listen`",
            "`[input_limits]`",
            "`input_limits.max_batches_per_s`",
            "`sources[].community`",
            "`tls.ca_file`",
            "`bearer_tokens[].scopes`",
        ] {
            assert!(generated.contains(key), "{key} is not on the page");
        }
    }
}
