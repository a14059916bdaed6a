//! minijinja's default filters, tests and globals, registered one by one on `Environment::empty()`.
//!
//! `Environment::new()` takes them from one map, and its filters `lower`, `upper`, `title`, `capitalize`
//! and `unique` and tests `lower` and `upper` pull core's Unicode case tables (about 24 KB of wasm) in,
//! even when overridden. Those seven are ours here, over [`crate::case`], with minijinja's behaviour; the
//! rest are minijinja's public items. A few of minijinja's registered builtins are crate-private wrappers
//! that charge fuel around a public filter; the wrappers here charge the same through
//! `State::consume_fuel`, which counts whole fuel where minijinja counts 64ths, so they round up. `batch`,
//! `slice`, `indent` and `tojson` are left to the caller, which registers its own.

use std::borrow::Cow;
use std::collections::BTreeSet;

use minijinja::value::{Enumerator, FunctionArgs, Kwargs, Rest, StringInput, Value, ValueKind, ValueOrKwargs};
use minijinja::{filters as f, functions, tests as t, AutoEscape, Environment, Error, ErrorKind, State};

use crate::case;

/// minijinja's fuel costs, in its 64ths of a fuel.
const UNITS_PER_FUEL: u64 = 64;
const ITEM_COST: u64 = 32;
const COMPARE_COST: u64 = 64;
const SLOT_COST: u64 = 32;
const SERIALIZED_BYTE_EXTRA: u64 = 15;

pub(super) fn register(env: &mut Environment<'static>) {
    env.add_filter("safe", f::safe);
    env.add_filter("escape", f::escape);
    env.add_filter("e", f::escape);
    env.add_filter("lower", lower);
    env.add_filter("upper", upper);
    env.add_filter("title", title);
    env.add_filter("capitalize", capitalize);
    env.add_filter("replace", replace);
    env.add_filter("length", f::length);
    env.add_filter("count", f::length);
    env.add_filter("dictsort", dictsort);
    env.add_filter("items", f::items);
    env.add_filter("reverse", reverse);
    env.add_filter("trim", f::trim);
    env.add_filter("join", f::join);
    env.add_filter("split", f::split);
    env.add_filter("lines", f::lines);
    env.add_filter("default", f::default);
    env.add_filter("d", f::default);
    env.add_filter("round", f::round);
    env.add_filter("abs", f::abs);
    env.add_filter("int", f::int);
    env.add_filter("float", f::float);
    env.add_filter("attr", f::attr);
    env.add_filter("first", f::first);
    env.add_filter("last", last);
    env.add_filter("min", f::min);
    env.add_filter("max", f::max);
    env.add_filter("sort", f::sort);
    env.add_filter("list", f::list);
    env.add_filter("string", f::string);
    env.add_filter("bool", f::bool);
    env.add_filter("sum", f::sum);
    env.add_filter("select", f::select);
    env.add_filter("reject", f::reject);
    env.add_filter("selectattr", f::selectattr);
    env.add_filter("rejectattr", f::rejectattr);
    env.add_filter("map", f::map);
    env.add_filter("groupby", groupby);
    env.add_filter("unique", unique);
    env.add_filter("chain", f::chain);
    env.add_filter("zip", f::zip);
    env.add_filter("pprint", pprint);
    env.add_filter("format", f::format);
    env.add_filter("urlencode", f::urlencode);

    env.add_test("undefined", t::is_undefined);
    env.add_test("defined", t::is_defined);
    env.add_test("none", t::is_none);
    env.add_test("safe", t::is_safe);
    env.add_test("escaped", t::is_safe);
    env.add_test("boolean", t::is_boolean);
    env.add_test("odd", t::is_odd);
    env.add_test("even", t::is_even);
    env.add_test("divisibleby", divisibleby);
    env.add_test("number", t::is_number);
    env.add_test("integer", t::is_integer);
    env.add_test("int", t::is_integer);
    env.add_test("float", t::is_float);
    env.add_test("string", t::is_string);
    env.add_test("sequence", t::is_sequence);
    env.add_test("iterable", t::is_iterable);
    env.add_test("mapping", t::is_mapping);
    env.add_test("startingwith", t::is_startingwith);
    env.add_test("endingwith", t::is_endingwith);
    env.add_test("lower", is_lower);
    env.add_test("upper", is_upper);
    env.add_test("sameas", t::is_sameas);
    for name in ["eq", "equalto", "=="] {
        env.add_test(name, t::is_eq);
    }
    for name in ["ne", "!="] {
        env.add_test(name, t::is_ne);
    }
    for name in ["lt", "lessthan", "<"] {
        env.add_test(name, t::is_lt);
    }
    for name in ["le", "<="] {
        env.add_test(name, t::is_le);
    }
    for name in ["gt", "greaterthan", ">"] {
        env.add_test(name, t::is_gt);
    }
    for name in ["ge", ">="] {
        env.add_test(name, t::is_ge);
    }
    env.add_test("in", t::is_in);
    env.add_test("true", t::is_true);
    env.add_test("false", t::is_false);
    env.add_test("filter", t::is_filter);
    env.add_test("test", t::is_test);

    env.add_function("range", functions::range);
    env.add_function("dict", functions::dict);
    env.add_function("debug", functions::debug);
    env.add_function("namespace", functions::namespace);
}

fn charge(state: &State, units: u64) -> Result<(), Error> {
    state.consume_fuel(units.div_ceil(UNITS_PER_FUEL))
}

/// Charges per item in whole fuel as the units add up, the rest (`.0`) at the end.
struct Meter(u64);

impl Meter {
    fn add(&mut self, state: &State, units: u64) -> Result<(), Error> {
        self.0 = self.0.saturating_add(units);
        if self.0 >= UNITS_PER_FUEL {
            state.consume_fuel(self.0 / UNITS_PER_FUEL)?;
            self.0 %= UNITS_PER_FUEL;
        }
        Ok(())
    }
}

/// Refuses (and exhausts the fuel) if `units` could not be paid for, before a known-size allocation.
fn ensure(state: &State, units: u64) -> Result<(), Error> {
    match state.fuel_levels() {
        Some((_, left)) if units >= left.saturating_mul(UNITS_PER_FUEL) => {
            let _ = state.consume_fuel(u64::MAX);
            Err(Error::from(ErrorKind::OutOfFuel))
        }
        _ => Ok(()),
    }
}

/// Finding an item among `n` sorted ones.
fn lookup_cost(n: usize) -> u64 {
    COMPARE_COST.saturating_mul(u64::from(usize::BITS - n.leading_zeros()))
}

fn sort_cost(n: usize) -> u64 {
    items(n, lookup_cost(n))
}

fn items(n: usize, cost: u64) -> u64 {
    (n as u64).saturating_mul(cost)
}

fn lower(value: StringInput<'_>) -> Value {
    value.preserve_safety(case::to_lowercase(value.as_str()))
}

fn upper(value: StringInput<'_>) -> Value {
    value.preserve_safety(case::to_uppercase(value.as_str()))
}

/// Words start after whitespace or one of `-({[<`; each word's first char is uppercased and the rest
/// lowercased as a word of its own (which decides a final sigma).
fn title(v: Cow<'_, str>) -> String {
    let separator = |c: char| matches!(c, '-' | '(' | '{' | '[' | '<') || c.is_whitespace();
    let mut out = String::with_capacity(v.len());
    let mut rest = &*v;
    while let Some(first) = rest.chars().next() {
        let end = if separator(first) {
            out.push(first);
            first.len_utf8()
        } else {
            let end = rest.find(separator).unwrap_or(rest.len());
            out.extend(case::upper(first));
            case::push_lowercase(&mut out, &rest[..end], first.len_utf8());
            end
        };
        rest = &rest[end..];
    }
    out
}

/// The first char in titlecase (as Python does: `ǆ` -> `ǅ`, `ß` -> `Ss`), the rest lowercased.
fn capitalize(value: StringInput<'_>) -> Value {
    let s = value.as_str();
    let mut out = String::with_capacity(s.len());
    if let Some(first) = s.chars().next() {
        push_titlecase(&mut out, first);
        case::push_lowercase(&mut out, s, first.len_utf8());
    }
    value.preserve_safety(out)
}

/// Titlecase differs from uppercase for the Latin digraphs, Georgian Mkhedruli (its own titlecase),
/// Greek with iota subscript (which keeps it as prosgegrammeni rather than a capital iota) and the
/// ligatures, whose tail is lowercase (`ﬃ` -> `Ffi`; `ŉ` -> `ʼN` is uppercase throughout).
fn push_titlecase(out: &mut String, c: char) {
    let cp = c as u32;
    let single = match cp {
        0x1C4..=0x1CC => Some(cp - (cp - 0x1C4) % 3 + 1),
        0x1F1..=0x1F3 => Some(0x1F2),
        0x10D0..=0x10FA | 0x10FD..=0x10FF => Some(cp),
        0x1F80..=0x1FAF => Some(cp | 8),
        0x1FB3 | 0x1FBC => Some(0x1FBC),
        0x1FC3 | 0x1FCC => Some(0x1FCC),
        0x1FF3 | 0x1FFC => Some(0x1FFC),
        _ => None,
    };
    if let Some(title) = single.and_then(char::from_u32) {
        out.push(title);
        return;
    }
    let mut upper = case::upper(c);
    let Some(head) = upper.next() else { return };
    out.push(head);
    for x in upper {
        match x {
            'Ι' => out.push('\u{345}'),
            _ if cp == 0x149 => out.push(x),
            _ => out.extend(case::lower(x)),
        }
    }
}

/// A string with a lowercase letter and no char that is uppercase or changes case (as a titlecase
/// letter does).
fn is_lower(value: &Value) -> bool {
    value.as_str().is_some_and(|s| all_cased(s, char::is_lowercase, char::is_uppercase))
}

fn is_upper(value: &Value) -> bool {
    value.as_str().is_some_and(|s| all_cased(s, char::is_uppercase, char::is_lowercase))
}

fn all_cased(s: &str, this: fn(char) -> bool, other: fn(char) -> bool) -> bool {
    let changes = |c: char| case::lower(c).any(|m| m != c) || case::upper(c).any(|m| m != c);
    s.chars().all(|c| !other(c) && (this(c) || !changes(c))) && s.chars().any(this)
}

/// `replace(from, to, count)`, `count` also as a keyword; a negative count replaces all.
fn replace(state: &mut State, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    let args = args.into_values();
    type Args<'a> = (StringInput<'a>, StringInput<'a>, StringInput<'a>, Option<i64>, Kwargs);
    let (value, from, to, count, kwargs) = <Args<'_> as FunctionArgs>::from_values_mut(Some(state), &args)?;
    let count = match count {
        Some(count) => Some(count),
        None => kwargs.get::<Option<i64>>("count")?,
    };
    kwargs.assert_all_used()?;
    let Some(count) = count.and_then(|n| usize::try_from(n).ok()) else {
        return f::replace(state, value, from, to);
    };
    let safety_aware =
        !matches!(state.auto_escape(), AutoEscape::None) && (value.is_safe() || from.is_safe() || to.is_safe());
    let (text, with) = if safety_aware {
        (value.format(state)?, to.format(state)?)
    } else {
        (Cow::Borrowed(value.as_str()), Cow::Borrowed(to.as_str()))
    };
    let from = from.as_str();
    if with.len() > from.len() {
        let matches = text.matches(from).take(count).count();
        ensure(state, items(matches, (with.len() - from.len()) as u64).saturating_add(text.len() as u64))?;
    }
    let out = text.replacen(from, &with, count);
    Ok(if safety_aware { Value::from_safe_string(out) } else { Value::from(out) })
}

fn dictsort(state: &State, v: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    if v.kind() == ValueKind::Map {
        let n = v.len().unwrap_or(0);
        charge(state, items(n, ITEM_COST).saturating_add(sort_cost(n)))?;
        ensure(state, items(n, 3 * SLOT_COST))?;
    }
    f::dictsort(v, kwargs)
}

/// What minijinja charges for reversing: an item each when it must collect the value first, that is when
/// the value is iterated rather than indexed.
fn charge_reversal(state: &State, value: &Value) -> Result<(), Error> {
    match value.as_object().map(|o| o.enumerate()) {
        Some(Enumerator::Iter(iter)) => charge(state, items(iter.count(), ITEM_COST)),
        Some(Enumerator::KeyValueIter(iter)) => charge(state, items(iter.count(), ITEM_COST)),
        _ => Ok(()),
    }
}

fn reverse(state: &State, value: &Value) -> Result<Value, Error> {
    charge_reversal(state, value)?;
    f::reverse(value)
}

fn last(state: &State, value: Value) -> Result<Value, Error> {
    charge_reversal(state, &value)?;
    f::last(value)
}

fn groupby(state: &State, value: Value, attribute: Option<&str>, kwargs: Kwargs) -> Result<Value, Error> {
    let list = value.try_iter()?.collect::<Vec<_>>();
    let n = list.len();
    charge(state, items(n, ITEM_COST).saturating_add(sort_cost(n)))?;
    ensure(state, items(n, 2 * SLOT_COST))?;
    f::groupby(Value::from(list), attribute, kwargs)
}

fn pprint(state: &State, value: &Value) -> Result<String, Error> {
    let out = f::pprint(value);
    charge(state, items(out.len(), SERIALIZED_BYTE_EXTRA))?;
    Ok(out)
}

/// The first of each item (or its `attribute`), strings compared case-blind unless `case_sensitive`.
fn unique(state: &State, values: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let attribute = kwargs.get::<Option<&str>>("attribute")?;
    let case_sensitive = kwargs.get::<Option<bool>>("case_sensitive")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut meter = Meter(0);
    for item in values.try_iter()? {
        meter.add(state, ITEM_COST)?;
        let key = match attribute {
            Some(path) => path_or_undefined(&item, path),
            None => item.clone(),
        };
        let key = match key.as_str() {
            Some(s) if !case_sensitive => Value::from(case::to_lowercase(s)),
            _ => key,
        };
        meter.add(state, lookup_cost(seen.len()))?;
        if seen.insert(key) {
            out.push(item);
        }
    }
    charge(state, meter.0)?;
    Ok(Value::from(out))
}

/// A dotted path (`a.b`, `items.0`) into a value; undefined where it leads nowhere.
fn path_or_undefined(value: &Value, path: &str) -> Value {
    let mut at = value.clone();
    for part in path.split('.') {
        let next = match part.parse::<usize>() {
            Ok(i) => at.get_item_by_index(i),
            Err(_) => at.get_attr(part),
        };
        match next {
            Ok(v) => at = v,
            Err(_) => return Value::UNDEFINED,
        }
    }
    at
}

/// Dividing by zero is an error, as `%` is; minijinja's public `is_divisibleby` says false instead.
fn divisibleby(v: &Value, other: &Value) -> Result<bool, Error> {
    let numeric = |v: &Value| matches!(v.kind(), ValueKind::Number | ValueKind::Bool);
    if numeric(v) && numeric(other) && !other.is_true() {
        return Err(Error::new(ErrorKind::InvalidOperation, format!("unable to calculate {v} % {other}")));
    }
    Ok(t::is_divisibleby(v, other))
}

#[cfg(test)]
mod tests;
