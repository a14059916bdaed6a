use super::*;
use crate::template::Templates;
use proptest::prelude::*;

/// minijinja's own environment with the gateway's settings and filters, to hold ours against.
fn reference() -> Environment<'static> {
    let mut env = Environment::new();
    crate::template::configure(&mut env);
    env
}

/// Filter and test names as the environment's `Debug` lists them, and the globals.
fn names(env: &Environment<'_>) -> (Vec<String>, String, Vec<String>) {
    let debug = format!("{env:?}");
    let section = |from: &str, to: &str| {
        let start = debug.find(from).map_or(0, |i| i + from.len());
        debug[start..].split(to).next().unwrap_or("").to_string()
    };
    let filters = section("filters: ", ", templates").trim_matches(['[', ']']).split(", ").map(String::from).collect();
    let tests = section("tests: ", ", filters");
    let globals = env.globals().map(|(name, _)| name.to_string()).collect();
    (filters, tests, globals)
}

#[test]
fn the_same_filters_tests_and_globals_as_minijinja_defaults() {
    let ours = names(&Templates::new().env);
    let theirs = names(&reference());
    assert!(ours.0.len() > 40 && ours.1.len() > 100 && ours.2.len() == 4, "{ours:?}");
    assert_eq!(ours, theirs);
}

fn render(env: &Environment<'_>, source: &str, ctx: Value) -> String {
    env.render_str(source, ctx).unwrap_or_else(|e| format!("error: {e}"))
}

/// Both environments render every case below the same, errors included.
fn same(source: &str, ctx: Value) {
    let ours = Templates::new().env;
    assert_eq!(render(&ours, source, ctx.clone()), render(&reference(), source, ctx), "{source}");
}

#[test]
fn builtins_render_as_minijinja_renders_them() {
    let ctx = Value::from(minijinja::value::Serde(serde_json::json!({
        "words": ["Straße", "ǅemal", "ΟΔΟΣ", "ﬃ", "ŉ", "ᾳ", "ა", "x", "X", "İ", "oδoσ"],
        "people": [{"name": "Ann", "city": "ΑΘΗΝΑΣ"}, {"name": "bo", "city": "αθηνας"}, {"name": "Cy"}],
        "map": {"b": 2, "A": 1, "c": 3},
    })));
    for source in [
        "{% for w in words %}{{ w|lower }} {{ w|upper }} {{ w|title }} {{ w|capitalize }};{% endfor %}",
        "{{ 'ΟΔΟΣ ΟΔΟΣ-ΑΣ (ΣΑ) don\\'t ǆ-ǆ'|title }}|{{ 'ΣΑΣ. ΑΣ'|capitalize }}|{{ 'ΑΣ'|lower }}",
        "{{ words|unique|list }}|{{ words|unique(case_sensitive=true)|list }}",
        "{{ people|unique(attribute='city')|map(attribute='name')|join(',') }}",
        "{{ 'aaaa'|replace('a', 'bb', 2) }}|{{ 'aaaa'|replace('a', 'b', count=3) }}|{{ 'aaa'|replace('a', 'b', -1) }}",
        "{{ 'aaa'|replace('a', 'b', 1, count=2) }}|{{ 'aaa'|replace('a') }}",
        "{{ 4 is divisibleby(2) }}{{ 4 is divisibleby(3) }}{{ 4.0 is divisibleby(2) }}",
        "{{ 4 is divisibleby(0) }}",
        "{{ 4 is divisibleby(0.0) }}",
        "{{ 4 is divisibleby(false) }}",
        "{{ map|dictsort }}{{ map|dictsort(by='value', reverse=true) }}{{ map|reverse|list }}{{ map|last }}",
        "{{ people|groupby('city')|list }}{{ people|groupby(attribute='city', default='-')|list }}",
        "{{ range(5)|reverse|list }}{{ 'abc'|reverse }}{{ words|last }}{{ map|pprint }}",
        "{{ 'x'|safe }}{{ '<'|escape }}{{ [1,2]|length }}{{ 'a,b'|split(',')|list }}{{ -3|abs }}",
        "{{ dict(a=1) }}{{ namespace(a=1).a }}{{ range(3)|list }}{{ 'A' is upper }}{{ 'a' is lower }}",
    ] {
        same(source, ctx.clone());
    }
}

fn state_filter<R>(call: impl FnOnce(&State) -> R) -> R {
    let env = Environment::empty();
    let state = env.empty_state();
    call(&state)
}

#[test]
fn every_char_cases_as_minijinja_filters_case_it() {
    state_filter(|state| {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let v = Value::from(c.to_string());
            let input = || StringInput::new(state, &v).unwrap();
            let expected = f::capitalize(input());
            assert_eq!(capitalize(input()), expected, "{c:?} ({:#x})", c as u32);
            assert_eq!(title(Cow::Owned(c.to_string())), f::title(Cow::Owned(c.to_string())), "{c:?}");
            assert_eq!(is_lower(&v), t::is_lower(&v), "{c:?}");
            assert_eq!(is_upper(&v), t::is_upper(&v), "{c:?}");
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn strings_case_as_minijinja_filters_case_them(s in "[ a-zA-Zß'.\\-(ǅǆΣσςΑΒάᾳ\u{301}\u{345}İﬃ\u{10400}-\u{10430}ა-ჿ]{0,16}", safe in any::<bool>()) {
        let v = if safe { Value::from_safe_string(s.clone()) } else { Value::from(s.clone()) };
        state_filter(|state| {
            let input = || StringInput::new(state, &v).unwrap();
            assert_eq!(lower(input()), f::lower(input()), "{s:?}");
            assert_eq!(upper(input()), f::upper(input()), "{s:?}");
            assert_eq!(capitalize(input()), f::capitalize(input()), "{s:?}");
            assert_eq!(title(Cow::Borrowed(&s)), f::title(Cow::Borrowed(&s)), "{s:?}");
        });
        assert_eq!(is_lower(&v), t::is_lower(&v), "{s:?}");
        assert_eq!(is_upper(&v), t::is_upper(&v), "{s:?}");
    }
}

/// The fuel a filter costs, as a template reads it before and after.
fn fuel_of(env: &mut Environment<'static>, filter: &str, ctx: &Value) -> i64 {
    env.set_fuel(Some(1_000_000));
    env.add_function("fuel", |state: &State| state.fuel_levels().map_or(0, |(used, _)| used));
    let source = format!("{{% set a = fuel() %}}{{% set x = items|{filter} %}}{{% set b = fuel() %}}{{{{ b - a }}}}");
    render(env, &source, ctx.clone()).parse().unwrap()
}

#[test]
fn the_fuel_charging_wrappers_charge_what_minijinja_does_within_a_fuel() {
    let list: Vec<_> = (0..3000).map(|i| serde_json::json!({"k": format!("K{}", i % 700), "v": i})).collect();
    let map: serde_json::Map<_, _> = (0..3000).map(|i| (format!("key{i}"), serde_json::json!(i))).collect();
    for (items, filters) in [
        (serde_json::json!(list), &["unique(attribute='k')|list", "groupby('k')|list", "reverse|list", "last"][..]),
        (serde_json::json!(map), &["dictsort", "reverse|list", "last", "pprint"][..]),
        (serde_json::json!("ab".repeat(3000)), &["replace('a', 'xyz', 2000)", "replace('a', 'xyz', count=5)"][..]),
    ] {
        let ctx = Value::from(minijinja::value::Serde(serde_json::json!({ "items": items })));
        for filter in filters {
            let ours = fuel_of(&mut Templates::new().env, filter, &ctx);
            let theirs = fuel_of(&mut reference(), filter, &ctx);
            assert!(theirs > 0 || filter.starts_with("replace"), "{filter}: {theirs}");
            assert!((ours - theirs).abs() <= 2, "{filter}: ours {ours}, minijinja's {theirs}");
        }
    }
}

#[test]
fn a_sort_too_large_for_the_fuel_stops_as_in_minijinja() {
    let map: serde_json::Map<_, _> = (0..5000).map(|i| (format!("key{i}"), serde_json::json!(i))).collect();
    let ctx = Value::from(minijinja::value::Serde(serde_json::json!({ "m": map })));
    for env in [&mut Templates::new().env, &mut reference()] {
        env.set_fuel(Some(5_000));
        let err = env.render_str("{{ m|dictsort|length }}", ctx.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfFuel);
        env.set_fuel(Some(2_000_000));
        assert_eq!(env.render_str("{{ m|dictsort|length }}", ctx.clone()).unwrap(), "5000");
    }
}
