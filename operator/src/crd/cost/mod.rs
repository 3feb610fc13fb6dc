//! The API server's static cost estimate of the CRD's CEL rules, so that a CRD it would refuse
//! fails a test here rather than `helm install` on a cluster.
//!
//! When a CRD is written, kube-apiserver estimates the worst-case cost of each
//! `x-kubernetes-validations` rule from the schema's bounds (`maxItems`, `maxLength`,
//! `maxProperties`; an unbounded one is assumed as large as a 3 MiB request can hold), multiplies
//! it by the number of times the rule can run in one object (the product of the bounds of the
//! lists and maps around it), and refuses the CRD when one rule exceeds [`RULE_LIMIT`] or all of
//! them together exceed [`CRD_LIMIT`].
//!
//! This follows `k8s.io/apiextensions-apiserver` (`validation/cel_validation.go`,
//! `validation.go`, `schema/cel/compilation.go`), `k8s.io/apiserver/pkg/cel/common/schemas.go`
//! for the types and sizes, and cel-go's `checker/cost.go` ([`expr`]) for the expressions. It
//! knows the parts of CEL that rules here use; an expression it does not know is reported as a
//! problem, never guessed.

mod expr;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

/// The most one rule may cost, times the number of times it can run
/// (`StaticEstimatedCostLimit`).
pub const RULE_LIMIT: u64 = 10_000_000;

/// The most all rules of a CRD may cost together (`StaticEstimatedCRDCostLimit`).
pub const CRD_LIMIT: u64 = 100_000_000;

/// The largest request the API server takes, which bounds whatever the schema leaves unbounded.
const MAX_REQUEST_SIZE: u64 = 3 * 1024 * 1024;

/// One rule's estimate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleCost {
    /// Where the rule sits, such as `spec.auth.rules[]`.
    pub path: String,
    pub rule: String,
    /// The worst-case cost of one evaluation.
    pub cost: u64,
    /// How many times the rule can run in one object.
    pub cardinality: u64,
}

impl RuleCost {
    /// What the API server holds against [`RULE_LIMIT`] and adds to the CRD's total.
    pub fn total(&self) -> u64 {
        if self.cost == 0 {
            0
        } else {
            self.cost.saturating_mul(self.cardinality)
        }
    }
}

/// The estimate of every rule of a schema, and what keeps it from being trusted.
#[derive(Debug, Default)]
pub struct Report {
    pub rules: Vec<RuleCost>,
    /// Lists, maps and strings a rule can reach that declare no bound.
    pub unbounded: BTreeSet<String>,
    /// Rules this estimator cannot read.
    pub unreadable: Vec<String>,
}

impl Report {
    /// The cost the API server holds against [`CRD_LIMIT`].
    pub fn total(&self) -> u64 {
        self.rules
            .iter()
            .fold(0, |sum, rule| sum.saturating_add(rule.total()))
    }

    /// Everything the API server would refuse, and every bound missing under a rule.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.unreadable.clone();
        for rule in &self.rules {
            if rule.total() > RULE_LIMIT {
                problems.push(format!(
                    "{}: estimated rule cost exceeds budget by factor of {} (cost {} × {} runs): {}",
                    rule.path,
                    factor(rule.total(), RULE_LIMIT),
                    rule.cost,
                    rule.cardinality,
                    rule.rule
                ));
            }
        }
        if self.total() > CRD_LIMIT {
            problems.push(format!(
                "estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor \
                 of {}",
                factor(self.total(), CRD_LIMIT)
            ));
        }
        problems.extend(
            self.unbounded
                .iter()
                .map(|path| format!("{path}: reachable by a rule, but has no bound")),
        );
        problems
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for rule in &self.rules {
            writeln!(
                f,
                "{:>12} = {:>8} × {:<6} {}: {}",
                rule.total(),
                rule.cost,
                rule.cardinality,
                rule.path,
                rule.rule
            )?;
        }
        writeln!(
            f,
            "{:>12}   total (limits: {RULE_LIMIT} a rule, {CRD_LIMIT} in all)",
            self.total()
        )?;
        for problem in self.problems() {
            writeln!(f, "problem: {problem}")?;
        }
        Ok(())
    }
}

/// How the API server words an overrun.
fn factor(cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    if factor > 100.0 {
        "more than 100x".to_owned()
    } else {
        format!("{factor:.1}x")
    }
}

/// Estimates every rule of an `openAPIV3Schema`, as the API server does when the CRD is written.
pub fn estimate(schema: &Value) -> Report {
    let mut report = Report::default();
    walk(schema, "", Some(1), &mut report);
    report
}

/// Visits `schema` at `path`, whose data can occur `cardinality` times in one object (`None`:
/// under a list or map without a bound).
fn walk(schema: &Value, path: &str, cardinality: Option<u64>, report: &mut Report) {
    if let Some(Value::Array(rules)) = schema.get("x-kubernetes-validations") {
        estimate_rules(schema, path, cardinality, rules, report);
    }
    // How many times each child can occur per occurrence of this schema.
    let fan_out = match schema_type(schema) {
        Some("array") => schema.get("maxItems").and_then(Value::as_u64),
        Some("object") if schema.get("additionalProperties").is_some() => {
            schema.get("maxProperties").and_then(Value::as_u64)
        }
        _ => Some(1),
    };
    let child = cardinality.zip(fan_out).map(|(c, f)| c.saturating_mul(f));
    if let Some(Value::Object(properties)) = schema.get("properties") {
        for (name, property) in properties {
            walk(property, &join(path, name), child, report);
        }
    }
    if let Some(items) = schema.get("items") {
        walk(items, &format!("{path}[]"), child, report);
    }
    if let Some(values @ Value::Object(_)) = schema.get("additionalProperties") {
        walk(values, &join(path, "<value>"), child, report);
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn estimate_rules(
    schema: &Value,
    path: &str,
    cardinality: Option<u64>,
    rules: &[Value],
    report: &mut Report,
) {
    let shown = if path.is_empty() { "<root>" } else { path };
    let Some(decl) = Decl::of(schema) else {
        report
            .unreadable
            .push(format!("{shown}: rules on a schema CEL cannot type"));
        return;
    };
    unbounded(schema, shown, &mut report.unbounded);
    // Under an unbounded list or map, the API server counts as many runs as objects of this
    // schema's least size fit in a request.
    let cardinality = cardinality.unwrap_or(MAX_REQUEST_SIZE / (decl.min_size + 1));
    for rule in rules {
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
        if rule.get("messageExpression").is_some() {
            report.unreadable.push(format!(
                "{shown}: messageExpression is not estimated here: {text}"
            ));
            continue;
        }
        match expr::cost(text, &decl) {
            Ok(cost) => report.rules.push(RuleCost {
                path: shown.to_owned(),
                rule: text.to_owned(),
                cost,
                cardinality,
            }),
            Err(error) => report.unreadable.push(format!("{shown}: {error}: {text}")),
        }
    }
}

/// Collects the lists, maps and strings at or below `schema` that declare no bound.
fn unbounded(schema: &Value, path: &str, found: &mut BTreeSet<String>) {
    let has = |key: &str| schema.get(key).is_some();
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    match schema_type(schema) {
        Some("array") if !has("maxItems") => {
            found.insert(path.to_owned());
        }
        Some("object") if has("additionalProperties") && !has("maxProperties") => {
            found.insert(path.to_owned());
        }
        Some("string") if !has("maxLength") && !has("enum") && !bounded_format(schema) => {
            found.insert(path.to_owned());
        }
        _ if int_or_string && !has("maxLength") => {
            found.insert(path.to_owned());
        }
        _ => {}
    }
    if let Some(Value::Object(properties)) = schema.get("properties") {
        for (name, property) in properties {
            unbounded(property, &join(path, name), found);
        }
    }
    if let Some(items) = schema.get("items") {
        unbounded(items, &format!("{path}[]"), found);
    }
    if let Some(values @ Value::Object(_)) = schema.get("additionalProperties") {
        unbounded(values, &join(path, "<value>"), found);
    }
}

/// Formats whose strings the API server bounds by itself.
fn bounded_format(schema: &Value) -> bool {
    matches!(
        schema.get("format").and_then(Value::as_str),
        Some("date" | "date-time" | "duration")
    )
}

fn schema_type(schema: &Value) -> Option<&str> {
    schema.get("type").and_then(Value::as_str)
}

/// What CEL sees of a schema: its shape, the most elements (characters, items, properties) it
/// can hold, and the fewest bytes it takes in JSON (`DeclType` in `k8s.io/apiserver/pkg/cel`).
#[derive(Debug)]
struct Decl {
    shape: Shape,
    max_elements: u64,
    min_size: u64,
}

#[derive(Debug)]
enum Shape {
    Bool,
    Int,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    /// `x-kubernetes-int-or-string`: typed only when the rule runs.
    Dyn,
    List(Box<Decl>),
    /// An object with `additionalProperties`; its keys are strings.
    Map(Box<Decl>),
    Object(BTreeMap<String, Decl>),
}

/// Limits from `k8s.io/apiserver/pkg/cel`: the sizes of the JSON forms of scalars.
const MIN_STRING_SIZE: u64 = 2;
const MIN_BOOL_SIZE: u64 = 4;
const MIN_NUMBER_SIZE: u64 = 1;
const MAX_DURATION_SIZE: u64 = 32;
const MIN_DURATION_SIZE: u64 = 3;
const DATE_SIZE: u64 = 12;
const MAX_DATETIME_SIZE: u64 = 32;
const MIN_DATETIME_SIZE: u64 = 21;

impl Decl {
    fn new(shape: Shape, max_elements: u64, min_size: u64) -> Self {
        Self {
            shape,
            max_elements,
            min_size,
        }
    }

    /// `SchemaDeclType`: `None` for a schema CEL does not see.
    fn of(schema: &Value) -> Option<Self> {
        let max_length = schema.get("maxLength").and_then(Value::as_u64);
        if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            let max = max_length.map_or(MAX_REQUEST_SIZE - 2, |n| n * 4);
            return Some(Self::new(Shape::Dyn, max, 1));
        }
        match schema_type(schema)? {
            "array" => {
                let items = Self::of(schema.get("items")?)?;
                let max = schema
                    .get("maxItems")
                    .and_then(Value::as_u64)
                    .unwrap_or((MAX_REQUEST_SIZE - 2) / (items.min_size + 1));
                Some(Self::new(Shape::List(Box::new(items)), max, 2))
            }
            "object" => match schema.get("additionalProperties") {
                Some(values @ Value::Object(_)) => {
                    let values = Self::of(values)?;
                    let max = schema
                        .get("maxProperties")
                        .and_then(Value::as_u64)
                        .unwrap_or((MAX_REQUEST_SIZE - 2) / (values.min_size + 6));
                    Some(Self::new(Shape::Map(Box::new(values)), max, 2))
                }
                _ => Some(Self::object(schema)),
            },
            "string" => Some(match schema.get("format").and_then(Value::as_str) {
                Some("byte") => Self::new(
                    Shape::Bytes,
                    max_length.unwrap_or(MAX_REQUEST_SIZE - 2),
                    MIN_STRING_SIZE,
                ),
                Some("duration") => {
                    Self::new(Shape::Duration, MAX_DURATION_SIZE, MIN_DURATION_SIZE)
                }
                Some("date") => Self::new(Shape::Timestamp, DATE_SIZE, DATE_SIZE),
                Some("date-time") => {
                    Self::new(Shape::Timestamp, MAX_DATETIME_SIZE, MIN_DATETIME_SIZE)
                }
                _ => {
                    let longest_enum = schema.get("enum").and_then(Value::as_array).map(|values| {
                        values
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|s| s.len() as u64)
                            .max()
                            .unwrap_or(0)
                    });
                    // maxLength counts characters, and a character takes up to 4 bytes.
                    let max = max_length
                        .map(|n| n * 4)
                        .or(longest_enum)
                        .unwrap_or(MAX_REQUEST_SIZE - 2);
                    Self::new(Shape::String, max, MIN_STRING_SIZE)
                }
            }),
            "boolean" => Some(Self::new(Shape::Bool, 0, MIN_BOOL_SIZE)),
            "number" => Some(Self::new(Shape::Double, 0, MIN_NUMBER_SIZE)),
            "integer" => Some(Self::new(Shape::Int, 0, MIN_NUMBER_SIZE)),
            _ => None,
        }
    }

    /// An object's fields; its least size counts the required fields without a default.
    fn object(schema: &Value) -> Self {
        let required: BTreeSet<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut fields = BTreeMap::new();
        let mut min_size = 2;
        if let Some(Value::Object(properties)) = schema.get("properties") {
            for (name, property) in properties {
                let Some(field) = Self::of(property) else {
                    continue;
                };
                if required.contains(name.as_str()) && property.get("default").is_none() {
                    min_size += name.len() as u64 + field.min_size + 4;
                }
                fields.insert(name.clone(), field);
            }
        }
        Self::new(Shape::Object(fields), 0, min_size)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{CRD_LIMIT, RULE_LIMIT, estimate};

    /// A list of strings with a rule over it, as in the API server's own documentation.
    fn strings(max_items: Option<u64>, max_length: Option<u64>, rule: &str) -> serde_json::Value {
        let mut items = json!({"type": "string"});
        if let Some(n) = max_length {
            items["maxLength"] = n.into();
        }
        let mut list = json!({"type": "array", "items": items,
                              "x-kubernetes-validations": [{"rule": rule}]});
        if let Some(n) = max_items {
            list["maxItems"] = n.into();
        }
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"names": list}}}})
    }

    #[test]
    fn a_bounded_list_costs_its_items_times_each_items_cost() {
        // Kubernetes v1.36 estimates `self.all(x, x.contains('gpu'))` over 25 strings of at most
        // 63 characters at about 750: 25 × (2 for the loop + 1 + 27 for `contains` on up to 252
        // bytes), plus 2 outside the loop.
        let report = estimate(&strings(
            Some(25),
            Some(63),
            "self.all(x, x.contains('gpu'))",
        ));
        assert_eq!(report.rules.len(), 1);
        assert_eq!(report.rules[0].cost, 752);
        assert_eq!(report.rules[0].cardinality, 1);
        assert!(report.problems().is_empty(), "{report}");
    }

    #[test]
    fn unbounded_lists_and_strings_are_assumed_to_fill_a_request() {
        let report = estimate(&strings(None, None, "self.all(x, x.contains('gpu'))"));
        let problems = report.problems();
        assert!(report.rules[0].cost > RULE_LIMIT, "{report}");
        assert!(
            problems
                .iter()
                .any(|p| p
                    .contains("estimated rule cost exceeds budget by factor of more than 100x")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p == "spec.names: reachable by a rule, but has no bound")
        );
        assert!(
            problems
                .iter()
                .any(|p| p == "spec.names[]: reachable by a rule, but has no bound")
        );
    }

    /// The shape that kept the CRD from installing: a rule on each item of an unbounded list of
    /// access rules, iterating an unbounded list of subjects.
    #[test]
    fn rules_under_an_unbounded_list_run_as_often_as_items_fit_in_a_request() {
        let rule =
            "self.subjects.all(s, s == 'anonymous' || (s.startsWith('user:') && size(s) > 5))";
        let item = |max_subjects: Option<u64>| {
            let mut subjects =
                json!({"type": "array", "items": {"type": "string", "maxLength": 256}});
            if let Some(n) = max_subjects {
                subjects["maxItems"] = n.into();
            }
            json!({"type": "object", "required": ["subjects"], "properties": {"subjects": subjects},
                   "x-kubernetes-validations": [{"rule": rule}]})
        };
        let schema = |max_rules: Option<u64>, max_subjects: Option<u64>| {
            let mut rules = json!({"type": "array", "items": item(max_subjects)});
            if let Some(n) = max_rules {
                rules["maxItems"] = n.into();
            }
            json!({"type": "object", "properties": {"rules": rules}})
        };
        let refused = estimate(&schema(None, None));
        // The least item counts 16 bytes (`{"subjects":[]}` and what separates it), plus a comma.
        assert_eq!(refused.rules[0].cardinality, 3 * 1024 * 1024 / (16 + 1));
        assert!(refused.total() > 100 * CRD_LIMIT, "{refused}");
        let bounded = estimate(&schema(Some(64), Some(32)));
        assert_eq!(bounded.rules[0].cardinality, 64);
        assert!(bounded.problems().is_empty(), "{bounded}");
        // Per subject: the loop's 2, `&&`'s accumulator 1, `==` 2, `startsWith` 2, `size(s) > 5` 3.
        assert_eq!(bounded.rules[0].cost, 2 + 1 + 32 * (2 + 1 + 2 + 2 + 3));
    }

    #[test]
    fn quadratic_uniqueness_checks_cost_the_square_of_the_list() {
        let schema = json!({"type": "object", "properties": {"list": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "maxItems": 32, "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string", "maxLength": 200}}}}},
            "x-kubernetes-validations": [{"rule": "self.items.all(u, self.items.exists_one(v, v.name == u.name))"}]
        }}});
        let report = estimate(&schema);
        // Inner: 2 for the range, 2 for `@result == 1`, and 32 × (84 for `==` of two 800-byte
        // names + 2 for the branch); outer: 2 + 1 + 32 × (2 + 1 + that).
        let inner = 2 + 2 + 32 * (84 + 2);
        assert_eq!(report.rules[0].cost, 2 + 1 + 32 * (2 + 1 + inner));
    }

    #[test]
    fn presence_tests_and_scalar_comparisons_are_cheap() {
        let schema = json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"},
                           "s": {"type": "string", "maxLength": 63}},
            "x-kubernetes-validations": [
                {"rule": "has(self.a) != has(self.b)"},
                {"rule": "self.a <= self.b"},
                {"rule": "self.s == oldSelf.s"}
            ]
        }}});
        let costs: Vec<u64> = estimate(&schema).rules.iter().map(|r| r.cost).collect();
        // has() is free since Kubernetes 1.29's cel-go; each `self.x` is 2; `==` on strings is
        // a tenth of the shorter one's bytes (252 → 26).
        assert_eq!(costs, [1 + 1 + 1, 2 + 2 + 1, 2 + 2 + 26]);
    }

    #[test]
    fn unknown_functions_are_reported_not_guessed() {
        let report = estimate(&strings(Some(4), Some(8), "self.isSorted()"));
        assert!(report.rules.is_empty());
        assert_eq!(report.problems().len(), 1, "{report}");
        assert!(report.problems()[0].contains("isSorted"), "{report}");
    }
}
