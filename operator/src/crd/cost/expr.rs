//! cel-go's static cost estimate of one expression (`checker/cost.go`), over the AST of the
//! `cel` crate, whose parser expands macros (`all`, `exists_one`, `map`, …) into the same
//! comprehensions as cel-go's. Sizes come from the rule's schema, as Kubernetes' size estimator
//! gives them (`schema/cel/compilation.go`).

use std::collections::BTreeMap;

use cel::common::ast::{
    CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, SelectExpr, operators,
};

use super::{Decl, MAX_REQUEST_SIZE, Shape};

/// cel-go's cost units (`common/cost.go`).
const SELECT_AND_IDENT_COST: u64 = 1;
const CONST_COST: u64 = 0;
const LIST_CREATE_BASE_COST: u64 = 10;
const MAP_CREATE_BASE_COST: u64 = 30;
const STRING_TRAVERSAL_COST_FACTOR: f64 = 0.1;
const REGEX_STRING_LENGTH_COST_FACTOR: f64 = 0.25;
/// Kubernetes keeps `has()` free (`PresenceTestHasCost(false)`), as before cel-go 0.17.7.
const PRESENCE_TEST_COST: u64 = 0;

/// The worst-case cost of `rule`, on data of the schema `root` (`self` and `oldSelf`).
pub(super) fn cost(rule: &str, root: &Decl) -> Result<u64, String> {
    let expr = cel::parser::Parser::new()
        .parse(rule)
        .map_err(|e| format!("does not parse ({e})"))?;
    let mut coster = Coster {
        root,
        locals: Vec::new(),
    };
    Ok(coster.cost(&expr)?.cost.max)
}

/// A range of costs or sizes, saturating instead of overflowing (`CostEstimate`, `SizeEstimate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    min: u64,
    max: u64,
}

impl Range {
    const UNKNOWN: Self = Self {
        min: 0,
        max: u64::MAX,
    };

    fn fixed(n: u64) -> Self {
        Self { min: n, max: n }
    }

    fn add(self, other: Self) -> Self {
        Self {
            min: self.min.saturating_add(other.min),
            max: self.max.saturating_add(other.max),
        }
    }

    fn mul(self, other: Self) -> Self {
        Self {
            min: self.min.saturating_mul(other.min),
            max: self.max.saturating_mul(other.max),
        }
    }

    fn union(self, other: Self) -> Self {
        Self {
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        }
    }

    /// Multiplied by a cost per unit, rounded up (`MultiplyByCostFactor`).
    fn factor(self, per_unit: f64) -> Self {
        Self {
            min: factor(self.min, per_unit),
            max: factor(self.max, per_unit),
        }
    }
}

fn factor(x: u64, per_unit: f64) -> u64 {
    let x = x as f64;
    let product = (x * per_unit).ceil();
    if product >= u64::MAX as f64 {
        u64::MAX
    } else {
        product as u64
    }
}

/// The type the checker gives an expression, as far as costs depend on it.
#[derive(Clone, Debug)]
enum Ty<'d> {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    Duration,
    Timestamp,
    Dyn,
    List(Box<Self>),
    Map(Box<Self>),
    Object(&'d BTreeMap<String, Decl>),
}

impl<'d> Ty<'d> {
    fn of(decl: &'d Decl) -> Self {
        match &decl.shape {
            Shape::Bool => Self::Bool,
            Shape::Int => Self::Int,
            Shape::Double => Self::Double,
            Shape::String => Self::String,
            Shape::Bytes => Self::Bytes,
            Shape::Duration => Self::Duration,
            Shape::Timestamp => Self::Timestamp,
            Shape::Dyn => Self::Dyn,
            Shape::List(items) => Self::List(Box::new(Self::of(items))),
            Shape::Map(values) => Self::Map(Box::new(Self::of(values))),
            Shape::Object(fields) => Self::Object(fields),
        }
    }

    /// Types of a fixed size (`isScalar`).
    fn is_scalar(&self) -> bool {
        matches!(
            self,
            Self::Bool | Self::Int | Self::Uint | Self::Double | Self::Duration | Self::Timestamp
        )
    }

    /// Strings, bytes, or a value typed only at run time, which may be either.
    fn may_be_text(&self) -> bool {
        matches!(self, Self::String | Self::Bytes | Self::Dyn)
    }

    fn field(&self, name: &str) -> Result<Self, String> {
        match self {
            Self::Object(fields) => fields
                .get(name)
                .map(Ty::of)
                .ok_or_else(|| format!("no field {name:?}")),
            Self::Map(values) => Ok((**values).clone()),
            Self::Dyn => Ok(Self::Dyn),
            other => Err(format!("cannot select {name:?} of {other:?}")),
        }
    }
}

/// The sizes of a list's or map's entries, where an expression makes them known.
#[derive(Clone, Copy, Debug)]
struct Entries {
    list: bool,
    key: Range,
    value: Range,
}

impl Entries {
    fn union(self, other: Self) -> Self {
        Self {
            list: self.list,
            key: self.key.union(other.key),
            value: self.value.union(other.value),
        }
    }
}

/// What costing an expression found out about it.
#[derive(Debug)]
struct Node<'d> {
    cost: Range,
    ty: Ty<'d>,
    /// The field path from `self` to the data it denotes (`@items`, `@keys`, `@values` for
    /// elements), which the schema's bounds size.
    path: Vec<String>,
    size: Option<Range>,
    entries: Option<Entries>,
}

impl Node<'_> {
    /// `sizeOrUnknown`.
    fn size(&self) -> Range {
        self.size.unwrap_or(Range::UNKNOWN)
    }
}

/// A variable a comprehension binds.
struct Local<'d> {
    name: String,
    ty: Ty<'d>,
    path: Vec<String>,
    size: Option<Range>,
    entries: Option<Entries>,
}

struct Coster<'d> {
    root: &'d Decl,
    locals: Vec<Local<'d>>,
}

impl<'d> Coster<'d> {
    fn cost(&mut self, expr: &IdedExpr) -> Result<Node<'d>, String> {
        match &expr.expr {
            Expr::Literal(literal) => Ok(literal_node(literal)),
            Expr::Ident(name) => self.ident(name),
            Expr::Select(select) => self.select(select),
            Expr::Call(call) => self.call(call),
            Expr::List(list) => {
                let mut cost = Range::fixed(LIST_CREATE_BASE_COST);
                let mut value = None::<Range>;
                let mut ty = Ty::Dyn;
                for (i, element) in list.elements.iter().enumerate() {
                    let element = self.cost(element)?;
                    cost = cost.add(element.cost);
                    value = Some(value.map_or(element.size(), |v| v.union(element.size())));
                    if i == 0 {
                        ty = element.ty;
                    }
                }
                Ok(Node {
                    cost,
                    ty: Ty::List(Box::new(ty)),
                    path: Vec::new(),
                    size: Some(Range::fixed(list.elements.len() as u64)),
                    entries: Some(Entries {
                        list: true,
                        key: Range::fixed(1),
                        value: value.unwrap_or(Range::fixed(0)),
                    }),
                })
            }
            Expr::Map(map) => {
                let mut cost = Range::fixed(MAP_CREATE_BASE_COST);
                let mut sizes = None::<Entries>;
                let mut ty = Ty::Dyn;
                for (i, entry) in map.entries.iter().enumerate() {
                    let EntryExpr::MapEntry(entry) = &entry.expr else {
                        return Err("a struct field in a map".to_owned());
                    };
                    let key = self.cost(&entry.key)?;
                    let value = self.cost(&entry.value)?;
                    cost = cost.add(key.cost).add(value.cost);
                    let these = Entries {
                        list: false,
                        key: key.size(),
                        value: value.size(),
                    };
                    sizes = Some(sizes.map_or(these, |s| s.union(these)));
                    if i == 0 {
                        ty = value.ty;
                    }
                }
                Ok(Node {
                    cost,
                    ty: Ty::Map(Box::new(ty)),
                    path: Vec::new(),
                    size: Some(Range::fixed(map.entries.len() as u64)),
                    entries: Some(sizes.unwrap_or(Entries {
                        list: false,
                        key: Range::fixed(0),
                        value: Range::fixed(0),
                    })),
                })
            }
            Expr::Comprehension(comprehension) => self.comprehension(comprehension),
            Expr::Struct(_) | Expr::Unspecified => Err("an expression CRD rules cannot use".into()),
        }
    }

    /// `computeSize`: a size computed from the expression, else from the schema along the
    /// path, else 1 for scalars, else the variable's own.
    fn size_of(&self, path: &[String], ty: &Ty<'_>, local: Option<Range>) -> Option<Range> {
        self.schema_size(path)
            .or_else(|| ty.is_scalar().then(|| Range::fixed(1)))
            .or(local)
    }

    /// Kubernetes' size estimator: the bound of the schema at `path`, whose first element (the
    /// variable) it skips.
    fn schema_size(&self, path: &[String]) -> Option<Range> {
        let (_, rest) = path.split_first()?;
        let mut decl = self.root;
        for name in rest {
            decl = match (name.as_str(), &decl.shape) {
                ("@items" | "@values", Shape::List(inner) | Shape::Map(inner)) => inner,
                // Map keys carry no bound of their own: take the longest a request allows.
                ("@keys", Shape::Map(_)) => {
                    return Some(Range {
                        min: 0,
                        max: MAX_REQUEST_SIZE - 2,
                    });
                }
                (field, Shape::Object(fields)) => fields.get(field)?,
                _ => return None,
            };
        }
        Some(Range {
            min: 0,
            max: decl.max_elements,
        })
    }

    fn ident(&self, name: &str) -> Result<Node<'d>, String> {
        let cost = Range::fixed(SELECT_AND_IDENT_COST);
        if let Some(local) = self.locals.iter().rev().find(|l| l.name == name) {
            return Ok(Node {
                cost,
                size: self.size_of(&local.path, &local.ty, local.size),
                ty: local.ty.clone(),
                path: local.path.clone(),
                entries: local.entries,
            });
        }
        if name != "self" && name != "oldSelf" {
            return Err(format!("unknown identifier {name:?}"));
        }
        Ok(self.at(cost, Ty::of(self.root), vec![name.to_owned()]))
    }

    /// The node for data of type `ty` at `path`, sized by the schema there.
    fn at(&self, cost: Range, ty: Ty<'d>, path: Vec<String>) -> Node<'d> {
        Node {
            cost,
            size: self.size_of(&path, &ty, None),
            ty,
            path,
            entries: None,
        }
    }

    fn select(&mut self, select: &SelectExpr) -> Result<Node<'d>, String> {
        let operand = self.cost(&select.operand)?;
        let ty = operand.ty.field(&select.field)?;
        if select.test {
            return Ok(Node {
                cost: operand.cost.add(Range::fixed(PRESENCE_TEST_COST)),
                ty: Ty::Bool,
                path: Vec::new(),
                size: Some(Range::fixed(1)),
                entries: None,
            });
        }
        let mut cost = operand.cost;
        if matches!(operand.ty, Ty::Map(_) | Ty::Object(_)) {
            cost = cost.add(Range::fixed(SELECT_AND_IDENT_COST));
        }
        let mut path = operand.path;
        path.push(select.field.clone());
        Ok(self.at(cost, ty, path))
    }

    fn call(&mut self, call: &CallExpr) -> Result<Node<'d>, String> {
        let name = call.func_name.as_str();
        if name == "dyn" && call.target.is_none() && call.args.len() == 1 {
            let arg = self.cost(&call.args[0])?;
            return Ok(Node {
                cost: Range::fixed(1).add(arg.cost),
                ty: Ty::Dyn,
                path: Vec::new(),
                size: arg.size,
                entries: arg.entries,
            });
        }
        let args = call
            .args
            .iter()
            .map(|arg| self.cost(arg))
            .collect::<Result<Vec<_>, _>>()?;
        let target = call.target.as_deref().map(|t| self.cost(t)).transpose()?;
        let arg_costs = args
            .iter()
            .fold(Range::fixed(0), |sum, arg| sum.add(arg.cost));
        let constant = Range::fixed(1).add(arg_costs);
        let mut result = Outcome::new(Ty::Bool, constant);
        match (name, &target, args.as_slice()) {
            (operators::LOGICAL_AND | operators::LOGICAL_OR, None, [lhs, rhs]) => {
                // The right side may be short-circuited.
                result.cost = Range {
                    min: lhs.cost.min,
                    max: lhs.cost.add(rhs.cost).max,
                };
            }
            (operators::CONDITIONAL, None, [condition, yes, no]) => {
                result.cost = condition.cost.add(yes.cost.union(no.cost));
                result.ty = if matches!(yes.ty, Ty::Null | Ty::Dyn) {
                    no.ty.clone()
                } else {
                    yes.ty.clone()
                };
                result.size = Some(yes.size().union(no.size()));
                result.entries = yes.entries.zip(no.entries).map(|(a, b)| a.union(b));
            }
            (operators::EQUALS | operators::NOT_EQUALS, None, [lhs, rhs]) => {
                result.cost = comparison(lhs, rhs).add(arg_costs);
            }
            (
                operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS,
                None,
                [lhs, rhs],
            ) if lhs.ty.may_be_text() => result.cost = comparison(lhs, rhs).add(arg_costs),
            (
                operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS,
                None,
                [_, _],
            )
            | (operators::LOGICAL_NOT | operators::NOT_STRICTLY_FALSE, None, [_]) => {}
            (operators::ADD, None, [lhs, rhs]) => {
                let size = lhs.size().add(rhs.size());
                result.ty = lhs.ty.clone();
                match lhs.ty {
                    Ty::String | Ty::Bytes => {
                        result.cost = size.factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_costs);
                        result.size = Some(size);
                    }
                    Ty::List(_) => {
                        result.size = Some(size);
                        result.entries = lhs.entries.zip(rhs.entries).map(|(a, b)| a.union(b));
                    }
                    _ => {}
                }
            }
            (
                operators::SUBSTRACT | operators::MULTIPLY | operators::DIVIDE | operators::MODULO,
                None,
                [lhs, _],
            )
            | (operators::NEGATE, None, [lhs]) => result.ty = lhs.ty.clone(),
            (operators::INDEX, None, [container, _]) => {
                let (ty, element) = match &container.ty {
                    Ty::List(items) => ((**items).clone(), "@items"),
                    Ty::Map(values) => ((**values).clone(), "@values"),
                    Ty::Dyn => (Ty::Dyn, "@items"),
                    other => return Err(format!("cannot index {other:?}")),
                };
                result.ty = ty;
                result.size = container.entries.map(|e| e.value);
                result.path = container.path.clone();
                result.path.push(element.to_owned());
            }
            (operators::IN, None, [_, container]) => {
                // Membership in a list is a scan; in a map, a lookup.
                if !matches!(container.ty, Ty::Map(_)) {
                    result.cost = container.size().factor(1.0).add(arg_costs);
                }
            }
            ("size", None, [_]) | ("size", Some(_), []) => result.ty = Ty::Int,
            ("startsWith" | "endsWith", Some(_), [prefix]) => {
                result.cost = prefix
                    .size()
                    .factor(STRING_TRAVERSAL_COST_FACTOR)
                    .add(arg_costs);
            }
            ("contains", Some(text), [part]) => {
                result.cost = text
                    .size()
                    .factor(STRING_TRAVERSAL_COST_FACTOR)
                    .mul(part.size().factor(STRING_TRAVERSAL_COST_FACTOR))
                    .add(arg_costs);
            }
            ("matches", Some(text), [regex]) => {
                result.cost = text
                    .size()
                    .add(Range::fixed(1))
                    .factor(STRING_TRAVERSAL_COST_FACTOR)
                    .mul(regex.size().factor(REGEX_STRING_LENGTH_COST_FACTOR))
                    .add(arg_costs);
            }
            ("int", None, [_]) => result.ty = Ty::Int,
            ("uint", None, [_]) => result.ty = Ty::Uint,
            ("double", None, [_]) => result.ty = Ty::Double,
            _ => {
                return Err(format!(
                    "the function {name:?} with {} arguments is not estimated here",
                    args.len()
                ));
            }
        }
        let mut cost = result.cost;
        if let Some(target) = &target {
            cost = target.cost.add(cost);
        }
        let size = result
            .size
            .or_else(|| self.size_of(&result.path, &result.ty, None));
        Ok(Node {
            cost,
            ty: result.ty,
            path: result.path,
            size,
            entries: result.entries,
        })
    }

    fn comprehension(&mut self, comprehension: &ComprehensionExpr) -> Result<Node<'d>, String> {
        if comprehension.iter_var2.is_some() {
            return Err("two-variable comprehensions are not estimated here".to_owned());
        }
        let range = self.cost(&comprehension.iter_range)?;
        let init = self.cost(&comprehension.accu_init)?;
        let mut cost = range.cost.add(init.cost);
        let (list, element_ty) = match &range.ty {
            Ty::List(items) => (true, (**items).clone()),
            Ty::Map(_) => (false, Ty::String),
            Ty::Dyn => (true, Ty::Dyn),
            other => return Err(format!("cannot iterate over {other:?}")),
        };
        let list = range.entries.map_or(list, |e| e.list);
        let mut path = range.path.clone();
        path.push(if list { "@items" } else { "@keys" }.to_owned());
        self.locals.push(Local {
            name: comprehension.accu_var.clone(),
            ty: init.ty.clone(),
            path: init.path.clone(),
            size: init.size,
            entries: init.entries,
        });
        self.locals.push(Local {
            name: comprehension.iter_var.clone(),
            ty: element_ty,
            path,
            size: range.entries.map(|e| if list { e.value } else { e.key }),
            entries: None,
        });
        let each = self.cost(&comprehension.loop_cond);
        let step = self.cost(&comprehension.loop_step);
        self.locals.pop();
        let result = each.and_then(|each| {
            let step = step?;
            let result = self.cost(&comprehension.result)?;
            Ok((each, step, result))
        });
        self.locals.pop();
        let (each, step, result) = result?;
        cost = cost.add(result.cost);
        let count = range.size();
        cost = cost.add(count.mul(step.cost.add(each.cost)));
        let (size, entries) = match comprehension.accu_init.expr {
            Expr::List(_) | Expr::Map(_) => (Some(count), step.entries),
            _ => (init.size, None),
        };
        Ok(Node {
            cost,
            ty: result.ty,
            path: Vec::new(),
            size,
            entries,
        })
    }
}

/// What a call yields, before the target's cost is added.
struct Outcome<'d> {
    ty: Ty<'d>,
    cost: Range,
    size: Option<Range>,
    path: Vec<String>,
    entries: Option<Entries>,
}

impl<'d> Outcome<'d> {
    fn new(ty: Ty<'d>, cost: Range) -> Self {
        Self {
            ty,
            cost,
            size: None,
            path: Vec::new(),
            entries: None,
        }
    }
}

/// Equality and ordering: a traversal of the shorter operand (1 for scalars).
fn comparison(lhs: &Node<'_>, rhs: &Node<'_>) -> Range {
    let shortest = lhs.size().max.min(rhs.size().max);
    Range {
        min: u64::from(shortest > 0),
        max: shortest,
    }
    .factor(STRING_TRAVERSAL_COST_FACTOR)
}

fn literal_node<'d>(literal: &LiteralValue) -> Node<'d> {
    let (ty, size) = match literal {
        LiteralValue::Boolean(_) => (Ty::Bool, 1),
        LiteralValue::Int(_) => (Ty::Int, 1),
        LiteralValue::UInt(_) => (Ty::Uint, 1),
        LiteralValue::Double(_) => (Ty::Double, 1),
        LiteralValue::Null => (Ty::Null, 1),
        LiteralValue::String(s) => (Ty::String, s.inner().chars().count() as u64),
        LiteralValue::Bytes(b) => (Ty::Bytes, b.inner().len() as u64),
    };
    Node {
        cost: Range::fixed(CONST_COST),
        ty,
        path: Vec::new(),
        size: Some(Range::fixed(size)),
        entries: None,
    }
}
