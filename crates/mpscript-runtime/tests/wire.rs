//! The value codec (`wire`): every sendable kind round-trips, closures travel as name + deep
//! copies of their captures, unsendable values name their path, and bad bytes are errors.

use mpscript_runtime::wire::{decode, encode};
use proptest::prelude::*;
use rhai::{Array, Dynamic, Engine, FnPtr, Map};

fn same(a: &Dynamic, b: &Dynamic) -> bool {
    a.type_name() == b.type_name() && format!("{a:?}") == format!("{b:?}")
}

fn round(v: Dynamic) -> Dynamic {
    let (bytes, fds) = encode(&v, "item").expect("encodes");
    assert!(fds.is_empty());
    decode(&bytes, vec![], None).expect("decodes")
}

#[test]
fn every_plain_kind_round_trips() {
    let mut m = Map::new();
    m.insert("a".into(), 1_i64.into());
    m.insert("odd key".into(), Dynamic::from_blob(vec![0, 255]));
    let values: Vec<Dynamic> = vec![
        Dynamic::UNIT,
        true.into(),
        false.into(),
        0_i64.into(),
        i64::MIN.into(),
        i64::MAX.into(),
        (-1.5_f64).into(),
        f64::INFINITY.into(),
        'z'.into(),
        '\u{1F600}'.into(),
        "".into(),
        "héllo".into(),
        Dynamic::from_blob(vec![1, 2, 3]),
        Dynamic::from_array(vec![1_i64.into(), "x".into(), Dynamic::from_array(vec![])]),
        m.into(),
        Dynamic::from(3_i64..7),
        Dynamic::from(-2_i64..=2),
    ];
    for v in values {
        let back = round(v.clone());
        assert!(same(&v, &back), "{v:?} came back as {back:?}");
    }
}

#[test]
fn nan_round_trips_as_nan() {
    let back = round(f64::NAN.into());
    assert!(back.as_float().unwrap().is_nan());
}

#[test]
fn closure_travels_as_name_and_deep_captures() {
    let engine = Engine::new();
    let f: FnPtr = engine
        .eval("let k = [1, 2]; let f = |x| x + k.len(); f")
        .unwrap();
    assert!(f.fn_name().starts_with("anon$"));
    let (bytes, _) = encode(&Dynamic::from(f.clone()), "item").unwrap();
    let resolver = |name: &str| -> Result<FnPtr, String> {
        let mut p = FnPtr::new("placeholder").unwrap();
        assert!(name.starts_with("anon$"));
        p.set_curry(vec![]);
        Ok(p)
    };
    let back = decode(&bytes, vec![], Some(&resolver)).unwrap();
    let g = back.try_cast::<FnPtr>().unwrap();
    assert_eq!(g.curry().len(), 1);
    assert!(
        !g.curry()[0].is_shared(),
        "a deep copy, not the shared cell"
    );
    assert_eq!(format!("{:?}", g.curry()[0]), "[1, 2]");
}

#[test]
fn named_function_pointer_round_trips_without_resolver() {
    let f = FnPtr::new("work").unwrap();
    let back = round(Dynamic::from(f));
    assert_eq!(back.try_cast::<FnPtr>().unwrap().fn_name(), "work");
}

#[derive(Clone)]
struct MyType;

#[test]
fn unsendable_value_names_its_path() {
    let mut cfg = Map::new();
    cfg.insert("handle".into(), Dynamic::from(MyType));
    let mut outer = Map::new();
    outer.insert("config".into(), cfg.into());
    let args = Dynamic::from_array(vec![1_i64.into(), outer.into()]);
    let err = encode(&args, "args").unwrap_err();
    let d = mpscript_runtime::errors::describe(&err);
    assert_eq!(d.kind, "SendError");
    assert!(
        d.message.contains("args[1].config.handle: MyType"),
        "{}",
        d.message
    );
}

#[test]
fn capture_path_names_the_capture() {
    let mut engine = Engine::new();
    engine.register_type::<MyType>();
    engine.register_fn("make", || MyType);
    let f: FnPtr = engine
        .eval("let data = [make()]; let f = || data.len(); f")
        .unwrap();
    let err = encode(&Dynamic::from(f), "target").unwrap_err();
    let d = mpscript_runtime::errors::describe(&err);
    assert!(d.message.contains("capture 0[0]: MyType"), "{}", d.message);
}

#[test]
fn nesting_beyond_the_limit_is_a_send_error() {
    let mut v = Dynamic::UNIT;
    for _ in 0..(mpscript_runtime::wire::MAX_DEPTH + 2) {
        v = Dynamic::from_array(vec![v]);
    }
    let err = encode(&v, "item").unwrap_err();
    assert_eq!(mpscript_runtime::errors::describe(&err).kind, "SendError");
}

#[test]
fn truncated_and_trailing_bytes_are_errors() {
    let v = Dynamic::from_array(vec![
        "abc".into(),
        5_i64.into(),
        Dynamic::from_blob(vec![9; 40]),
    ]);
    let (bytes, _) = encode(&v, "item").unwrap();
    for cut in 0..bytes.len() {
        assert!(decode(&bytes[..cut], vec![], None).is_err(), "cut at {cut}");
    }
    let mut more = bytes.clone();
    more.push(0);
    assert!(decode(&more, vec![], None).is_err());
}

#[test]
fn huge_length_prefix_does_not_allocate() {
    // tag ARRAY, length 2^62: must fail fast, not try to reserve.
    let bytes = [8u8, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40];
    assert!(decode(&bytes, vec![], None).is_err());
}

fn leaf() -> impl Strategy<Value = Dynamic> {
    prop_oneof![
        Just(Dynamic::UNIT),
        any::<bool>().prop_map(Dynamic::from),
        any::<i64>().prop_map(Dynamic::from),
        any::<f64>()
            .prop_filter("NaN compares unequal", |f| !f.is_nan())
            .prop_map(Dynamic::from),
        any::<char>().prop_map(Dynamic::from),
        ".{0,12}".prop_map(Dynamic::from),
        proptest::collection::vec(any::<u8>(), 0..32).prop_map(Dynamic::from_blob),
        (any::<i64>(), any::<i64>()).prop_map(|(a, b)| Dynamic::from(a..b)),
    ]
}

fn value() -> impl Strategy<Value = Dynamic> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8)
                .prop_map(|v| Dynamic::from_array(v as Array)),
            proptest::collection::btree_map("[a-z]{0,6}", inner, 0..8).prop_map(|m| {
                let mut map = Map::new();
                for (k, v) in m {
                    map.insert(k.into(), v);
                }
                Dynamic::from_map(map)
            }),
        ]
    })
}

proptest! {
    #[test]
    fn random_nested_values_round_trip(v in value()) {
        let back = round(v.clone());
        prop_assert!(same(&v, &back), "{:?} came back as {:?}", v, back);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes, vec![], None);
    }
}

#[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct Point {
    x: i64,
    label: String,
}

#[test]
fn host_type_opted_in_with_serde_travels() {
    let mut engine = Engine::new();
    mpscript_runtime::register_sendable::<Point>(&mut engine, "Point");
    let p = Point {
        x: 3,
        label: "p".into(),
    };
    let v = Dynamic::from_array(vec![Dynamic::from(p.clone())]);
    let (bytes, _) = encode(&v, "item").unwrap();
    let back = decode(&bytes, vec![], None).unwrap();
    let arr = back.into_array().unwrap();
    assert_eq!(arr[0].clone().try_cast::<Point>().unwrap(), p);
    assert_eq!(mpscript_runtime::wire::script_type_name(&arr[0]), "Point");
}
